// Alerts that fire, end to end in a 2-node world: a real Prometheus (Debian's) scrapes the agents
// with deploy/prometheus/scrape.yaml's jobs (Kubernetes discovery replaced by static targets that
// carry the labels it would set; the relabelling is the file's) and evaluates
// deploy/prometheus/alerts.yaml's rules as they are, except `for:`, cut to 2 s so the test takes
// seconds, not minutes. The service's backend answers 503: NodemeshHighErrorRate fires, a real
// Alertmanager delivers it to a webhook receiver in the test with the service's labels, and the
// controller started with --alertmanager-url shows it on its REST API and in its dashboard
// (Chromium), beside the trace of a failed request as the agents recorded it and exported it to
// the controller's OTLP port (--otlp-address). Then the errors stop, successes bring the 5-minute error ratio under 5 %, and the
// resolved notification arrives.

import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { parse, stringify } from "yaml";
import type { Alert } from "../../api/alerts.ts";
import { ADMIN_PORT } from "../../api/dataplane.ts";
import { type Node, type Pod, type Proc, World } from "../world/world.ts";
import type { ObserveArgs, ObserveReport } from "./clients/observe-driver.ts";
import { Mesh } from "./mesh.ts";
import { httpFrom } from "./netns-client.ts";

const VIP = "10.96.0.10";
const DEPLOY = new URL("../../deploy/prometheus/", import.meta.url).pathname;
const RECEIVER = new URL("./clients/webhook-receiver.ts", import.meta.url).pathname;
const DRIVER = new URL("./clients/observe-driver.ts", import.meta.url).pathname;
const RESULTS = new URL("../../test-results/", import.meta.url).pathname;
const OTLP_PORT = 4318;
const PROMETHEUS_PORT = 9090;
const ALERTMANAGER_PORT = 9093;
const RECEIVER_PORT = 9095;
const ALERT = "NodemeshHighErrorRate";
const SERVICE = "reviews.default";
/** What the test's rules wait instead of the file's `for:` (5m, 10m, 2m). */
const FOR = "2s";

const YAML = `apiVersion: nodemesh.io/v1alpha1
kind: Service
metadata: { name: reviews, namespace: default }
spec:
  vip: ${VIP}
  ports:
    - { name: http, port: 80, targetPort: 8080, protocol: http }
  selector: { app: reviews }
`;

interface Notification {
  /** When the receiver got it (its clock is the test's: same machine). */
  at: number;
  status: "firing" | "resolved";
  alerts: { status: string; labels: Record<string, string>; annotations: Record<string, string> }[];
  groupLabels: Record<string, string>;
}

/** scrape.yaml's jobs with static targets carrying the meta labels Kubernetes discovery would set. */
function scrapeJobs(agents: Node[], controllerRest: string): unknown[] {
  const file = parse(readFileSync(join(DEPLOY, "scrape.yaml"), "utf8")) as {
    scrape_configs: ({ job_name: string; kubernetes_sd_configs?: unknown } & Record<string, unknown>)[];
  };
  const targets: Record<string, { targets: string[]; labels: Record<string, string> }[]> = {
    "nodemesh-agent": agents.map((n) => ({
      targets: [`${n.underlayIp}:${ADMIN_PORT}`],
      labels: {
        __meta_kubernetes_namespace: "nodemesh-system",
        __meta_kubernetes_pod_label_app_kubernetes_io_name: "nodemesh-agent",
        __meta_kubernetes_pod_annotation_prometheus_io_port: String(ADMIN_PORT),
        __meta_kubernetes_pod_ip: n.underlayIp,
        __meta_kubernetes_pod_phase: "Running",
        __meta_kubernetes_pod_node_name: n.name,
        __meta_kubernetes_pod_name: `nodemesh-agent-${n.name}`,
      },
    })),
    "nodemesh-controller": [
      {
        targets: [controllerRest],
        labels: {
          __meta_kubernetes_namespace: "nodemesh-system",
          __meta_kubernetes_service_name: "nodemesh-controller",
          __meta_kubernetes_pod_name: "nodemesh-controller-0",
          __meta_kubernetes_pod_node_name: "control-plane",
        },
      },
    ],
  };
  return file.scrape_configs.map(({ kubernetes_sd_configs: _discovery, ...job }) => {
    const statics = targets[job.job_name];
    if (!statics) throw new Error(`scrape.yaml has a job the test does not know: ${job.job_name}`);
    return { ...job, static_configs: statics };
  });
}

