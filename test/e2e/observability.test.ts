// Observability end to end in the 2-node world: after traffic the test itself sent (HTTP/1.1 with
// known successes and failures, gRPC, opaque TCP), the agents' metrics hold exactly those counts
// with the right source and destination workloads on both reporters; `promtool check metrics` is
// clean on every /metrics; a real Prometheus scraping the agents answers a PromQL query for the
// request rate by destination; access-log lines appear only when turned on; and the controller's
// service graph, `nodemesh top` and `nodemesh edges` show the traffic.

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { ADMIN_PORT } from "../../api/dataplane.ts";
import type { ServiceGraph } from "../../api/service-graph.ts";
import { readContract } from "../metrics-contract.ts";
import { type Node, type Pod, World } from "../world/world.ts";
import { Mesh } from "./mesh.ts";
import { echoFrom, httpFrom, metricSum, parseMetrics } from "./netns-client.ts";

const VIP = "10.96.0.10";
const GRPC_CLIENT = new URL("./clients/grpc-call.ts", import.meta.url).pathname;

const YAML = `apiVersion: nodemesh.io/v1alpha1
kind: Service
metadata: { name: reviews, namespace: default }
spec:
  vip: ${VIP}
  ports:
    - { name: http, port: 80, targetPort: 8080, protocol: http }
    - { name: grpc, port: 9090, protocol: grpc }
    - { name: echo, port: 7070, protocol: tcp }
  selector: { app: reviews }
`;

const ACCESS_LOG_POLICY = `apiVersion: nodemesh.io/v1alpha1
kind: TrafficPolicy
metadata: { name: reviews-logs, namespace: default }
spec:
  targetRefs: [{ kind: Service, name: reviews }]
  accessLog: { sampling: 100 }
`;

