// Layer-7 traffic management end to end, in the 2-node world with a controller: routes (weighted
// split, header match, mirror, gRPC method match) and TrafficPolicies (retries and their budget,
// outlier detection, timeouts, circuit breaking, fault injection, rate limiting, least request),
// each checked by a measured number: shares of requests, requests the replicas served, latencies
// seen by the client, statuses and the agent's own error codes.
//
//   node-1: client (app=client), reviews-1 (v1)        node-2: reviews-2 (v2), reviews-3 (v1)
//   Services: reviews 10.96.0.10 (all three), reviews-v1 10.96.0.11, reviews-v2 10.96.0.12;
//   each with http 80 → 8080 and grpc 9090.
//
// Load comes from programs run inside the client pod (clients/http-load.ts, clients/grpc-call.ts,
// curl, h2load), so it goes through the pod's interception rules. What a replica served is read
// from its `/_control` (the workload's own count), from the test process in the pod's namespace.
// Every test removes the routes and policies it applied and resets the replicas' faults.

import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { parseAllDocuments } from "yaml";
import { type Node, type Pod, World } from "../world/world.ts";
import type { GrpcArgs, GrpcReport } from "./clients/grpc-call.ts";
import type { LoadArgs, LoadReport } from "./clients/http-load.ts";
import { grpcCallIn, httpLoadIn } from "./clients/in-pod.ts";
import { Mesh } from "./mesh.ts";
import { describeModes } from "./modes.ts";
import { httpFrom, metricSum } from "./netns-client.ts";

const VIP = { reviews: "10.96.0.10", v1: "10.96.0.11", v2: "10.96.0.12" } as const;
const URL_REVIEWS = `http://${VIP.reviews}/`;
const URL_V1 = `http://${VIP.v1}/`;
const URL_V2 = `http://${VIP.v2}/`;

const service = (name: string, vip: string, selector: string) => `apiVersion: nodemesh.io/v1alpha1
kind: Service
metadata:
  name: ${name}
  namespace: default
spec:
  vip: ${vip}
  ports:
    - { name: http, port: 80, targetPort: 8080, protocol: http }
    - { name: grpc, port: 9090, protocol: grpc }
  selector: ${selector}
`;
const SERVICES = [
  service("reviews", VIP.reviews, "{ app: reviews }"),
  service("reviews-v1", VIP.v1, "{ app: reviews, version: v1 }"),
  service("reviews-v2", VIP.v2, "{ app: reviews, version: v2 }"),
].join("---\n");

/** A TrafficPolicy named `name` attached to `target`, with `spec` (YAML flow mappings, indented 2). */
const policy = (name: string, target: string, spec: string) => `apiVersion: nodemesh.io/v1alpha1
kind: TrafficPolicy
metadata: { name: ${name}, namespace: default }
spec:
  targetRefs: [{ name: ${target} }]
${spec}`;

interface AgentView {
  node: string;
  connected: boolean;
  appliedVersion?: string;
  currentVersion: string;
  lastNack?: { version: string; error: string };
}

interface Control {
  latencyMs: number;
  failRate: number;
  failStatus: number;
  served: { http: number; grpc: number };
}

type Served = Record<string, { http: number; grpc: number }>;

const share = (part: number | undefined, whole: number) => (part ?? 0) / whole;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]!;

