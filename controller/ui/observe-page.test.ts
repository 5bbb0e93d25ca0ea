// The dashboard's Traces and Alerts views in real Chromium against the real controller parts: the
// REST server with the dashboard, fed over its OTLP receiver with protobuf the test encodes with
// the official protos (traces/spans.fixture.ts: one request through two agents, a retry after a
// 503); and a real Alertmanager (Debian's) on loopback, given an alert over its own API, which
// the controller reads (--alertmanager-url). Screenshots go to test-results/.

import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Browser, type BrowserContext, chromium, type Page } from "playwright-core";
import { Registry } from "prom-client";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { OTLP_PROTOBUF } from "../../api/otlp.ts";
import { freePort } from "../../test/free-port.ts";
import { AlertmanagerClient, parseAlertmanagerUrl } from "../alerts/alertmanager.ts";
import { GraphQueries } from "../graph/service-graph.ts";
import { TrafficWindow } from "../graph/traffic-window.ts";
import { TraceMetrics } from "../metrics.ts";
import { type RestServer, startRestServer } from "../rest/server.ts";
import { MemoryStore } from "../store/memory-store.ts";
import { type OtlpServer, startOtlpServer } from "../traces/otlp-server.ts";
import { meshTrace } from "../traces/spans.fixture.ts";
import { TraceWindow } from "../traces/trace-store.ts";
import { uiHandler } from "./ui-server.ts";

// biome-ignore lint/suspicious/noExplicitAny: the page's globals are not typed here
type InPage = any;
declare const window: InPage;

const CHROMIUM = "/usr/bin/chromium";
const ALERTMANAGER = "/usr/bin/prometheus-alertmanager";
const RESULTS = new URL("../../test-results/", import.meta.url).pathname;

/** The controller's REST server with the dashboard and the trace window, and its OTLP receiver. */
async function startController(alertmanager?: string) {
  const registry = new Registry();
  const store = new MemoryStore();
  let metrics: TraceMetrics | undefined;
  const traces = new TraceWindow({}, (reason, n) => metrics?.evicted(reason, n));
  metrics = new TraceMetrics(registry, traces);
  const otlp = await startOtlpServer({ host: "127.0.0.1", port: 0, window: traces, metrics });
  const rest = await startRestServer({
    store,
    registry,
    host: "127.0.0.1",
    port: 0,
    ui: uiHandler(),
    traces,
    serviceGraph: new GraphQueries({
      traffic: new TrafficWindow(),
      store,
      service: () => undefined,
      propagation: () => undefined,
    }),
    views: { agents: { kind: "Agent", items: () => [] } },
    ...(alertmanager ? { alerts: new AlertmanagerClient(parseAlertmanagerUrl(alertmanager)) } : {}),
  });
  return { otlp, rest };
}

