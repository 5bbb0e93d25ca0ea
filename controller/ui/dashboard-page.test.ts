// The dashboard page in real Chromium (playwright-core, Debian's /usr/bin/chromium) against the
// fake API (fake-api.fixture.ts): the graph, stable positions across polls, the service panel,
// the Nodes view, tokens and a missing service-graph endpoint.

import { existsSync, mkdirSync } from "node:fs";
import { type Browser, type BrowserContext, chromium, type Page } from "playwright-core";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { MATRIX_MAX_NODES } from "../../api/agent-service.ts";
import { agent, type FakeApi, startFakeApi } from "./fake-api.fixture.ts";

// Browser globals inside callbacks that run in the page (the project compiles without the DOM lib).
// biome-ignore lint/suspicious/noExplicitAny: the page's globals are not typed here
type InPage = any;
declare const window: InPage;
declare const document: InPage;
type El = { dataset: Record<string, string | undefined>; textContent: string | null };

const CHROMIUM = "/usr/bin/chromium";
const RESULTS = new URL("../../test-results/", import.meta.url).pathname;

interface Probe {
  nodes: { id: string; kind: string }[];
  edges: { source: string; target: string; requestsPerSecond: number }[];
  updates: number;
  layouts: number;
  selected: { namespace: string; name: string } | null;
  positions: Record<string, { x: number; y: number }>;
}

const probe = (page: Page): Promise<Probe> =>
  page.evaluate(() => {
    const n = window.__nodemesh;
    return {
      nodes: n.nodes,
      edges: n.edges,
      updates: n.updates,
      layouts: n.layouts,
      selected: n.selected,
      positions: n.positions(),
    };
  });

async function waitForUpdates(page: Page, count: number): Promise<void> {
  await page.waitForFunction((n) => (window.__nodemesh?.updates ?? 0) >= n, count, { timeout: 15_000 });
}

