// The dashboard on the real system: a 2-node world with the controller, a client on node-1 and a
// `reviews` Service with a replica on each node. After the client sends 300 requests, real
// Chromium inside the controller's namespace (clients/dashboard-driver.ts) opens the page the
// controller serves at /, finds client → reviews in the graph, clicks reviews, and reads a
// request rate and count that agree with the agents' own metrics, the replicas and their nodes,
// and both nodes with a measured RTT in the Nodes view. Screenshots go to test-results/.

import { existsSync, mkdirSync, statSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { type Node, type Pod, World } from "../world/world.ts";
import type { DriverArgs, DriverReport } from "./clients/dashboard-driver.ts";
import { Mesh } from "./mesh.ts";
import { httpFrom, metricSum } from "./netns-client.ts";

const VIP = "10.96.0.10";
const REQUESTS = 300;
const CHROMIUM = "/usr/bin/chromium";
const DRIVER = new URL("./clients/dashboard-driver.ts", import.meta.url).pathname;
const RESULTS = new URL("../../test-results/", import.meta.url).pathname;
const SCREENSHOT = `${RESULTS}dashboard.png`;

const YAML = `apiVersion: nodemesh.io/v1alpha1
kind: Service
metadata: { name: reviews, namespace: default }
spec:
  vip: ${VIP}
  ports:
    - { name: http, port: 80, targetPort: 8080, protocol: http }
  selector: { app: reviews }
`;

describe.skipIf(!existsSync(CHROMIUM))("dashboard", () => {
  let world: World;
  let mesh: Mesh;
  let n1: Node;
  let n2: Node;
  let client: Pod;
  /** When the agents were being started: their first reports cover the time since. */
  let agentsStarting: number;
  let agentsReady: number;

  beforeAll(async () => {
    world = await World.create({ nodes: 2 });
    mesh = new Mesh(world);
    [n1, n2] = world.nodes;
    await mesh.startController();
    agentsStarting = Date.now();
    await Promise.all([mesh.startAgent(n1), mesh.startAgent(n2)]);
    agentsReady = Date.now();
    client = await world.addPod(n1, "client");
    const replicas = [await world.addPod(n1, "reviews-1"), await world.addPod(n2, "reviews-2")];
    for (const pod of replicas)
      await mesh.startWorkload(pod, ["--http-port", "8080", "--grpc-port", "0", "--tcp-echo-port", "0"]);
    await mesh.enroll(client, ["--label", "app=client"]);
    for (const pod of replicas) await mesh.enroll(pod, ["--label", "app=reviews"]);
    const r = await mesh.cli(["apply", "-f", "-"], YAML);
    expect(r.code, r.stderr).toBe(0);
    await vi.waitFor(
      async () => {
        const s = await mesh.cli(["status", "-o", "json"]);
        const agents = JSON.parse(s.stdout) as {
          connected: boolean;
          appliedVersion?: string;
          currentVersion: string;
        }[];
        if (agents.length !== 2 || !agents.every((a) => a.connected && a.appliedVersion === a.currentVersion))
          throw new Error("agents not in sync yet");
        const get = await mesh.cli(["get", "services"]);
        if (!/reviews\s+10\.96\.0\.10\s+\S+\s+2\/2/.test(get.stdout)) throw new Error(`not applied: ${get.stdout}`);
      },
      { timeout: 15_000, interval: 200 },
    );
    // Both replicas answer in mTLS (the workload echoes the caller's certificate) before the load.
    await vi.waitFor(
      async () => {
        const pods = new Set<string>();
        for (let i = 0; i < 6; i++) {
          const body = JSON.parse((await httpFrom(client.netnsPath, `http://${VIP}/warm`)).body);
          if (!body.clientCert) throw new Error("a plaintext hop");
          pods.add(body.pod);
        }
        if (pods.size < 2) throw new Error("one replica only");
      },
      { timeout: 20_000, interval: 300 },
    );
  }, 90_000);

  afterAll(async () => {
    await mesh?.destroy();
  });

  it("shows client → reviews with the agents' request rate, the replicas, and both nodes with RTT", async () => {
    const labels = { reporter: "source", source_workload: "client", destination_service: "reviews.default" };
    const warmUp = metricSum(await mesh.metrics(n1), "nodemesh_requests_total", labels);
    const load = await world.exec(client, "h2load", ["--h1", "-n", String(REQUESTS), "-c", "4", `http://${VIP}/`], {
      timeoutMs: 30_000,
    });
    expect(load.code, load.stderr).toBe(0);
    expect(load.stdout).toContain(`${REQUESTS} succeeded`);
    let counted = 0;
    await vi.waitFor(
      async () => {
        counted = metricSum(await mesh.metrics(n1), "nodemesh_requests_total", labels);
        expect(counted - warmUp).toBe(REQUESTS);
      },
      { timeout: 10_000, interval: 200 },
    );

    mkdirSync(RESULTS, { recursive: true });
    const args: DriverArgs = {
      url: "http://127.0.0.1:8080/",
      service: { namespace: "default", name: "reviews" },
      nodes: ["svc:reviews.default", "wl:client.default", "wl:reviews.default"],
      edge: ["wl:client.default", "svc:reviews.default"],
      // The page's count catches up with the agents' within a report interval or two.
      minRequests: Math.floor(counted * 0.75),
      nodeNames: [n1.name, n2.name],
      screenshot: SCREENSHOT,
      timeoutMs: 15_000,
    };
    const run = await world.exec(mesh.controller!.place, process.execPath, [DRIVER, JSON.stringify(args)], {
      timeoutMs: 90_000,
    });
    expect(run.code, `${run.stderr}\n${run.stdout}`).toBe(0);
    const report = JSON.parse(run.stdout.trim().split("\n").at(-1)!) as DriverReport;

    // The graph: both workloads, the service, the edge between them, laid out once.
    expect(report.graph.nodes).toEqual(expect.arrayContaining(args.nodes));
    const edge = report.graph.edges.find((e) => e.source === "wl:client.default" && e.target === "svc:reviews.default");
    expect(edge?.requestsPerSecond).toBeGreaterThan(0);
    // Every request went agent to agent in mutual TLS, and the edge says so.
    expect(edge?.mtls).toBe(true);
    expect(edge?.label).toMatch(/mTLS/);
    expect(report.layouts).toBe(1);
    expect(report.hash).toBe("#/topology/service/default/reviews");

    // The panel: the requests in the window are the agents' count; the rate is that count over
    // the time the window covers (since the agents started, which is shorter than 5 minutes).
    const p = report.panel;
    expect(p.title).toBe("reviews");
    expect(p.requests).toBeGreaterThanOrEqual(counted * 0.75);
    expect(p.requests).toBeLessThanOrEqual(counted * 1.25);
    const slowest = counted / ((report.readAt - agentsStarting) / 1000);
    const fastest = counted / ((report.readAt - agentsReady) / 1000);
    expect(p.rps).toBeGreaterThan(0);
    expect(p.rps).toBeGreaterThanOrEqual(slowest * 0.75);
    expect(p.rps).toBeLessThanOrEqual(fastest * 1.25);
    expect(p.errorRate).toBe(0);
    expect(p.text.errors).toBe("0%");
    expect(p.p50Ms).toBeGreaterThan(0);
    expect(p.p99Ms).toBeGreaterThanOrEqual(p.p50Ms!);
    expect(p.callers).toEqual(["client.default"]);
    expect(p.endpoints).toEqual(
      expect.arrayContaining([
        // "namespace/name" as the API names them (a bare name would do as well).
        { pod: expect.stringMatching(/^(default\/)?reviews-1$/), node: n1.name },
        { pod: expect.stringMatching(/^(default\/)?reviews-2$/), node: n2.name },
      ]),
    );
    expect(p.endpoints).toHaveLength(2);

    // The Nodes view: both nodes, connected, with facts, and an RTT measured between them.
    expect(report.nodes.rows.map((r) => r.node).sort()).toEqual([n1.name, n2.name]);
    expect(report.nodes.rows.every((r) => r.connected === "true")).toBe(true);
    const rtt = report.nodes.rtt.find((c) => c.from === n1.name && c.to === n2.name);
    expect(rtt?.ms).toBeGreaterThan(0);

    for (const file of report.screenshots) expect(statSync(file).size, file).toBeGreaterThan(10_000);
  }, 150_000);
});
