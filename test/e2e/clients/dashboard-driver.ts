// Drives the dashboard in real Chromium from inside the controller's namespace (where its REST API
// listens on loopback), as a person would: opens the page, waits for the graph to show the
// service, clicks it, reads the panel's numbers, opens the Nodes view, takes screenshots.
//
//   world.exec(controller, process.execPath, [DRIVER, JSON.stringify(args)])
//
// Prints one JSON line (DriverReport) on success; exits 1 with the error and what the page held.

import { chromium, type Page } from "playwright-core";

// Browser globals inside callbacks that run in the page (the project compiles without the DOM lib).
// biome-ignore lint/suspicious/noExplicitAny: the page's globals are not typed here
type InPage = any;
declare const window: InPage;
declare const document: InPage;
type El = { dataset: Record<string, string | undefined>; textContent: string | null };

export interface DriverArgs {
  url: string;
  /** The service to click, e.g. { namespace: "default", name: "reviews" }. */
  service: { namespace: string; name: string };
  /** Graph node ids that must be present before clicking. */
  nodes: string[];
  /** An edge that must carry traffic: [source id, target id]. */
  edge: [string, string];
  /** Wait until the panel counts at least this many requests in its window. */
  minRequests: number;
  /** Nodes the Nodes view must list. */
  nodeNames: string[];
  /** PNG of the topology with the panel open; the Nodes view goes to the same name with "-nodes". */
  screenshot: string;
  timeoutMs?: number;
  chromium?: string;
}

export interface DriverReport {
  /** Date.now() when the panel's numbers were read. */
  readAt: number;
  graph: {
    nodes: string[];
    /** `label`: the text drawn on the edge (rate, errors, p99, mTLS or plain). */
    edges: { source: string; target: string; requestsPerSecond: number; mtls: boolean; label: string | null }[];
  };
  layouts: number;
  hash: string;
  panel: {
    title: string;
    rps: number;
    errorRate: number;
    p50Ms: number | null;
    p99Ms: number | null;
    requests: number;
    text: { rps: string; errors: string; p50: string; p99: string };
    endpoints: { pod: string; node: string }[];
    callers: string[];
  };
  nodes: { rows: { node: string; connected: string; text: string }[]; rtt: { from: string; to: string; ms: number }[] };
  screenshots: string[];
}

const args = JSON.parse(process.argv[2] ?? "{}") as DriverArgs;
const timeout = args.timeoutMs ?? 20_000;
const num = (v: string | null) => (v === null || v === "" ? null : Number(v));