describe.skipIf(!existsSync(CHROMIUM))("dashboard: traces and alerts", () => {
  let browser: Browser;
  let context: BrowserContext | undefined;
  let page: Page;
  let rest: RestServer | undefined;
  let otlp: OtlpServer | undefined;
  let alertmanager: ChildProcess | undefined;
  let alertmanagerUrl: string;
  let dir: string;
  const pageErrors: string[] = [];

  async function open(hash: string): Promise<Page> {
    context = await browser.newContext({ viewport: { width: 1600, height: 1000 } });
    page = await context.newPage();
    page.on("pageerror", (e) => pageErrors.push(e.message));
    await page.goto(`${rest!.url}/${hash}`);
    return page;
  }

  async function exportSpans(body: Uint8Array): Promise<void> {
    const res = await fetch(otlp!.url, { method: "POST", headers: { "content-type": OTLP_PROTOBUF }, body });
    expect(res.status).toBe(200);
  }

  beforeAll(async () => {
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
    mkdirSync(RESULTS, { recursive: true });
    dir = mkdtempSync(join(tmpdir(), "nodemesh-alertmanager-"));
    writeFileSync(join(dir, "alertmanager.yml"), "route: { receiver: none }\nreceivers: [{ name: none }]\n");
    const port = await freePort();
    alertmanagerUrl = `http://127.0.0.1:${port}/`;
    alertmanager = spawn(
      ALERTMANAGER,
      [
        `--config.file=${join(dir, "alertmanager.yml")}`,
        `--storage.path=${join(dir, "data")}`,
        `--web.listen-address=127.0.0.1:${port}`,
        "--cluster.listen-address=",
        "--log.level=warn",
      ],
      { stdio: "ignore" },
    );
    let spawnError = "";
    alertmanager.on("error", (err) => {
      spawnError = ` (${err.message}: apt-get install prometheus-alertmanager)`;
    });
    for (let i = 0; ; i++) {
      const ready = await fetch(`${alertmanagerUrl}-/ready`).then(
        (r) => r.ok,
        () => false,
      );
      if (ready) break;
      if (i === 100 || spawnError)
        throw new Error(`Alertmanager did not get ready on ${alertmanagerUrl} in 10 s${spawnError}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  });

  afterAll(async () => {
    await browser?.close();
    alertmanager?.kill("SIGKILL");
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  afterEach(async () => {
    await context?.close();
    await rest?.close();
    await otlp?.close();
    context = rest = otlp = undefined;
    expect(pageErrors).toEqual([]);
  });

  it("lists traces by service, errors and duration, and draws one as a waterfall across agents", async () => {
    ({ rest, otlp } = await startController(alertmanagerUrl));
    const ok = meshTrace({ service: "shop/catalog", startMs: Date.now() - 3000 });
    const slow = meshTrace({ service: "shop/checkout", slow: 8, startMs: Date.now() - 2000 });
    const failed = meshTrace({ service: "shop/checkout", fail: true, startMs: Date.now() - 1000 });
    for (const t of [ok, slow, failed]) for (const body of t.requests) await exportSpans(body);

    await open("#/traces");
    const rows = page.getByTestId("trace-row");
    const order = () => rows.evaluateAll((r) => r.map((x) => (x as InPage).dataset.traceId));
    await expect.poll(() => rows.count(), { timeout: 10_000 }).toBe(3);
    expect(await order()).toEqual([failed.traceId, slow.traceId, ok.traceId]);
    expect(await rows.nth(0).getByTestId("trace-status").textContent()).toBe("503 · 7 failed spans");
    expect(await rows.nth(1).getByTestId("trace-duration").textContent()).toBe("336 ms");

    // Filters: a service, slowest first, then a duration floor; the address keeps them.
    await page.getByTestId("trace-service").selectOption("shop/checkout");
    await expect.poll(() => rows.count()).toBe(2);
    expect(new URL(page.url()).hash).toBe("#/traces?service=shop%2Fcheckout");
    await page.getByTestId("trace-sort").selectOption("duration");
    await expect.poll(order).toEqual([slow.traceId, failed.traceId]);
    expect(new URL(page.url()).hash).toBe("#/traces?service=shop%2Fcheckout&sort=duration");
    await page.getByTestId("trace-min").fill("100");
    await page.getByTestId("trace-min").press("Enter");
    await page.getByTestId("trace-min").blur();
    await expect.poll(() => rows.count()).toBe(1);
    expect(new URL(page.url()).hash).toBe("#/traces?service=shop%2Fcheckout&min=100&sort=duration");

    // The waterfall of the slow one: 7 spans on two nodes, indented by parent, errors marked.
    await rows.first().click();
    const waterfall = page.getByTestId("waterfall");
    await expect.poll(() => waterfall.getAttribute("data-trace-id"), { timeout: 10_000 }).toBe(slow.traceId);
    const spans = page.getByTestId("wf-row");
    await expect.poll(() => spans.count()).toBe(7);
    const shape = await spans.evaluateAll((r) =>
      r.map((x) => {
        const d = (x as InPage).dataset;
        return `${d.depth} ${d.kind} ${d.node} ${d.status}`;
      }),
    );
    expect(shape).toEqual([
      "0 server node-1 unset",
      "1 client node-1 error",
      "2 server node-2 error",
      "3 client node-2 error",
      "1 client node-1 unset",
      "2 server node-2 unset",
      "3 client node-2 unset",
    ]);
    expect(await page.locator(".wf-row.error").count()).toBe(3);
    // Bars: the root spans the whole width; the retry starts after the first attempt ends.
    const bars = await page
      .getByTestId("wf-bar")
      .evaluateAll((b) => b.map((x) => (x as InPage).getBoundingClientRect()).map((r) => ({ x: r.x, w: r.width })));
    const track = bars[0]!;
    expect(bars[1]!.x).toBeGreaterThan(track.x);
    expect(bars[4]!.x).toBeGreaterThan(bars[1]!.x + bars[1]!.w);
    expect(bars[4]!.x + bars[4]!.w).toBeLessThanOrEqual(track.x + track.w + 1);
    expect(await page.locator(".wf-event").count()).toBe(1);
    // Attributes on hover (the title) and on click (the detail box).
    expect(await spans.nth(1).getAttribute("title")).toContain("nodemesh.attempt = 1");
    await spans.nth(1).click();
    const detail = page.getByTestId("span-detail");
    await expect.poll(() => detail.isVisible()).toBe(true);
    const attribute = (key: string) => detail.locator(`[data-testid="span-attribute"][data-key="${key}"] td`);
    expect(await attribute("http.response.status_code").textContent()).toBe("503");
    expect(await attribute("network.peer.address").textContent()).toBe("10.0.2.10");
    expect(await attribute("k8s.node.name").textContent()).toBe("node-1");
    expect(await page.getByTestId("wf-note").textContent()).toContain("7 spans · 2 nodes · shop/checkout");
    // The trace is in the address: a reload shows it again.
    expect(new URL(page.url()).hash).toBe(`#/traces/${slow.traceId}?service=shop%2Fcheckout&min=100&sort=duration`);
    await page.mouse.move(5, 990);
    await page.screenshot({ path: `${RESULTS}dashboard-traces.png`, fullPage: true });
  });

  it("shows the alerts Alertmanager holds, read through the controller, with a badge", async () => {
    ({ rest, otlp } = await startController(alertmanagerUrl));
    const now = Date.now();
    const posted = await fetch(`${alertmanagerUrl}api/v2/alerts`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify([
        {
          labels: { alertname: "NodemeshHighErrorRate", destination_service: "checkout.shop", severity: "warning" },
          annotations: { summary: "checkout.shop: 12.5% of requests fail with 5xx", description: "…" },
          startsAt: new Date(now - 60_000).toISOString(),
          endsAt: new Date(now + 600_000).toISOString(),
          generatorURL: "http://prometheus:9090/graph",
        },
        {
          labels: { alertname: "NodemeshAgentDown", node: "node-3", pod: "nodemesh-agent-x", severity: "critical" },
          annotations: { summary: "nodemesh agent on node-3 cannot be scraped" },
          startsAt: new Date(now - 30_000).toISOString(),
          endsAt: new Date(now + 600_000).toISOString(),
        },
      ]),
    });
    expect(posted.status).toBe(200);

    await open("#/alerts");
    const rows = page.getByTestId("alert-row");
    await expect.poll(() => rows.count(), { timeout: 10_000 }).toBe(2);
    const shown = await rows.evaluateAll((r) => r.map((x) => ({ ...(x as InPage).dataset })));
    expect(shown).toEqual(
      expect.arrayContaining([
        { testid: "alert-row", name: "NodemeshHighErrorRate", state: "active", service: "checkout.shop" },
        { testid: "alert-row", name: "NodemeshAgentDown", state: "active", service: "" },
      ]),
    );
    expect(await page.getByTestId("alerts-badge").textContent()).toBe("2");
    expect(await page.getByTestId("alerts-source").textContent()).toBe(`from ${alertmanagerUrl}`);
    const row = page.locator('[data-testid="alert-row"][data-name="NodemeshHighErrorRate"]');
    expect(await row.textContent()).toContain("checkout.shop: 12.5% of requests fail with 5xx");
    expect(await row.textContent()).toContain("warning");
    await page.mouse.move(5, 990);
    await page.screenshot({ path: `${RESULTS}dashboard-alerts.png` });
  });

  it("says how to configure Alertmanager when the controller has none", async () => {
    ({ rest, otlp } = await startController());
    await open("#/alerts");
    const note = page.getByTestId("alerts-note");
    await expect.poll(() => note.getAttribute("data-reason"), { timeout: 10_000 }).toBe("not-configured");
    expect(await note.textContent()).toContain("--alertmanager-url");
    expect(await page.getByTestId("alerts-badge").isHidden()).toBe(true);
    // Elsewhere the page no longer asks for alerts.
    await page.goto(`${rest!.url}/#/topology`);
    await page.waitForFunction(() => (window.__nodemesh?.updates ?? 0) >= 1, null, { timeout: 10_000 });
  });
});