describe.skipIf(!existsSync(CHROMIUM))("dashboard page", () => {
  let browser: Browser;
  let api: FakeApi;
  let context: BrowserContext;
  let page: Page;
  const pageErrors: string[] = [];
  const foreign: string[] = [];

  async function open(path = "/"): Promise<Page> {
    context = await browser.newContext({ viewport: { width: 1600, height: 900 } });
    page = await context.newPage();
    page.on("pageerror", (e) => pageErrors.push(e.message));
    page.on("request", (r) => {
      if (!r.url().startsWith(api.url) && !r.url().startsWith("data:")) foreign.push(r.url());
    });
    await page.goto(`${api.url}${path}`);
    return page;
  }

  beforeAll(async () => {
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
  });

  afterAll(async () => {
    await browser?.close();
  });

  afterEach(async () => {
    await context?.close();
    await api?.close();
    expect(pageErrors).toEqual([]);
    expect(foreign).toEqual([]);
  });

  it("draws services and workloads with labelled edges, from the controller's files only", async () => {
    api = await startFakeApi();
    await open();
    await waitForUpdates(page, 1);
    const p = await probe(page);
    expect(p.nodes.map((n) => n.id)).toContain("svc:checkout.shop");
    expect(p.nodes.filter((n) => n.kind === "service")).toHaveLength(5);
    expect(p.nodes.filter((n) => n.kind === "workload")).toHaveLength(7);
    expect(p.edges).toHaveLength(11);
    expect(p.layouts).toBe(1);
    await expect.poll(() => page.getByTestId("kpi-services").textContent()).toBe("5");
    expect(await page.getByTestId("service-row").count()).toBe(5);
    const label = await page.evaluate(() => window.__nodemesh.edgeLabel("wl:frontend.shop>svc:catalog.shop"));
    expect(label).toMatch(/^\d+(\.\d+)? req\/s · 0%\np99 \d+(\.\d+)? ms · .*mTLS$/);
    expect(await page.evaluate(() => window.__nodemesh.edgeLabel("wl:checkout.shop>svc:postgres.shop"))).toMatch(
      /conn\/s .*\nplain$/,
    );
    // The three vendored libraries and our modules came from the same origin (checked in afterEach).
    expect(await page.evaluate(() => typeof window.uPlot)).toBe("function");
  });

  it("keeps positions across polls and lays out again only when the node set changes", async () => {
    api = await startFakeApi();
    await open();
    await waitForUpdates(page, 1);
    const first = await probe(page);
    await waitForUpdates(page, first.updates + 2);
    const later = await probe(page);
    expect(later.layouts).toBe(1);
    expect(later.positions).toEqual(first.positions);
    // The numbers did move.
    expect(later.edges.map((e) => e.requestsPerSecond)).not.toEqual(first.edges.map((e) => e.requestsPerSecond));

    api.edges.push({
      source: "wl:payments-v2.shop",
      target: "svc:fraud.shop",
      rps: 1,
      errorRate: 0.2,
      p50: 5,
      p99: 9,
    });
    await page.waitForFunction(
      () => window.__nodemesh.nodes.some((n: { id: string }) => n.id === "svc:fraud.shop"),
      null,
      { timeout: 10_000 },
    );
    const grown = await probe(page);
    expect(grown.layouts).toBe(2);
    expect(await page.getByTestId("service-row").count()).toBe(6);
  });

  it("opens a service's panel on click: signals, charts, callers, endpoints, policies", async () => {
    api = await startFakeApi();
    await open();
    await waitForUpdates(page, 1);
    const at = await page.evaluate(() => window.__nodemesh.clientPosition("svc:checkout.shop"));
    await page.mouse.click(at.x, at.y);
    const panel = page.getByTestId("service-panel");
    await expect.poll(() => panel.getAttribute("data-loaded"), { timeout: 10_000 }).toBe("true");
    expect(await panel.getAttribute("data-service")).toBe("shop/checkout");
    expect(new URL(page.url()).hash).toBe("#/topology/service/shop/checkout");
    expect(await page.getByTestId("panel-title").textContent()).toBe("checkout");

    const rps = Number(await page.getByTestId("signal-rps").getAttribute("data-value"));
    expect(rps).toBeGreaterThan(11);
    expect(rps).toBeLessThan(14);
    expect(await page.getByTestId("signal-errors").textContent()).toBe("2.10%");
    expect(await page.getByTestId("signal-errors").getAttribute("class")).toContain("warn-text");
    expect(Number(await page.getByTestId("signal-p50").getAttribute("data-value"))).toBeCloseTo(8.4, 1);
    expect(Number(await page.getByTestId("signal-requests").getAttribute("data-value"))).toBeGreaterThan(1000);
    for (const chart of ["chart-rate", "chart-errors", "chart-latency"]) {
      expect(await page.getByTestId(chart).locator("canvas").count(), chart).toBe(1);
    }
    expect(await page.getByTestId("caller-row").getAttribute("data-source")).toBe("frontend.shop");
    const endpoints = page.getByTestId("endpoint-row");
    expect(await endpoints.count()).toBe(2);
    expect(await endpoints.evaluateAll((rows) => rows.map((r) => (r as El).dataset.node))).toEqual([
      "node-1",
      "node-2",
    ]);
    const applied = page.getByTestId("policy-applied");
    expect(await applied.allTextContents()).toEqual(["applied 3/3 agents", "applied 2/3 agents"]);
    expect(await applied.nth(0).getAttribute("class")).toContain("ok");
    expect(await applied.nth(1).getAttribute("class")).toContain("warn");

    // The selection survives updates; the service list shows it too.
    const { updates } = await probe(page);
    await waitForUpdates(page, updates + 2);
    expect((await probe(page)).selected).toEqual({ namespace: "shop", name: "checkout" });
    expect(await page.locator(".service-row.selected").getAttribute("data-name")).toBe("checkout");
    await page.mouse.move(5, 890);
    mkdirSync(RESULTS, { recursive: true });
    await page.screenshot({ path: `${RESULTS}dashboard-fixture.png` });

    // The panel links to the service's traces.
    expect(await page.getByTestId("panel-traces").getAttribute("href")).toBe("#/traces?service=shop%2Fcheckout");

    await page.getByTestId("panel-close").click();
    await expect.poll(() => panel.isHidden()).toBe(true);
    expect((await probe(page)).selected).toBeNull();
  });

  it("shows node facts and the RTT matrix, colored", async () => {
    api = await startFakeApi();
    await open("/#/nodes");
    await waitForUpdates(page, 1);
    expect(await page.getByTestId("view-nodes").isVisible()).toBe(true);
    const rows = page.getByTestId("nodes-table").locator('[data-testid="node-row"]');
    expect(await rows.count()).toBe(3);
    expect(await rows.first().textContent()).toContain("AMD EPYC 7763");
    expect(await rows.first().textContent()).toContain("32 GiB");
    const cell = (from: string, to: string) =>
      page.locator(`[data-testid="rtt-cell"][data-from="${from}"][data-to="${to}"]`);
    expect(await cell("node-1", "node-2").textContent()).toBe("0.182");
    expect(await cell("node-1", "node-2").getAttribute("class")).toBe("ok");
    expect(await cell("node-2", "node-3").getAttribute("class")).toBe("warn");
    expect(await cell("node-2", "node-3").textContent()).toContain("5% loss");
    expect(await cell("node-3", "node-2").getAttribute("class")).toBe("bad");
    expect(await cell("node-1", "node-1").getAttribute("class")).toBe("self");
    await page.mouse.move(5, 890);
    mkdirSync(RESULTS, { recursive: true });
    await page.screenshot({ path: `${RESULTS}dashboard-fixture-nodes.png` });
  });

  it("sums each node's probes up instead of drawing a matrix for a mesh of more than 40 nodes", async () => {
    api = await startFakeApi();
    const names = Array.from({ length: MATRIX_MAX_NODES + 1 }, (_, i) => `node-${i}`);
    api.agents = names.map((node, i) =>
      agent(
        node,
        `10.250.1.${i}`,
        names
          .filter((peer) => peer !== node)
          .map((peer, j) => ({ nodeName: peer, rttMs: 0.1 + j / 100, lossRatio: i === 0 && j < 2 ? 1 : 0, error: "" })),
      ),
    );
    await open("/#/nodes");
    await waitForUpdates(page, 2);
    expect(await page.getByTestId("node-row").count()).toBe(MATRIX_MAX_NODES + 1);
    expect(await page.locator('[data-testid="rtt-cell"]').count()).toBe(0);
    expect(await page.getByTestId("rtt-summary-note").textContent()).toContain("41 nodes");
    const first = page.locator('[data-testid="rtt-summary-row"][data-node="node-0"]');
    // 40 peers; two lost; the median and the slowest of the 38 that answered.
    expect(await first.locator("th, td").allTextContents()).toEqual([
      "node-0",
      "40",
      "2",
      "0",
      "0.300",
      "0.490",
      "node-40",
    ]);
    // The poll asked for summaries and pod counts only: the probes and pods never left the controller.
    const agentCalls = api.requests.filter((r) => r.path.includes("/agents")).map((r) => r.path);
    expect(new Set(agentCalls)).toEqual(new Set(["/apis/nodemesh.io/v1alpha1/agents?peers=matrix&pods=count"]));
    mkdirSync(RESULTS, { recursive: true });
    await page.getByTestId("rtt-summary-note").scrollIntoViewIfNeeded();
    await page.screenshot({ path: `${RESULTS}dashboard-fixture-nodes-summary.png` });
  });

  it("sends a ?token= as a bearer token, keeps it, and drops it from the address", async () => {
    api = await startFakeApi();
    api.token = "s3cret";
    await open("/?token=s3cret#/topology");
    await waitForUpdates(page, 1);
    expect(new URL(page.url()).search).toBe("");
    expect(new URL(page.url()).hash).toBe("#/topology");
    expect(await page.getByTestId("live-status").getAttribute("data-state")).toBe("live");
    const calls = api.requests.filter((r) => r.path.startsWith("/apis/"));
    expect(calls.length).toBeGreaterThan(0);
    expect(calls.every((r) => r.authorization === "Bearer s3cret")).toBe(true);
    expect(await page.evaluate(() => localStorage.getItem("nodemesh.token"))).toBe("s3cret");
  });

  it("asks for a token when the API answers 401, then uses it", async () => {
    api = await startFakeApi();
    api.token = "t0ken";
    await open();
    const dialog = page.getByTestId("token-dialog");
    await expect.poll(() => dialog.isVisible(), { timeout: 10_000 }).toBe(true);
    expect(await page.getByTestId("live-status").getAttribute("data-state")).toBe("unauthorized");
    await page.getByTestId("token-input").fill("t0ken");
    await page.getByTestId("token-input").press("Enter");
    await expect.poll(() => page.getByTestId("live-status").getAttribute("data-state")).toBe("live");
    expect(await page.getByTestId("banner").isHidden()).toBe(true);
  });

  it("says so when the controller does not serve the service graph", async () => {
    api = await startFakeApi();
    api.fail.set("/apis/nodemesh.io/v1alpha1/servicegraph", 404);
    await open();
    await waitForUpdates(page, 1);
    await expect.poll(() => page.getByTestId("banner").textContent()).toContain("does not serve the service graph");
    // The Nodes view still works.
    expect(await page.locator('[data-testid="node-row"]').count()).toBe(3);
  });
});