async function run(page: Page): Promise<DriverReport> {
  const response = await page.goto(args.url);
  const type = response?.headers()["content-type"] ?? "";
  if (!response?.ok() || !type.startsWith("text/html")) {
    throw new Error(`the controller does not serve the dashboard at ${args.url}: ${response?.status()} ${type}`);
  }
  // The graph shows the nodes and the edge with traffic.
  await page.waitForFunction(
    ({ nodes, edge }) => {
      const n = window.__nodemesh;
      if (!n) return false;
      const ids = new Set(n.nodes.map((x: { id: string }) => x.id));
      return (
        nodes.every((id: string) => ids.has(id)) &&
        n.edges.some(
          (e: { source: string; target: string; requestsPerSecond: number }) =>
            e.source === edge[0] && e.target === edge[1] && e.requestsPerSecond > 0,
        )
      );
    },
    { nodes: args.nodes, edge: args.edge },
    { timeout, polling: 250 },
  );
  const serviceId = `svc:${args.service.name}.${args.service.namespace}`;
  const at = await page.evaluate((id) => window.__nodemesh.clientPosition(id), serviceId);
  if (!at) throw new Error(`${serviceId} has no position on the page`);
  await page.mouse.click(at.x, at.y);

  const panel = page.getByTestId("service-panel");
  await panel.waitFor({ state: "visible", timeout });
  await page.waitForFunction(
    (min) => {
      const value = (id: string) => Number(document.querySelector(`[data-testid="${id}"]`)?.getAttribute("data-value"));
      return (
        document.querySelector('[data-testid="service-panel"]')?.getAttribute("data-loaded") === "true" &&
        value("signal-rps") > 0 &&
        value("signal-requests") >= min
      );
    },
    args.minRequests,
    { timeout, polling: 250 },
  );
  const readAt = Date.now();
  const hash = new URL(page.url()).hash;
  const attr = (id: string) => page.getByTestId(id).getAttribute("data-value");
  const text = async (id: string) => (await page.getByTestId(id).textContent()) ?? "";
  const panelReport = {
    title: await text("panel-title"),
    rps: Number(await attr("signal-rps")),
    errorRate: Number(await attr("signal-errors")),
    p50Ms: num(await attr("signal-p50")),
    p99Ms: num(await attr("signal-p99")),
    requests: Number(await attr("signal-requests")),
    text: {
      rps: await text("signal-rps"),
      errors: await text("signal-errors"),
      p50: await text("signal-p50"),
      p99: await text("signal-p99"),
    },
    endpoints: await page
      .getByTestId("endpoint-row")
      .evaluateAll((rows) =>
        rows.map((r) => ({ pod: (r as El).dataset.pod ?? "", node: (r as El).dataset.node ?? "" })),
      ),
    callers: await page
      .getByTestId("caller-row")
      .evaluateAll((rows) => rows.map((r) => (r as El).dataset.source ?? "")),
  };
  const state = await page.evaluate(() => {
    const n = window.__nodemesh;
    return {
      nodes: n.nodes.map((x: { id: string }) => x.id),
      edges: n.edges.map((e: { source: string; target: string; requestsPerSecond: number; mtls: boolean }) => ({
        source: e.source,
        target: e.target,
        requestsPerSecond: e.requestsPerSecond,
        mtls: e.mtls,
        label: n.edgeLabel(`${e.source}>${e.target}`) as string | null,
      })),
      layouts: n.layouts,
    };
  });

  // A screenshot with the panel open, the pointer off the graph (no hover highlight).
  await page.mouse.move(1, 1);
  const updates = await page.evaluate(() => window.__nodemesh.updates);
  await page.waitForFunction((u) => window.__nodemesh.updates > u, updates, { timeout });
  await page.screenshot({ path: args.screenshot });

  // The Nodes view: both nodes and a measured RTT.
  await page.getByTestId("tab-nodes").click();
  await page.waitForFunction(
    (names) => {
      const rows = [...document.querySelectorAll('[data-testid="node-row"]')].map((r) => (r as El).dataset.node);
      const measured = [...document.querySelectorAll('[data-testid="rtt-cell"]')].some(
        (c) => Number((c as El).dataset.value) > 0,
      );
      return names.every((n: string) => rows.includes(n)) && measured;
    },
    args.nodeNames,
    { timeout, polling: 250 },
  );
  const nodes = {
    rows: await page.getByTestId("node-row").evaluateAll((rows) =>
      rows.map((r) => ({
        node: (r as El).dataset.node ?? "",
        connected: (r as El).dataset.connected ?? "",
        text: (r.textContent ?? "").replace(/\s+/g, " ").trim(),
      })),
    ),
    rtt: await page.locator('[data-testid="rtt-cell"][data-value]:not([data-value=""])').evaluateAll((cells) =>
      cells.map((c) => ({
        from: (c as El).dataset.from ?? "",
        to: (c as El).dataset.to ?? "",
        ms: Number((c as El).dataset.value),
      })),
    ),
  };
  const nodesShot = args.screenshot.replace(/(\.png)?$/, "-nodes.png");
  await page.screenshot({ path: nodesShot });
  return {
    readAt,
    graph: { nodes: state.nodes, edges: state.edges },
    layouts: state.layouts,
    hash,
    panel: panelReport,
    nodes,
    screenshots: [args.screenshot, nodesShot],
  };
}

const browser = await chromium.launch({
  executablePath: args.chromium ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const pageErrors: string[] = [];
try {
  const page = await browser.newPage({ viewport: { width: 1600, height: 900 } });
  page.on("pageerror", (e) => pageErrors.push(e.message));
  let report: DriverReport;
  try {
    report = await run(page);
  } catch (err) {
    const seen = await page
      .evaluate(() => {
        const n = window.__nodemesh;
        return n
          ? {
              nodes: n.nodes.map((x: { id: string }) => x.id),
              edges: n.edges,
              lastError: n.lastError,
              detail: n.detail,
            }
          : { body: document.body?.innerText?.slice(0, 500) };
      })
      .catch(() => null);
    await page.screenshot({ path: args.screenshot.replace(/(\.png)?$/, "-failed.png") }).catch(() => {});
    throw new Error(`${(err as Error).message}\npage state: ${JSON.stringify(seen)}\npage errors: ${pageErrors}`);
  }
  if (pageErrors.length) throw new Error(`page errors: ${pageErrors.join("; ")}`);
  console.log(JSON.stringify(report));
} catch (err) {
  console.error((err as Error).message);
  process.exitCode = 1;
} finally {
  await browser.close();
}