/** alerts.yaml with only its `for:` durations changed. */
function rulesWithShortFor(): string {
  const text = readFileSync(join(DEPLOY, "alerts.yaml"), "utf8");
  const changed = text.replace(/^(\s+for: )\S+$/gm, `$1${FOR}`);
  expect(changed.match(/^\s+for: /gm)?.length).toBeGreaterThanOrEqual(5);
  return changed;
}

describe("alerts", () => {
  let world: World;
  let mesh: Mesh;
  let n1: Node;
  let n2: Node;
  let client: Pod;
  let server: Pod;
  let receiver: Proc;
  let dir: string;

  const notifications = (): Notification[] =>
    receiver.lines.flatMap((l) => {
      try {
        const line = JSON.parse(l) as { event: string; at: number; body: Notification };
        return line.event === "notification" ? [{ ...line.body, at: line.at }] : [];
      } catch {
        return []; // not a line of ours (e.g. a runtime warning)
      }
    });
  const ofAlert = (status: "firing" | "resolved") =>
    notifications().flatMap((n) =>
      n.alerts.filter((a) => a.labels.alertname === ALERT && a.status === status).map((alert) => ({ n, alert })),
    );

  const control = (body: object) =>
    httpFrom(server.netnsPath, `http://${server.ip}:8080/_control`, { method: "POST", body: JSON.stringify(body) });
  /** `count` requests from the client at `rps`, through the mesh. */
  async function load(count: number, rps?: number): Promise<string> {
    const rate = rps ? ["--rps", String(rps), "-c", "1"] : ["-c", "4"];
    const r = await world.exec(client, "h2load", ["--h1", "-n", String(count), ...rate, `http://${VIP}/`], {
      timeoutMs: 60_000,
    });
    expect(r.code, r.stderr).toBe(0);
    return r.stdout;
  }

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "nodemesh-alerts-"));
    world = await World.create({ nodes: 2 });
    const controller = await world.addController();
    // Every request traced, exported to the controller: the dashboard shows the failures' traces.
    mesh = new Mesh(world, {
      agentArgs: ["--otlp-endpoint", `http://${controller.ip}:${OTLP_PORT}`, "--trace-sampling", "100"],
    });
    [n1, n2] = world.nodes as [Node, Node];
    await mesh.startController([
      "--alertmanager-url",
      `http://127.0.0.1:${ALERTMANAGER_PORT}/`,
      "--otlp-address",
      `0.0.0.0:${OTLP_PORT}`,
    ]);
    await Promise.all([mesh.startAgent(n1), mesh.startAgent(n2)]);
    client = await world.addPod(n1, "client");
    server = await world.addPod(n2, "reviews-1");
    await mesh.startWorkload(server, ["--http-port", "8080", "--grpc-port", "0", "--tcp-echo-port", "0"]);
    await mesh.enroll(client, ["--label", "app=client"]);
    await mesh.enroll(server, ["--label", "app=reviews"]);
    const r = await mesh.cli(["apply", "-f", "-"], YAML);
    expect(r.code, r.stderr).toBe(0);
    await vi.waitFor(
      async () => {
        const reply = await httpFrom(client.netnsPath, `http://${VIP}/warm`);
        if (reply.status !== 200) throw new Error(`not served yet: ${reply.status}`);
      },
      { timeout: 20_000, interval: 300 },
    );

    const place = mesh.controller!.place;
    receiver = world.spawn(place, process.execPath, [RECEIVER, String(RECEIVER_PORT)], { name: "webhook receiver" });
    await receiver.waitForLine('"event":"listening"');

    writeFileSync(join(dir, "alerts.yaml"), rulesWithShortFor());
    writeFileSync(
      join(dir, "prometheus.yml"),
      stringify({
        global: { scrape_interval: "1s", evaluation_interval: "1s" },
        rule_files: [join(dir, "alerts.yaml")],
        alerting: { alertmanagers: [{ static_configs: [{ targets: [`127.0.0.1:${ALERTMANAGER_PORT}`] }] }] },
        scrape_configs: scrapeJobs([n1, n2], "127.0.0.1:8080"),
      }),
    );
    writeFileSync(
      join(dir, "alertmanager.yml"),
      stringify({
        global: { resolve_timeout: "5s" },
        route: {
          receiver: "test",
          group_by: ["alertname", "destination_service"],
          group_wait: "1s",
          group_interval: "1s",
          repeat_interval: "1h",
        },
        receivers: [
          {
            name: "test",
            webhook_configs: [{ url: `http://127.0.0.1:${RECEIVER_PORT}/hook`, send_resolved: true }],
          },
        ],
      }),
    );
    // The world stops both with everything else.
    world.spawn(
      place,
      "prometheus-alertmanager",
      [
        `--config.file=${join(dir, "alertmanager.yml")}`,
        `--storage.path=${join(dir, "alertmanager")}`,
        `--web.listen-address=127.0.0.1:${ALERTMANAGER_PORT}`,
        // One Alertmanager: no cluster port, no gossip to settle.
        "--cluster.listen-address=",
        "--log.level=warn",
      ],
      { name: "alertmanager" },
    );
    world.spawn(
      place,
      "prometheus",
      [
        `--config.file=${join(dir, "prometheus.yml")}`,
        `--storage.tsdb.path=${join(dir, "tsdb")}`,
        `--web.listen-address=127.0.0.1:${PROMETHEUS_PORT}`,
        // Firing alerts are sent again every second (default 1 min), so Alertmanager sees them at once.
        "--rules.alert.resend-delay=1s",
        "--log.level=warn",
      ],
      { name: "prometheus" },
    );
    // Both agents and the controller are up in Prometheus, with the labels scrape.yaml sets.
    await vi.waitFor(
      async () => {
        const r = await httpFrom(place.netnsPath, `http://127.0.0.1:${PROMETHEUS_PORT}/api/v1/query?query=up`);
        const result = JSON.parse(r.body).data.result as { metric: Record<string, string>; value: [number, string] }[];
        const up = result.filter((x) => x.value[1] === "1").map((x) => `${x.metric.job} ${x.metric.node}`);
        expect(up.sort()).toEqual(
          [`nodemesh-agent ${n1.name}`, `nodemesh-agent ${n2.name}`, "nodemesh-controller control-plane"].sort(),
        );
      },
      { timeout: 30_000, interval: 500 },
    );
  }, 120_000);

  afterAll(async () => {
    await mesh?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("fires NodemeshHighErrorRate for a failing service, delivered with its labels, shown by the controller", async () => {
    // Some successes first, so the service's success series exists before the failures.
    await load(20);
    expect((await control({ failRate: 1, failStatus: 503 })).status).toBe(200);
    const failing = Date.now();
    // 20 requests a second, all 503: well over 5 % and over 0.1 request/s in the 5-minute window.
    const out = await load(120, 20);
    expect(out).toMatch(/status codes: 0 2xx, 0 3xx, 0 4xx, 120 5xx/);

    await vi.waitFor(() => expect(ofAlert("firing").length).toBeGreaterThan(0), { timeout: 60_000, interval: 250 });
    console.log(
      `firing notification ${((ofAlert("firing")[0]!.n.at - failing) / 1000).toFixed(1)} s after the first failure`,
    );
    const { n, alert } = ofAlert("firing")[0]!;
    expect(n.status).toBe("firing");
    expect(n.groupLabels).toEqual({ alertname: ALERT, destination_service: SERVICE });
    expect(alert.labels).toEqual({ alertname: ALERT, destination_service: SERVICE, severity: "warning" });
    expect(alert.annotations.summary).toMatch(/^reviews\.default: \d+(\.\d+)?% of requests fail with 5xx$/);

    // The controller reads it from Alertmanager.
    const rest = await httpFrom(
      mesh.controller!.place.netnsPath,
      "http://127.0.0.1:8080/apis/nodemesh.io/v1alpha1/alerts",
    );
    expect(rest.status, rest.body).toBe(200);
    const list = JSON.parse(rest.body) as { kind: string; alertmanager: string; items: Alert[] };
    expect(list.kind).toBe("AlertList");
    expect(list.alertmanager).toBe(`http://127.0.0.1:${ALERTMANAGER_PORT}/`);
    const shown = list.items.find((a) => a.name === ALERT);
    expect(shown).toMatchObject({
      state: "active",
      severity: "warning",
      labels: { alertname: ALERT, destination_service: SERVICE, severity: "warning" },
    });
    expect(shown?.annotations.summary).toContain("reviews.default");
    expect(Date.parse(shown!.startsAt)).toBeGreaterThan(Date.now() - 120_000);

    // A failed request's trace, as the agents exported it (every 5 s) to the controller.
    const place = mesh.controller!.place;
    let traceId: string | undefined;
    await vi.waitFor(
      async () => {
        const traces = await httpFrom(
          place.netnsPath,
          "http://127.0.0.1:8080/apis/nodemesh.io/v1alpha1/traces?service=default/reviews&errors=true",
        );
        const items = JSON.parse(traces.body).items as { traceId: string; spanCount: number; nodes: string[] }[];
        traceId = items.find((t) => t.spanCount >= 4 && t.nodes.length === 2)?.traceId;
        if (!traceId) throw new Error(`no failed trace through both agents yet: ${traces.body.slice(0, 300)}`);
      },
      { timeout: 20_000, interval: 500 },
    );

    // The dashboard, in Chromium inside the controller's namespace: the alert firing, the waterfall.
    mkdirSync(RESULTS, { recursive: true });
    const args: ObserveArgs = {
      url: "http://127.0.0.1:8080/",
      alert: { name: ALERT, service: SERVICE },
      traceId: traceId!,
      alertsScreenshot: `${RESULTS}alerts-firing.png`,
      traceScreenshot: `${RESULTS}alerts-trace.png`,
      timeoutMs: 15_000,
    };
    const run = await world.exec(place, process.execPath, [DRIVER, JSON.stringify(args)], { timeoutMs: 60_000 });
    expect(run.code, `${run.stderr}\n${run.stdout}`).toBe(0);
    const report = JSON.parse(run.stdout.trim().split("\n").at(-1)!) as ObserveReport;
    expect(report.alert).toMatchObject({ name: ALERT, state: "active", service: SERVICE });
    expect(report.alert.text).toContain("warning");
    expect(report.alert.text).toContain("reviews.default:");
    expect(Number(report.badge)).toBeGreaterThanOrEqual(1);
    // The source agent's server span, then per attempt: its client span, node-2's server and client.
    const [root, ...attempts] = report.spans.map((s) => `${s.depth} ${s.kind} ${s.node}`);
    expect(root).toBe("0 server node-1");
    expect(attempts.length % 3, attempts.join(", ")).toBe(0);
    expect(attempts.length).toBeGreaterThanOrEqual(3);
    for (let i = 0; i < attempts.length; i += 3)
      expect(attempts.slice(i, i + 3)).toEqual(["1 client node-1", "2 server node-2", "3 client node-2"]);
    expect(report.spans.every((s) => s.status === "error")).toBe(true);
    for (const file of [args.alertsScreenshot, args.traceScreenshot])
      expect(statSync(file).size, file).toBeGreaterThan(10_000);
  }, 180_000);

  it("resolves when the errors stop and successes bring the ratio under 5 %", async () => {
    expect(ofAlert("firing").length).toBeGreaterThan(0);
    expect((await control({ failRate: 0 })).status).toBe(200);
    // 120 failures among 120 + 20 + 3000 requests: under 4 % over the window.
    const recovering = Date.now();
    const out = await load(3000);
    expect(out).toMatch(/status codes: 3000 2xx, 0 3xx, 0 4xx, 0 5xx/);
    await vi.waitFor(() => expect(ofAlert("resolved").length).toBeGreaterThan(0), { timeout: 60_000, interval: 250 });
    console.log(
      `resolved notification ${((ofAlert("resolved")[0]!.n.at - recovering) / 1000).toFixed(1)} s after the errors stopped`,
    );
    const { n, alert } = ofAlert("resolved")[0]!;
    expect(n.status).toBe("resolved");
    expect(alert.labels).toEqual({ alertname: ALERT, destination_service: SERVICE, severity: "warning" });
    // And the controller no longer lists it (Alertmanager drops resolved alerts from its active list).
    await vi.waitFor(
      async () => {
        const rest = await httpFrom(
          mesh.controller!.place.netnsPath,
          "http://127.0.0.1:8080/apis/nodemesh.io/v1alpha1/alerts",
        );
        const items = (JSON.parse(rest.body) as { items: Alert[] }).items;
        expect(items.filter((a) => a.name === ALERT)).toEqual([]);
      },
      { timeout: 15_000, interval: 500 },
    );
  }, 120_000);
});
