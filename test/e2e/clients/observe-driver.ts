// Drives the dashboard's Alerts and Traces views in real Chromium from inside the controller's
// namespace (where its REST API listens on loopback): waits for an alert to show as firing, then
// opens a trace's waterfall; takes a screenshot of each.
//
//   world.exec(controller, process.execPath, [DRIVER, JSON.stringify(args)])
//
// Prints one JSON line (ObserveReport) on success; exits 1 with the error.

import { chromium, type Page } from "playwright-core";

// biome-ignore lint/suspicious/noExplicitAny: the page's globals are not typed here
type InPage = any;

export interface ObserveArgs {
  url: string;
  alert: { name: string; service: string };
  /** A trace the controller holds: its waterfall is opened and read. */
  traceId: string;
  /** PNG paths. */
  alertsScreenshot: string;
  traceScreenshot: string;
  timeoutMs?: number;
  chromium?: string;
}

export interface ObserveReport {
  alert: { name: string; state: string; service: string; text: string };
  badge: string;
  spans: { depth: number; kind: string; node: string; status: string }[];
}

const args = JSON.parse(process.argv[2] ?? "{}") as ObserveArgs;
const timeout = args.timeoutMs ?? 20_000;

async function run(page: Page): Promise<ObserveReport> {
  await page.goto(`${args.url}#/alerts`);
  const row = page.locator(`[data-testid="alert-row"][data-name="${args.alert.name}"][data-state="active"]`);
  await row.waitFor({ timeout });
  const data = await row.evaluate((el: InPage) => ({ ...el.dataset, text: el.textContent }));
  const badge = (await page.getByTestId("alerts-badge").textContent()) ?? "";
  await page.mouse.move(5, 890);
  await page.screenshot({ path: args.alertsScreenshot });

  await page.goto(`${args.url}#/traces/${args.traceId}`);
  await page.waitForFunction(
    (id: string) =>
      document.querySelector(`[data-testid="waterfall"]`)?.getAttribute("data-trace-id") === id &&
      document.querySelectorAll(`[data-testid="wf-row"]`).length > 0,
    args.traceId,
    { timeout },
  );
  const spans = await page.getByTestId("wf-row").evaluateAll((rows) =>
    rows.map((r: InPage) => ({
      depth: Number(r.dataset.depth),
      kind: r.dataset.kind,
      node: r.dataset.node,
      status: r.dataset.status,
    })),
  );
  // The waterfall in view (below a long list) with the first attempt's attributes open.
  await page.getByTestId("wf-row").nth(1).click();
  await page.getByTestId("waterfall").scrollIntoViewIfNeeded();
  await page.screenshot({ path: args.traceScreenshot });
  return {
    alert: { name: data.name, state: data.state, service: data.service, text: data.text.replace(/\s+/g, " ").trim() },
    badge,
    spans,
  };
}

declare const document: InPage;

const browser = await chromium.launch({ executablePath: args.chromium ?? "/usr/bin/chromium", args: ["--no-sandbox"] });
try {
  const page = await browser.newPage({ viewport: { width: 1600, height: 900 } });
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(e.message));
  const report = await run(page);
  if (errors.length) throw new Error(`errors in the page: ${errors.join("; ")}`);
  process.stdout.write(`${JSON.stringify(report)}\n`);
} catch (err) {
  process.stderr.write(`${(err as Error).stack ?? err}\n`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