describeModes("L7 traffic through two agents", (mode) => {
  let world: World;
  let mesh: Mesh;
  let n1: Node;
  let n2: Node;
  let client: Pod;
  let reviews: Pod[];
  let r1: Pod;
  let r2: Pod;
  let r3: Pod;
  /** Routes and policies applied by the running test, deleted after it. */
  let created: { kind: string; name: string }[] = [];
  /** An outlier ejection may last until then (shared state outlives the policy that caused it). */
  let ejectedUntil = 0;

  const statusJson = async (): Promise<AgentView[]> => {
    const r = await mesh.cli(["status", "-o", "json"]);
    if (r.code !== 0) throw new Error(`nodemesh status: ${r.stderr}`);
    return JSON.parse(r.stdout);
  };
  const currentVersion = async () => (await statusJson())[0]?.currentVersion ?? "";

  /** Waits until both agents are connected and applied the controller's version, newer than `before`. */
  const synced = async (before: string): Promise<void> => {
    // The controller folds writes within 20 ms into one table: let the last write's table exist.
    await sleep(100);
    await vi.waitFor(
      async () => {
        const agents = await statusJson();
        const ok =
          agents.length === 2 &&
          agents.every((a) => a.connected && a.appliedVersion === a.currentVersion && a.currentVersion !== before);
        if (!ok) throw new Error(`agents not in sync on a version newer than ${before}: ${JSON.stringify(agents)}`);
      },
      { timeout: 15_000, interval: 100 },
    );
  };

  /** Applies YAML documents and waits until both agents applied them. */
  const applyAndWait = async (yaml: string): Promise<void> => {
    const before = await currentVersion();
    const r = await mesh.cli(["apply", "-f", "-"], yaml);
    if (r.code !== 0) throw new Error(`nodemesh apply failed (${r.code}): ${r.stderr}${r.stdout}`);
    for (const doc of parseAllDocuments(yaml)) {
      const o = doc.toJS() as { kind: string; metadata: { name: string } };
      if (o.kind !== "Service" && !created.some((c) => c.kind === o.kind && c.name === o.metadata.name)) {
        created.push({ kind: o.kind, name: o.metadata.name });
      }
    }
    await synced(before);
  };

  const control = async (pod: Pod, patch?: Partial<Omit<Control, "served">>): Promise<Control> => {
    const reply = await httpFrom(
      pod.netnsPath,
      `http://${pod.ip}:8080/_control`,
      patch ? { method: "POST", body: JSON.stringify(patch) } : {},
    );
    if (reply.status !== 200) throw new Error(`/_control of ${pod.name}: ${reply.status} ${reply.body}`);
    return JSON.parse(reply.body);
  };
  const served = async (): Promise<Served> =>
    Object.fromEntries(await Promise.all(reviews.map(async (p) => [p.name, (await control(p)).served] as const)));
  /** What each replica served since `before`, once the counts stopped moving (mirrors arrive late). */
  const servedSince = async (before: Served, kind: "http" | "grpc" = "http"): Promise<Record<string, number>> => {
    let last = await served();
    for (let i = 0; i < 30; i++) {
      await sleep(100);
      const now = await served();
      if (reviews.every((p) => now[p.name]![kind] === last[p.name]![kind])) break;
      last = now;
    }
    return Object.fromEntries(reviews.map((p) => [p.name, last[p.name]![kind] - before[p.name]![kind]]));
  };
  const sum = (deltas: Record<string, number>) => Object.values(deltas).reduce((a, b) => a + b, 0);

  const load = (args: LoadArgs): Promise<LoadReport> => httpLoadIn(world, client, args);
  const grpcCall = (args: GrpcArgs): Promise<GrpcReport> => grpcCallIn(world, client, args);
  const metrics = (node: Node, name: string, labels: Record<string, string> = {}) =>
    mesh.metrics(node).then((m) => metricSum(m, name, labels));
  /** The destination agent's inbound request counts by destination_service (whose policy applied). */
  const inboundByService = async (node: Node): Promise<Record<string, number>> => {
    const out: Record<string, number> = {};
    for (const [series, value] of await mesh.metrics(node)) {
      if (!series.startsWith("nodemesh_requests_total{")) continue;
      if (!series.includes('reporter="destination"') && !series.includes('direction="inbound"')) continue;
      const svc = /destination_service="([^"]*)"/.exec(series)?.[1] ?? "";
      out[svc] = (out[svc] ?? 0) + value;
    }
    return out;
  };
  const since = (now: Record<string, number>, before: Record<string, number>) =>
    Object.fromEntries(
      Object.entries(now)
        .map(([k, v]) => [k, v - (before[k] ?? 0)])
        .filter(([, v]) => v !== 0),
    );

  beforeAll(async () => {
    world = await World.create({ nodes: 2, cgroups: mode === "ebpf" });
    mesh = new Mesh(world, { mode });
    [n1, n2] = world.nodes as [Node, Node];
    await mesh.startController();
    await Promise.all([mesh.startAgent(n1), mesh.startAgent(n2)]);
    client = await world.addPod(n1, "client");
    r1 = await world.addPod(n1, "reviews-1");
    r2 = await world.addPod(n2, "reviews-2");
    r3 = await world.addPod(n2, "reviews-3");
    reviews = [r1, r2, r3];
    const versions = new Map([
      [r1, "v1"],
      [r2, "v2"],
      [r3, "v1"],
    ]);
    const ports = ["--http-port", "8080", "--grpc-port", "9090", "--tcp-echo-port", "0"];
    await Promise.all(reviews.map((p) => mesh.startWorkload(p, ["--version", versions.get(p)!, ...ports])));
    await mesh.enroll(client, ["--label", "app=client"]);
    for (const p of reviews) await mesh.enroll(p, ["--label", "app=reviews", "--label", `version=${versions.get(p)}`]);
    await applyAndWait(SERVICES);
    // The endpoints come from the agents' pod reports: wait until every Service has all of its own.
    await vi.waitFor(
      async () => {
        const [all, v1, v2] = await Promise.all([
          load({ url: URL_REVIEWS, requests: 30, concurrency: 3 }),
          load({ url: URL_V1, requests: 10 }),
          load({ url: URL_V2, requests: 4 }),
        ]);
        expect(Object.keys(all.pods).sort()).toEqual(["reviews-1", "reviews-2", "reviews-3"]);
        expect(Object.keys(v1.pods).sort()).toEqual(["reviews-1", "reviews-3"]);
        expect(Object.keys(v2.pods)).toEqual(["reviews-2"]);
      },
      { timeout: 20_000, interval: 500 },
    );
  }, 90_000);

  afterEach(async () => {
    if (created.length > 0) {
      const before = await currentVersion();
      for (const { kind, name } of created.reverse()) {
        const r = await mesh.cli(["delete", kind, name]);
        if (r.code !== 0) throw new Error(`nodemesh delete ${kind} ${name}: ${r.stderr}`);
      }
      created = [];
      await synced(before);
    }
    await Promise.all(reviews.map((p) => control(p, { latencyMs: 0, failRate: 0, failStatus: 503 })));
    const wait = ejectedUntil - Date.now();
    if (wait > 0) await sleep(wait);
  });

  afterAll(async () => {
    await mesh?.destroy();
  });

  it("splits traffic 90/10 between reviews-v1 and reviews-v2 (2000 requests)", async () => {
    await applyAndWait(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: reviews-split, namespace: default }
spec:
  parentRefs: [{ name: reviews, port: 80 }]
  rules:
    - backendRefs: [{ name: reviews-v1, weight: 90 }, { name: reviews-v2, weight: 10 }]
`);
    const r = await load({ url: URL_REVIEWS, requests: 2000, concurrency: 16 });
    expect(r.statuses).toEqual({ 200: 2000 });
    const v2 = share(r.versions.v2, 2000);
    console.log(`split: v2 share ${v2.toFixed(4)} (v1 ${r.versions.v1}, v2 ${r.versions.v2})`);
    expect(v2).toBeGreaterThanOrEqual(0.07);
    expect(v2).toBeLessThanOrEqual(0.13);
    expect((r.versions.v1 ?? 0) + (r.versions.v2 ?? 0)).toBe(2000);
  });

  it("routes by header: end-user: jason goes to v2, everyone else to v1", async () => {
    await applyAndWait(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: reviews-jason, namespace: default }
spec:
  parentRefs: [{ name: reviews, port: 80 }]
  rules:
    - matches: [{ headers: [{ name: end-user, value: jason }] }]
      backendRefs: [{ name: reviews-v2 }]
    - backendRefs: [{ name: reviews-v1 }]
`);
    const jason = await load({ url: URL_REVIEWS, requests: 200, concurrency: 4, headers: { "end-user": "jason" } });
    const others = await load({ url: URL_REVIEWS, requests: 200, concurrency: 4 });
    expect(jason.statuses).toEqual({ 200: 200 });
    expect(jason.versions).toEqual({ v2: 200 });
    expect(others.statuses).toEqual({ 200: 200 });
    expect(others.versions).toEqual({ v1: 200 });
  });

  it("mirrors 50% of requests to reviews-v2; the client only sees v1", async () => {
    await applyAndWait(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: reviews-mirror, namespace: default }
spec:
  parentRefs: [{ name: reviews, port: 80 }]
  rules:
    - backendRefs: [{ name: reviews-v1 }]
      filters:
        - type: RequestMirror
          requestMirror: { backendRef: { name: reviews-v2 }, percent: 50 }
`);
    const counters = async () => ({
      mirrored: await metrics(n1, "nodemesh_mirrored_requests_total"),
      dropped: await metrics(n1, "nodemesh_mirror_dropped_total"),
    });
    const [before, agentBefore] = [await served(), await counters()];
    const r = await load({ url: URL_REVIEWS, requests: 1000, concurrency: 8 });
    // Copies go out after each request's body and may still be in flight when the load ends: read
    // again until what reviews-2 served and what the agent counted agree and stopped moving.
    let [delta, agent] = [await servedSince(before), await counters()];
    for (let i = 0; i < 25; i++) {
      await sleep(200);
      const [d, a] = [await servedSince(before), await counters()];
      const still = JSON.stringify([d, a]) === JSON.stringify([delta, agent]);
      [delta, agent] = [d, a];
      if (still && d["reviews-2"] === a.mirrored - agentBefore.mirrored) break;
    }
    const mirrored = agent.mirrored - agentBefore.mirrored;
    const dropped = agent.dropped - agentBefore.dropped;
    console.log(`mirror: served ${JSON.stringify(delta)}, the agent mirrored ${mirrored} and dropped ${dropped}`);
    expect(r.statuses).toEqual({ 200: 1000 });
    expect(r.versions).toEqual({ v1: 1000 });
    expect(delta["reviews-1"]! + delta["reviews-3"]!).toBe(1000);
    // Every copy decided on arrived, and the copies decided are half the requests (±3.2 σ).
    expect(dropped).toBe(0);
    expect(delta["reviews-2"]).toBe(mirrored);
    expect(delta["reviews-2"]).toBeGreaterThanOrEqual(450);
    expect(delta["reviews-2"]).toBeLessThanOrEqual(550);
  });

  it("retries a replica's 503 on another replica: 300 GETs all succeed", async () => {
    await applyAndWait(policy("reviews-retries", "reviews", "  retries: {}\n"));
    await control(r2, { failRate: 1, failStatus: 503 });
    const before = await served();
    // At most 3 requests in flight: the default budget (minConcurrency 3) then never refuses a retry.
    const r = await load({ url: URL_REVIEWS, requests: 300, concurrency: 3 });
    const delta = await servedSince(before);
    console.log(`retries: served ${JSON.stringify(delta)}, statuses ${JSON.stringify(r.statuses)}`);
    expect(r.statuses).toEqual({ 200: 300 });
    expect(r.pods["reviews-2"]).toBeUndefined();
    expect(delta["reviews-2"]).toBeGreaterThan(0);
    // Each failed attempt was retried once, on a healthy replica (a retry avoids the endpoint tried).
    expect(delta["reviews-1"]! + delta["reviews-3"]!).toBe(300);
  });

  it("keeps retries within the budget when every replica fails (1000 GETs at concurrency 50)", async () => {
    await applyAndWait(
      policy(
        "reviews-budget",
        "reviews",
        "  retries: { attempts: 3, retryOn: [gateway-error], budget: { percent: 20, minConcurrency: 3 } }\n",
      ),
    );
    await Promise.all(reviews.map((p) => control(p, { failRate: 1, failStatus: 503 })));
    const retriesBefore = await metrics(n1, "nodemesh_retries_total");
    const before = await served();
    const r = await load({ url: URL_REVIEWS, requests: 1000, concurrency: 50 });
    const delta = await servedSince(before);
    const attempts = sum(delta);
    const retries = (await metrics(n1, "nodemesh_retries_total")) - retriesBefore;
    console.log(
      `retry budget: ${attempts} upstream attempts for 1000 requests (ratio ${(attempts / 1000).toFixed(3)}), ` +
        `${retries} retries counted by the agent; served ${JSON.stringify(delta)}`,
    );
    expect(r.statuses).toEqual({ 503: 1000 });
    // Without a budget: 4000 attempts. With it, retries in flight are at most 20% of the active
    // requests, or the floor of minConcurrency = 3. The floor exceeds 20% only while fewer than
    // 3 / 0.2 = 15 requests are active: at the end of the run, when at most 15 requests, each
    // allowed `attempts` = 3 retries, remain: 15 × 3 = 45 attempts beyond the 20%.
    expect(attempts).toBeLessThanOrEqual(1000 * 1.2 + 45);
    expect(attempts).toBeGreaterThan(1000); // the budget admits some retries
    expect(retries).toBe(attempts - 1000);
  });

  it("does not retry a POST by default: upstream attempts equal client requests", async () => {
    await applyAndWait(policy("reviews-retries", "reviews", "  retries: {}\n"));
    await control(r2, { failRate: 1, failStatus: 503 });
    const before = await served();
    const r = await load({ url: URL_REVIEWS, requests: 300, concurrency: 3, method: "POST", body: '{"rating":5}' });
    const delta = await servedSince(before);
    console.log(`POST: served ${JSON.stringify(delta)}, statuses ${JSON.stringify(r.statuses)}`);
    expect(sum(delta)).toBe(300);
    expect(r.statuses["503"]).toBeGreaterThan(0);
    // Exactly the POSTs that reached reviews-2 failed, and nothing else.
    expect(r.statuses["503"]).toBe(delta["reviews-2"]);
    expect((r.statuses["200"] ?? 0) + r.statuses["503"]!).toBe(300);
  });

  it("ejects a failing replica after 3 consecutive 5xx and brings it back after the ejection time", async () => {
    await applyAndWait(
      policy(
        "reviews-outlier",
        "reviews",
        "  outlierDetection: { consecutive5xx: 3, baseEjectionTime: 2s, maxEjectionPercent: 34 }\n",
      ),
    );
    await control(r2, { failRate: 1, failStatus: 503 });
    const ejectionsBefore = await metrics(n1, "nodemesh_outlier_ejections_total");
    const before = await served();
    // One request at a time: warm-up (30), then the 100 that count; the whole run within the 2 s.
    const started = Date.now();
    const r = await load({ url: URL_REVIEWS, requests: 130, concurrency: 1, details: true });
    ejectedUntil = started + r.durationMs + 2000 + 500;
    const delta = await servedSince(before);
    const results = r.results!;
    const failed = results.flatMap((x, i) => (x.status === 200 ? [] : [{ i, ...x }]));
    const lastFailure = failed.at(-1)?.i ?? -1;
    console.log(
      `outlier: run ${r.durationMs} ms, failures at ${JSON.stringify(failed.map((f) => f.i))}, served ${JSON.stringify(delta)}`,
    );
    expect(r.durationMs, "the run must fit in the 2 s ejection for this test to say anything").toBeLessThan(1800);
    // The node-1 agent's shared state saw 3 failures in a row from reviews-2, then ejected it.
    expect(failed).toHaveLength(3);
    expect(failed.every((f) => f.status === 503 && f.pod === "reviews-2")).toBe(true);
    expect(lastFailure).toBeLessThan(30);
    const measured = results.slice(30);
    expect(measured.filter((x) => x.pod === "reviews-2")).toHaveLength(0);
    expect(measured.every((x) => x.status === 200)).toBe(true);
    expect(delta["reviews-2"]).toBe(3);
    expect((await metrics(n1, "nodemesh_outlier_ejections_total")) - ejectionsBefore).toBe(1);

    // Healthy again; after the ejection time it serves again.
    await control(r2, { failRate: 0 });
    const wait = started + r.durationMs + 2000 + 200 - Date.now();
    if (wait > 0) await sleep(wait);
    const before2 = await served();
    const back = await load({ url: URL_REVIEWS, requests: 60, concurrency: 1 });
    const delta2 = await servedSince(before2);
    expect(back.statuses).toEqual({ 200: 60 });
    expect(delta2["reviews-2"]).toBeGreaterThanOrEqual(15);
    expect(back.pods["reviews-2"]).toBe(delta2["reviews-2"]);
  });

  it("health checks: replicas whose health path fails (port open) stop receiving, on the client's node and across; back once they pass", async () => {
    await applyAndWait(
      policy(
        "reviews-health",
        "reviews",
        "  healthCheck: { http: { path: /healthz }, interval: 200ms, timeout: 500ms, unhealthyThreshold: 2, healthyThreshold: 1 }\n",
      ),
    );
    const unhealthy = (node: Node) => metrics(node, "nodemesh_endpoints_unhealthy");
    // reviews-1 is on the client's node, reviews-2 on the other: each is checked by its own node's agent.
    await control(r1, { failRate: 1, failStatus: 503 });
    await control(r2, { failRate: 1, failStatus: 503 });
    for (let i = 0; i < 50 && ((await unhealthy(n1)) !== 1 || (await unhealthy(n2)) !== 1); i++) await sleep(100);
    expect([await unhealthy(n1), await unhealthy(n2)]).toEqual([1, 1]);
    expect(await metrics(n2, "nodemesh_health_checks_total", { result: "failure" })).toBeGreaterThanOrEqual(2);
    const refusedBefore = await metrics(n1, "nodemesh_tcp_connect_failures_total", { reason: "NM_TUNNEL_REFUSED" });
    const r = await load({ url: URL_REVIEWS, requests: 100, concurrency: 1 });
    // node-1's agent skips reviews-1; node-2's refuses tunnels to reviews-2 and the caller tries another.
    expect(r.statuses).toEqual({ 200: 100 });
    expect(r.pods).toEqual({ "reviews-3": 100 });
    // The requests node-1's agent sent to reviews-2 were refused as undelivered, then failed over.
    const refused = await metrics(n1, "nodemesh_tcp_connect_failures_total", { reason: "NM_TUNNEL_REFUSED" });
    expect(refused - refusedBefore).toBeGreaterThan(0);

    await control(r1, { failRate: 0 });
    await control(r2, { failRate: 0 });
    for (let i = 0; i < 50 && ((await unhealthy(n1)) !== 0 || (await unhealthy(n2)) !== 0); i++) await sleep(100);
    const back = await load({ url: URL_REVIEWS, requests: 60, concurrency: 1 });
    expect(back.statuses).toEqual({ 200: 60 });
    expect(back.pods["reviews-1"]).toBeGreaterThanOrEqual(10);
    expect(back.pods["reviews-2"]).toBeGreaterThanOrEqual(10);
  });

  it("ejects at most maxEjectionPercent of the replicas: with all three failing only one stops receiving", async () => {
    await applyAndWait(
      policy(
        "reviews-outlier-cap",
        "reviews",
        "  outlierDetection: { consecutive5xx: 3, baseEjectionTime: 2s, maxEjectionTime: 2s, maxEjectionPercent: 34 }\n",
      ),
    );
    await Promise.all(reviews.map((p) => control(p, { failRate: 1, failStatus: 503 })));
    const ejectionsBefore = await metrics(n1, "nodemesh_outlier_ejections_total");
    const started = Date.now();
    const r = await load({ url: URL_REVIEWS, requests: 90, concurrency: 1, details: true });
    ejectedUntil = started + r.durationMs + 2000 + 500;
    const ejections = (await metrics(n1, "nodemesh_outlier_ejections_total")) - ejectionsBefore;
    const after = r.results!.slice(30);
    const byPod: Record<string, number> = {};
    for (const x of after) byPod[x.pod ?? "none"] = (byPod[x.pod ?? "none"] ?? 0) + 1;
    console.log(
      `outlier cap: run ${r.durationMs} ms, last 60 requests by pod ${JSON.stringify(byPod)}, ejections ${ejections}`,
    );
    expect(r.durationMs, "the run must fit in the 2 s ejection for this test to say anything").toBeLessThan(1800);
    expect(r.statuses).toEqual({ 503: 90 });
    // 34% of 3 endpoints: one may be ejected; two keep receiving requests.
    expect(Object.keys(byPod)).toHaveLength(2);
    for (const n of Object.values(byPod)) expect(n).toBeGreaterThanOrEqual(20);
    expect(ejections).toBe(1);
  });

  it("times a request out after 300 ms with 504 NM_TIMEOUT", async () => {
    await applyAndWait(policy("reviews-v1-timeout", "reviews-v1", "  timeouts: { request: 300ms }\n"));
    await Promise.all([control(r1, { latencyMs: 1000 }), control(r3, { latencyMs: 1000 })]);
    // A first round on cold connections and code paths adds up to ~60 ms on this 2-core machine
    // (seen: 353-384 ms); the bounds below are about the timer, so they are measured warm.
    await load({ url: URL_V1, requests: 4, concurrency: 4 });
    const r = await load({ url: URL_V1, requests: 20, concurrency: 4, details: true });
    const other = r.results!.filter((x) => x.nmError !== "NM_TIMEOUT");
    console.log(`request timeout: latencies ${JSON.stringify(r.latencies)}; not NM_TIMEOUT: ${JSON.stringify(other)}`);
    expect(r.statuses).toEqual({ 504: 20 });
    expect(r.nmErrors).toEqual({ NM_TIMEOUT: 20 });
    // The median is about the timer; each request's bound only has to tell the timeout from the
    // app's 1000 ms answer, since one request on a loaded 2-core CI machine was seen at 353 ms.
    expect(Math.abs(median(r.latencies) - 300)).toBeLessThanOrEqual(50);
    for (const ms of r.latencies) {
      expect(ms).toBeGreaterThanOrEqual(250);
      expect(ms).toBeLessThan(600);
    }
  });

  it("retries an attempt that exceeds the 200 ms per-try timeout on another replica", async () => {
    await applyAndWait(
      policy(
        "reviews-per-try",
        "reviews",
        "  timeouts: { perTry: 200ms }\n  retries: { attempts: 2, retryOn: [gateway-error] }\n",
      ),
    );
    await control(r2, { latencyMs: 1000 });
    const before = await served();
    const r = await load({ url: URL_REVIEWS, requests: 60, concurrency: 3 });
    const delta = await servedSince(before);
    const slow = r.latencies.filter((ms) => ms >= 200);
    console.log(
      `per-try: served ${JSON.stringify(delta)}, ${slow.length} retried, latencies ≥ 200 ms ${JSON.stringify(slow)}`,
    );
    expect(r.statuses).toEqual({ 200: 60 });
    expect(r.pods["reviews-2"]).toBeUndefined();
    expect(delta["reviews-2"]).toBeGreaterThan(0);
    // Those that tried reviews-2 first: 200 ms, a backoff below 25 ms, then a fast replica.
    expect(slow.length).toBe(delta["reviews-2"]);
    expect(median(slow)).toBeLessThanOrEqual(200 + 25 + 75);
    // Every one well before reviews-2's 1000 ms answer; the margin is for a loaded CI machine.
    expect(r.latency.max).toBeLessThan(600);
  });

  it("opens the circuit beyond maxRequests 5: 5 of 20 concurrent requests pass, 15 get 503 NM_CIRCUIT_OPEN at once", async () => {
    await applyAndWait(policy("reviews-v2-breaker", "reviews-v2", "  circuitBreaker: { maxRequests: 5 }\n"));
    await control(r2, { latencyMs: 500 });
    const before = await served();
    const r = await load({ url: URL_V2, requests: 20, concurrency: 20, details: true });
    const delta = await servedSince(before);
    const open = r.results!.filter((x) => x.status === 503);
    console.log(
      `circuit breaker: statuses ${JSON.stringify(r.statuses)}, 503 latencies ${JSON.stringify(open.map((x) => x.ms))}`,
    );
    expect(r.statuses).toEqual({ 200: 5, 503: 15 });
    expect(r.nmErrors).toEqual({ NM_CIRCUIT_OPEN: 15 });
    // At once: seen at 20-40 ms, bounded well below reviews-2's 500 ms for a loaded CI machine.
    for (const x of open) expect(x.ms).toBeLessThan(250);
    expect(delta["reviews-2"]).toBe(5);
  });

  it("injects faults: 10% aborted with 418, 20% delayed by 100 ms (2000 requests)", async () => {
    await applyAndWait(
      policy(
        "reviews-faults",
        "reviews",
        "  faultInjection: { delay: { fixedDelay: 100ms, percent: 20 }, abort: { httpStatus: 418, percent: 10 } }\n",
      ),
    );
    const r = await load({ url: URL_REVIEWS, requests: 2000, concurrency: 20 });
    const aborted = share(r.statuses["418"], 2000);
    const delayed = share(r.latencies.filter((ms) => ms >= 100).length, 2000);
    console.log(`faults: 418 share ${aborted}, delayed share ${delayed}, statuses ${JSON.stringify(r.statuses)}`);
    expect((r.statuses["200"] ?? 0) + (r.statuses["418"] ?? 0)).toBe(2000);
    expect(r.nmErrors).toEqual({ NM_FAULT_ABORT: r.statuses["418"] });
    // Four standard deviations of 2000 draws either side: 0.1 ± 0.027 and 0.2 ± 0.036.
    expect(aborted).toBeGreaterThanOrEqual(0.073);
    expect(aborted).toBeLessThanOrEqual(0.127);
    expect(delayed).toBeGreaterThanOrEqual(0.164);
    expect(delayed).toBeLessThanOrEqual(0.236);
  });

  it("rate limits reviews-2 to 50 requests/s: 200 rps for 4 s passes ≈ 200, the rest get 429 with retry-after", async () => {
    await applyAndWait(
      // A burst of 5 absorbs the jitter of the arrivals; with burst 1 every arrival that comes a
      // little late wastes part of its interval and only ~88% of the rate passes.
      policy("reviews-v2-ratelimit", "reviews-v2", "  rateLimit: { requestsPerSecond: 50, burst: 5 }\n"),
    );
    const inboundBefore = await inboundByService(n2);
    const r = await load({ url: URL_V2, requests: 800, rate: 200 });
    console.log(
      `rate limit: statuses ${JSON.stringify(r.statuses)} in ${r.durationMs} ms, retry-after ${JSON.stringify(r.retryAfter)}; ` +
        `node-2 inbound requests by destination_service ${JSON.stringify(since(await inboundByService(n2), inboundBefore))}`,
    );
    // 50/s over the 4 s plus the burst: 205 ± 10%.
    const passed = r.statuses["200"] ?? 0;
    expect(passed).toBeGreaterThanOrEqual(185);
    expect(passed).toBeLessThanOrEqual(225);
    expect(r.statuses["429"]).toBe(800 - passed);
    expect(r.retryAfter["429"]).toBe(r.statuses["429"]);
    expect(r.nmErrors).toEqual({ NM_RATE_LIMITED: r.statuses["429"] });
  });

  it("rate limits each destination pod on its own: 3 replicas at 50 requests/s each", async () => {
    await applyAndWait(policy("reviews-ratelimit", "reviews", "  rateLimit: { requestsPerSecond: 50, burst: 5 }\n"));
    const before = await served();
    // Round robin: 100 requests/s to each replica for 2 s; each may pass 50/s × 2 s + a burst of 5.
    const r = await load({ url: URL_REVIEWS, requests: 600, rate: 300 });
    const delta = await servedSince(before);
    console.log(`rate limit per pod: served ${JSON.stringify(delta)}, statuses ${JSON.stringify(r.statuses)}`);
    expect((r.statuses["200"] ?? 0) + (r.statuses["429"] ?? 0)).toBe(600);
    expect(sum(delta)).toBe(r.statuses["200"]);
    for (const p of reviews) {
      expect(delta[p.name], p.name).toBeGreaterThanOrEqual(90);
      expect(delta[p.name], p.name).toBeLessThanOrEqual(120);
    }
  });

  describe("gRPC", () => {
    const V2_GRPC = `${VIP.v2}:9090`;

    it("carries unary calls and a bidi stream through both agents to reviews-2", async () => {
      const unary = await grpcCall({ target: V2_GRPC, mode: "unary", calls: 100, concurrency: 4 });
      expect(unary.codes).toEqual({ OK: 100 });
      expect(unary.pods).toEqual({ "reviews-2": 100 });
      const bidi = await grpcCall({ target: V2_GRPC, mode: "bidi", messages: 20 });
      expect(bidi.codes).toEqual({ OK: 1 });
      const stream = bidi.streams![0]!;
      expect(stream.received.map((m) => m.message)).toEqual(stream.sent);
      expect(stream.received.map((m) => m.sequence)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
      expect(new Set(stream.received.map((m) => m.pod))).toEqual(new Set(["reviews-2"]));
    });

    it("ends a call past its 200 ms deadline with DEADLINE_EXCEEDED", async () => {
      await control(r2, { latencyMs: 1000 });
      const r = await grpcCall({ target: V2_GRPC, mode: "unary", calls: 5, deadlineMs: 200 });
      console.log(`gRPC deadline: ${JSON.stringify(r.results)}`);
      expect(r.codes).toEqual({ DEADLINE_EXCEEDED: 5 });
      expect(Math.abs(median(r.latencies) - 200)).toBeLessThanOrEqual(80);
      // Each call well before the replica's 1000 ms answer; the margin is for a loaded CI machine.
      for (const ms of r.latencies) {
        expect(ms).toBeGreaterThanOrEqual(120);
        expect(ms).toBeLessThan(600);
      }
    });

    it("maps a replica's failure (503) to UNAVAILABLE", async () => {
      await control(r2, { failRate: 1, failStatus: 503 });
      const r = await grpcCall({ target: V2_GRPC, mode: "unary", calls: 10 });
      expect(r.codes).toEqual({ UNAVAILABLE: 10 });
    });

    it("answers UNAVAILABLE naming NM_CIRCUIT_OPEN when the circuit is open", async () => {
      await applyAndWait(policy("reviews-v2-breaker", "reviews-v2", "  circuitBreaker: { maxRequests: 5 }\n"));
      await control(r2, { latencyMs: 500 });
      const before = await served();
      const r = await grpcCall({ target: V2_GRPC, mode: "unary", calls: 20, concurrency: 20 });
      const delta = await servedSince(before, "grpc");
      console.log(
        `gRPC circuit breaker: ${JSON.stringify({ codes: r.codes, details: r.details, nmErrors: r.nmErrors })}`,
      );
      expect(r.codes).toEqual({ OK: 5, UNAVAILABLE: 15 });
      expect(r.nmErrors).toEqual({ NM_CIRCUIT_OPEN: 15 });
      for (const x of r.results.filter((c) => c.code === "UNAVAILABLE")) {
        expect(x.details).toMatch(/circuit breaker/);
        // grpc-message percent-encodes only '%' and bytes outside printable ASCII (PROTOCOL-HTTP2.md);
        // clients decode no more than that, so an over-encoded ':' reaches the user as "%3A".
        expect(x.details).not.toMatch(/%[0-9A-F]{2}/);
      }
      expect(delta["reviews-2"]).toBe(5);
    });

    it("answers RESOURCE_EXHAUSTED when rate limited", async () => {
      await applyAndWait(
        policy("reviews-v2-ratelimit", "reviews-v2", "  rateLimit: { requestsPerSecond: 1, burst: 1 }\n"),
      );
      const inboundBefore = await inboundByService(n2);
      const r = await grpcCall({ target: V2_GRPC, mode: "unary", calls: 10 });
      console.log(
        `gRPC rate limit: ${JSON.stringify({ codes: r.codes, nmErrors: r.nmErrors })}; node-2 inbound requests by ` +
          `destination_service ${JSON.stringify(since(await inboundByService(n2), inboundBefore))}`,
      );
      expect((r.codes.OK ?? 0) + (r.codes.RESOURCE_EXHAUSTED ?? 0)).toBe(10);
      expect(r.codes.OK).toBeGreaterThanOrEqual(1);
      expect(r.codes.OK).toBeLessThanOrEqual(2);
      expect(r.nmErrors).toEqual({ NM_RATE_LIMITED: r.codes.RESOURCE_EXHAUSTED });
    });

    it("routes by gRPC method: Unary to reviews-v2, everything else to reviews-v1", async () => {
      await applyAndWait(`apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: { name: reviews-by-method, namespace: default }
spec:
  parentRefs: [{ name: reviews, port: 9090 }]
  rules:
    - matches: [{ method: { service: nodemesh.sample.Echo, method: Unary } }]
      backendRefs: [{ name: reviews-v2 }]
    - backendRefs: [{ name: reviews-v1 }]
`);
      const target = `${VIP.reviews}:9090`;
      const unary = await grpcCall({ target, mode: "unary", calls: 30, concurrency: 3 });
      const bidi = await grpcCall({ target, mode: "bidi", calls: 6, messages: 3 });
      expect(unary.codes).toEqual({ OK: 30 });
      expect(unary.versions).toEqual({ v2: 30 });
      expect(bidi.codes).toEqual({ OK: 6 });
      expect(bidi.versions).toEqual({ v1: 6 });
    });
  });

  it("sends fewer requests to a slow replica with LeastRequest than with RoundRobin", async () => {
    await control(r3, { latencyMs: 50 });
    const lb = (type: string) => policy("reviews-lb", "reviews", `  loadBalancer: { type: ${type} }\n`);
    await applyAndWait(lb("RoundRobin"));
    const rr = await load({ url: URL_REVIEWS, requests: 600, concurrency: 8 });
    await applyAndWait(lb("LeastRequest"));
    const lr = await load({ url: URL_REVIEWS, requests: 600, concurrency: 8 });
    const rrShare = share(rr.pods["reviews-3"], 600);
    const lrShare = share(lr.pods["reviews-3"], 600);
    console.log(`least request: reviews-3 share RoundRobin ${rrShare.toFixed(3)}, LeastRequest ${lrShare.toFixed(3)}`);
    expect(rr.statuses).toEqual({ 200: 600 });
    expect(lr.statuses).toEqual({ 200: 600 });
    expect(Math.abs(rrShare - 1 / 3)).toBeLessThanOrEqual(0.02);
    expect(lrShare).toBeLessThan(0.6 * rrShare);
  });

  it("serves curl (HTTP/1.1), h2load (h2c) and HTTP/2 prior knowledge from undici", async () => {
    const curl = await world.exec(client, "curl", [
      "-sS",
      "--max-time",
      "5",
      "-w",
      "\\n%{http_code} %{http_version}\\n",
      `${URL_REVIEWS}a`,
      `${URL_REVIEWS}b`,
      `${URL_REVIEWS}c`,
    ]);
    expect(curl.code, curl.stderr).toBe(0);
    const lines = curl.stdout.trim().split("\n");
    expect(lines).toHaveLength(6);
    for (let i = 0; i < 3; i++) {
      const body = JSON.parse(lines[2 * i]!) as { pod: string; path: string; protocol: string };
      expect(body.path).toBe(`/${"abc"[i]}`);
      expect(body.pod).toMatch(/^reviews-[123]$/);
      expect(lines[2 * i + 1]).toBe("200 1.1");
    }

    const h2load = await world.exec(client, "h2load", ["-n", "1000", "-c", "4", URL_REVIEWS], { timeoutMs: 60_000 });
    console.log(
      `h2load: ${h2load.stdout
        .split("\n")
        .filter((l) => /requests:|status codes:|finished in/.test(l))
        .join(" | ")}`,
    );
    expect(h2load.code, h2load.stderr).toBe(0);
    expect(h2load.stdout).toMatch(/Application protocol: h2c/);
    expect(h2load.stdout).toMatch(/requests: 1000 total, 1000 started, 1000 done, 1000 succeeded, 0 failed, 0 errored/);
    expect(h2load.stdout).toMatch(/status codes: 1000 2xx, 0 3xx, 0 4xx, 0 5xx/);

    const h2 = await load({ url: URL_REVIEWS, requests: 200, concurrency: 4, protocol: "h2" });
    expect(h2.statuses).toEqual({ 200: 200 });
    // The agent speaks to the replica in the protocol the client chose.
    expect(h2.protocols).toEqual({ h2: 200 });
  });
});