describe("observability", () => {
  let world: World;
  let mesh: Mesh;
  let n1: Node;
  let n2: Node;
  let client: Pod;
  let server: Pod;
  let dir: string;

  const metricsText = async (node: Node) =>
    (await httpFrom(node.netnsPath, `http://127.0.0.1:${ADMIN_PORT}/metrics`)).body;
  const source = { reporter: "source", source_workload: "client", destination_service: "reviews.default" };
  const destination = { ...source, reporter: "destination", destination_workload: "reviews" };
  const accessLines = (node: Node) =>
    mesh.agents
      .get(node)!
      .proc.lines.filter((l) => l.includes('"msg":"access"'))
      .map((l) => JSON.parse(l));

  const versions = async () => {
    const r = await mesh.cli(["status", "-o", "json"]);
    return JSON.parse(r.stdout) as { connected: boolean; appliedVersion?: string; currentVersion: string }[];
  };

  /** Runs a change through the CLI, then waits until both agents applied a newer version. */
  async function change(args: string[], input?: string): Promise<void> {
    const before = (await versions())[0]?.currentVersion;
    const r = await mesh.cli(args, input);
    expect(r.code, r.stderr).toBe(0);
    await vi.waitFor(
      async () => {
        const agents = await versions();
        const synced = agents.every((a) => a.connected && a.appliedVersion === a.currentVersion);
        if (agents.length !== 2 || !synced || agents[0]!.currentVersion === before) throw new Error("not yet");
      },
      { timeout: 15_000, interval: 100 },
    );
  }

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "nodemesh-obs-"));
    world = await World.create({ nodes: 2 });
    mesh = new Mesh(world);
    [n1, n2] = world.nodes;
    await mesh.startController();
    await Promise.all([mesh.startAgent(n1), mesh.startAgent(n2)]);
    client = await world.addPod(n1, "client");
    server = await world.addPod(n2, "reviews-1");
    await mesh.startWorkload(server, ["--http-port", "8080", "--grpc-port", "9090", "--tcp-echo-port", "7070"]);
    await mesh.enroll(client, ["--label", "app=client"]);
    await mesh.enroll(server, ["--label", "app=reviews"]);
    await change(["apply", "-f", "-"], YAML);
  }, 90_000);

  afterAll(async () => {
    await mesh?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  it("counts HTTP, gRPC and TCP exactly, labelled with both workloads, on both reporters", async () => {
    for (let i = 0; i < 40; i++) expect((await httpFrom(client.netnsPath, `http://${VIP}/ok`)).status).toBe(200);
    await httpFrom(server.netnsPath, `http://${server.ip}:8080/_control`, {
      method: "POST",
      body: JSON.stringify({ failRate: 1, failStatus: 503 }),
    });
    for (let i = 0; i < 10; i++) expect((await httpFrom(client.netnsPath, `http://${VIP}/fail`)).status).toBe(503);
    await httpFrom(server.netnsPath, `http://${server.ip}:8080/_control`, {
      method: "POST",
      body: JSON.stringify({ failRate: 0 }),
    });
    const grpc = await world.exec(client, process.execPath, [
      GRPC_CLIENT,
      JSON.stringify({ target: `${VIP}:9090`, mode: "unary", calls: 20 }),
    ]);
    expect(grpc.code, grpc.stderr).toBe(0);
    const payload = Buffer.alloc(3000, 7);
    for (let i = 0; i < 5; i++) expect((await echoFrom(client.netnsPath, VIP, 7070, payload)).length).toBe(3000);

    await vi.waitFor(async () => {
      const m1 = parseMetrics(await metricsText(n1));
      expect(
        metricSum(m1, "nodemesh_tcp_connections_closed_total", { ...source, destination_workload: "reviews" }),
      ).toBe(5);
    });
    const m1 = parseMetrics(await metricsText(n1));
    const m2 = parseMetrics(await metricsText(n2));
    for (const [m, labels] of [
      [m1, source],
      [m2, destination],
    ] as const) {
      const requests = (extra: Record<string, string>) =>
        metricSum(m, "nodemesh_requests_total", { ...labels, ...extra });
      expect(requests({ response_code: "200", grpc_status: "" })).toBe(40);
      expect(requests({ response_code: "503" })).toBe(10);
      expect(requests({ grpc_status: "0" })).toBe(20);
      expect(metricSum(m, "nodemesh_request_duration_seconds_count", labels)).toBe(70);
      expect(metricSum(m, "nodemesh_tcp_connections_opened_total", labels)).toBe(5);
      expect(metricSum(m, "nodemesh_tcp_received_bytes_total", labels)).toBe(5 * 3000);
      expect(metricSum(m, "nodemesh_tcp_sent_bytes_total", labels)).toBe(5 * 3000);
    }
    // The source side names the serving workload; the destination side names the caller.
    expect(metricSum(m1, "nodemesh_requests_total", { ...source, destination_workload: "reviews" })).toBe(70);
    expect(metricSum(m2, "nodemesh_requests_total", { ...destination, source_namespace: "default" })).toBe(70);
    // Response sizes: the workload's JSON bodies, counted by both sides alike.
    const bytes1 = metricSum(m1, "nodemesh_response_size_bytes_sum", source);
    expect(bytes1).toBeGreaterThan(50 * 100);
    expect(metricSum(m2, "nodemesh_response_size_bytes_sum", destination)).toBe(bytes1);
  });

  it("passes promtool check metrics on every agent's and the controller's /metrics, each metric documented", async () => {
    const outputs = [await metricsText(n1), await metricsText(n2)];
    const controller = mesh.controller!.place;
    outputs.push((await httpFrom(controller.netnsPath, "http://127.0.0.1:8080/metrics")).body);
    const documented = readContract();
    for (const text of outputs) {
      const r = await world.exec(controller, "promtool", ["check", "metrics"], { input: text });
      expect(r.code, `${r.stdout}${r.stderr}`).toBe(0);
      expect(`${r.stdout}${r.stderr}`.trim()).toBe("");
      // Every metric served is in docs/metrics.md (two health-check metrics once were not).
      const served = [...text.matchAll(/^# HELP (\S+)/gm)].map((m) => m[1]!);
      expect(served.length).toBeGreaterThan(20);
      const undocumented = served.filter(
        (name) => !documented.metrics.has(name) && !documented.prefixes.some((prefix) => name.startsWith(prefix)),
      );
      expect(undocumented).toEqual([]);
    }
  });

  it("reports each data-plane worker's memory, which the process metrics do not see", async () => {
    const m = parseMetrics(await metricsText(n1));
    const memory = (kind: string) => metricSum(m, "nodemesh_agent_worker_memory_bytes", { worker: "0", kind });
    // A worker's isolate holds its code, its pods' listeners and the configuration: megabytes.
    expect(memory("heap_used")).toBeGreaterThan(2 ** 20);
    expect(memory("heap_committed")).toBeGreaterThanOrEqual(memory("heap_used"));
    expect(memory("external")).toBeGreaterThan(0);
    // Its own isolate's, not the control thread's (which prom-client's heap gauge reports).
    expect(memory("heap_used")).not.toBe(metricSum(m, "nodemesh_agent_nodejs_heap_size_used_bytes"));
  });

  it("answers a PromQL query for the request rate by destination from a real Prometheus", async () => {
    const controller = mesh.controller!.place;
    const config = join(dir, "prometheus.yml");
    writeFileSync(
      config,
      `global: { scrape_interval: 1s }
scrape_configs:
  - job_name: nodemesh-agents
    static_configs: [{ targets: ["${n1.underlayIp}:${ADMIN_PORT}", "${n2.underlayIp}:${ADMIN_PORT}"] }]
`,
    );
    // The world stops it with everything else.
    world.spawn(
      controller,
      "prometheus",
      [
        `--config.file=${config}`,
        `--storage.tsdb.path=${join(dir, "tsdb")}`,
        "--web.listen-address=127.0.0.1:9090",
        "--log.level=warn",
      ],
      { name: "prometheus" },
    );
    const query = async (q: string): Promise<number | undefined> => {
      const r = await httpFrom(
        controller.netnsPath,
        `http://127.0.0.1:9090/api/v1/query?query=${encodeURIComponent(q)}`,
      );
      const result = JSON.parse(r.body).data?.result as { value: [number, string] }[] | undefined;
      return result?.[0] ? Number(result[0].value[1]) : undefined;
    };
    const total = `sum by (destination_service) (nodemesh_requests_total{reporter="source",destination_service="reviews.default"})`;
    // Prometheus has scraped the counts so far: what the first test sent.
    await vi.waitFor(async () => expect(await query(total)).toBe(70), { timeout: 20_000, interval: 500 });

    // A known rate: 20 requests per second for 6 seconds.
    const started = Date.now();
    const h2load = await world.exec(
      client,
      "h2load",
      ["--h1", "-c", "1", "--rps", "20", "-D", "6", `http://${VIP}/rate`],
      { timeoutMs: 30_000 },
    );
    expect(h2load.code, h2load.stderr).toBe(0);
    const sent = Number(/(\d+) succeeded/.exec(h2load.stdout)?.[1]);
    expect(sent).toBeGreaterThan(100);
    await vi.waitFor(async () => expect(await query(total)).toBe(70 + sent), { timeout: 20_000, interval: 500 });
    const seconds = Math.ceil((Date.now() - started) / 1000);
    const rate = await query(
      `sum by (destination_service) (increase(nodemesh_requests_total{reporter="source",destination_service="reviews.default"}[${seconds + 5}s]))`,
    );
    // increase() extrapolates to the window's edges; the count sent is the floor.
    expect(rate).toBeGreaterThanOrEqual(sent * 0.9);
    expect(rate).toBeLessThanOrEqual(sent * 1.6);
  }, 60_000);

  it("writes access-log lines only when turned on, one per request", async () => {
    const before1 = accessLines(n1).length;
    for (let i = 0; i < 5; i++) await httpFrom(client.netnsPath, `http://${VIP}/quiet`);
    expect(accessLines(n1).length).toBe(before1);

    await change(["apply", "-f", "-"], ACCESS_LOG_POLICY);
    for (let i = 0; i < 7; i++) {
      await httpFrom(client.netnsPath, `http://${VIP}/logged-${i}`, {});
    }
    await new Promise((r) => setTimeout(r, 2000));
    await vi.waitFor(
      () => {
        expect(accessLines(n1).filter((l) => l.path?.startsWith("/logged-")).length).toBe(7);
        expect(accessLines(n2).filter((l) => l.path?.startsWith("/logged-")).length).toBe(7);
      },
      { timeout: 5000, interval: 100 },
    );
    const line = accessLines(n1).find((l) => l.path === "/logged-0")!;
    expect(line).toMatchObject({
      type: "http",
      reporter: "source",
      sourceWorkload: "client",
      destinationService: "reviews.default",
      destinationWorkload: "reviews",
      status: 200,
      method: "GET",
      upstream: `${server.ip}:8080`,
    });
    expect(line.requestId).toMatch(/^[0-9a-f-]{36}$/);
    expect(line.durationMs).toBeGreaterThan(0);
    const dest = accessLines(n2).find((l) => l.path === "/logged-0")!;
    expect(dest.requestId).toBe(line.requestId);
    expect(dest.reporter).toBe("destination");

    await change(["delete", "trafficpolicy", "reviews-logs"]);
    const after = accessLines(n1).length;
    for (let i = 0; i < 5; i++) await httpFrom(client.netnsPath, `http://${VIP}/quiet-again`);
    expect(accessLines(n1).length).toBe(after);
  });

  it("shows the traffic in the service graph, nodemesh top and nodemesh edges", async () => {
    await vi.waitFor(
      async () => {
        const r = await mesh.cli(["edges", "-o", "json", "--window", "120"]);
        const edges = JSON.parse(r.stdout) as ServiceGraph["edges"];
        const e = edges.find((x) => x.source === "wl:client.default" && x.target === "svc:reviews.default");
        expect(e?.requestsPerSecond).toBeGreaterThan(0);
        expect(edges.some((x) => x.source === "svc:reviews.default" && x.target === "wl:reviews.default")).toBe(true);
      },
      { timeout: 15_000, interval: 500 },
    );
    const top = await mesh.cli(["top", "--window", "120"]);
    expect(top.code, top.stderr).toBe(0);
    expect(top.stdout).toMatch(/^SERVICE\s+NAMESPACE\s+PROTOCOL\s+SUCCESS\s+RPS\s+P50\s+P99/m);
    expect(top.stdout).toMatch(/^reviews\s+default\s+/m);
    const edges = await mesh.cli(["edges", "--window", "120"]);
    expect(edges.stdout).toMatch(/workload\/client\.default\s+service\/reviews\.default\s+/);
  });
});
