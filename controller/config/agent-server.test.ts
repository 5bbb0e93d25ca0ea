import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { status as GrpcStatus } from "@grpc/grpc-js";
import pino from "pino";
import { Registry } from "prom-client";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { WirePod } from "../../api/agent-service.ts";
import { edgeSample } from "../graph/testing/edge-sample.ts";
import { MemoryStore } from "../store/memory-store.ts";
import { AgentServer, type AgentServerOptions, MAX_AGENT_MESSAGE_BYTES } from "./agent-server.ts";
import { NodeBindings } from "./node-bindings.ts";
import {
  asNewObject,
  emptyReport,
  httpRouteResource,
  newServiceObject,
  simNodeSecret as simSecretOf,
  trafficPolicyResource,
} from "./testing/fixtures.ts";
import { histogramTotals } from "./testing/metrics.ts";
import { SimAgent } from "./testing/sim-agent.ts";

const log = pino({ level: "silent" });
const FACTS = { cpuModel: "", cpuCores: 0, memoryBytes: 0, os: "", kernel: "", interfaces: [] };
const webPod: WirePod = { name: "web-1", namespace: "default", ip: "10.1.0.11", labels: { app: "web" } };

let server: AgentServer | undefined;
let agents: SimAgent[] = [];

async function startWorld(opts: Partial<AgentServerOptions> = {}) {
  const store = new MemoryStore();
  await store.open();
  await store.create(newServiceObject("web", "10.96.0.10", { app: "web" }));
  await store.create(newServiceObject("api", "10.96.0.11", { app: "api" }));
  const metrics = new Registry();
  server = await AgentServer.start({
    store,
    metrics,
    host: "127.0.0.1",
    port: 0,
    debounceMs: 5,
    startupGraceMs: 0,
    log,
    ...opts,
  });
  return { store, metrics, server };
}

function agent(node: string, opts: ConstructorParameters<typeof SimAgent>[2] = {}): SimAgent {
  const a = new SimAgent(server!.port, node, opts);
  agents.push(a);
  return a;
}

function statusOf(node: string) {
  return server!.agents().find((a) => a.node === node);
}

/** Retries `check` until it stops throwing (vitest's waitFor), for at most `timeoutMs`. */
function eventually(check: () => void, timeoutMs = 5000): Promise<void> {
  return vi.waitFor(check, { timeout: timeoutMs, interval: 10 });
}

/** Waits until the agent has applied the controller's current table (connecting bumps the peer set). */
async function converged(a: SimAgent): Promise<string> {
  await eventually(() => {
    expect(a.version).toBe(server!.configVersion());
    expect(statusOf(a.node)?.appliedVersion).toBe(a.version);
  });
  return a.version;
}

afterEach(async () => {
  for (const a of agents) a.close();
  agents = [];
  await server?.stop();
  server = undefined;
});

describe("AgentServer", () => {
  it("sends a full snapshot on connect, then incremental updates after store changes", async () => {
    const { store } = await startWorld();
    const a = agent("node-a", { underlayIp: "10.0.0.1" });
    const first = await a.nextConfig();
    expect(first.full).toBe(true);
    expect(first.services.map((s) => s.name).sort()).toEqual(["api", "web"]);
    // The node's own arrival changes the node list: a second version follows with it.
    const settled = await converged(a);
    expect(a.peers).toEqual([{ name: "node-a", underlayIp: "10.0.0.1" }]);

    const next = a.nextConfig();
    await store.create(newServiceObject("db", "10.96.0.12", { app: "db" }));
    const update = await next;
    expect(update).toMatchObject({ full: false, baseVersion: settled, removed: [], peers: null });
    expect(update.services.map((s) => s.name)).toEqual(["db"]);
    await a.until(() => a.version === update.version);
    await eventually(() => expect(statusOf("node-a")?.appliedVersion).toBe(update.version));
    expect(statusOf("node-a")).toMatchObject({ connected: true, underlayIp: "10.0.0.1", agentVersion: "sim" });
  });

  it("turns enrolled pods into endpoints on every agent and tells each about its peers", async () => {
    await startWorld();
    const a = agent("node-a", { underlayIp: "10.0.0.1" });
    const b = agent("node-b", { underlayIp: "10.0.0.2" });
    await Promise.all([a.nextConfig(), b.nextConfig()]);
    a.send({ kind: "podsChanged", podsChanged: { pods: [webPod] } });
    const endpointsOf = (x: SimAgent) => x.services.get("default/web")?.endpoints ?? [];
    for (const x of [a, b]) {
      await x.until(() => endpointsOf(x).length === 1, 5000, "the web endpoint");
      expect(endpointsOf(x)[0]).toMatchObject({ ip: "10.1.0.11", node: "node-a", pod: "default/web-1", meshed: true });
    }
    await b.until(() => b.peers.length === 2, 5000, "both nodes in the node list");
    expect(b.peers).toEqual([
      { name: "node-a", underlayIp: "10.0.0.1" },
      { name: "node-b", underlayIp: "10.0.0.2" },
    ]);

    a.send({ kind: "podsChanged", podsChanged: { pods: [] } });
    await b.until(() => endpointsOf(b).length === 0, 5000, "the endpoint to go");

    // Changes alone (PodsDelta), on top of the list the controller has.
    const web2 = { ...webPod, name: "web-2", ip: "10.1.0.12" };
    a.send({ kind: "podsDelta", podsDelta: { upserted: [webPod, web2], removed: [] } });
    await b.until(() => endpointsOf(b).length === 2, 5000, "both endpoints");
    a.send({ kind: "podsDelta", podsDelta: { upserted: [], removed: ["default/web-2"] } });
    await b.until(() => endpointsOf(b).length === 1, 5000, "web-2's endpoint to go");
    expect(endpointsOf(b).map((e) => e.ip)).toEqual(["10.1.0.11"]);
    a.send({ kind: "podsChanged", podsChanged: { pods: [] } });
    await b.until(() => endpointsOf(b).length === 0, 5000, "the endpoint to go");

    // A pod that cannot be an endpoint is dropped rather than breaking every agent's table.
    const broken = { ...webPod, name: "web-2", ip: "not-an-ip" };
    a.send({ kind: "podsChanged", podsChanged: { pods: [broken, webPod] } });
    await b.until(() => endpointsOf(b).length === 1, 5000, "the valid endpoint");
    expect(endpointsOf(b).map((e) => e.ip)).toEqual(["10.1.0.11"]);
  });

  it("keeps a NACKing agent on its previous version and shows the error", async () => {
    const { store } = await startWorld();
    const a = agent("node-a");
    const applied = await converged(a);

    a.decide = () => ({ nack: "route table full" });
    const refused = a.nextConfig();
    await store.create(newServiceObject("db", "10.96.0.12", { app: "db" }));
    const bad = await refused;
    await eventually(() =>
      expect(statusOf("node-a")?.lastNack).toMatchObject({ version: bad.version, error: "route table full" }),
    );
    expect(statusOf("node-a")?.appliedVersion).toBe(applied);
    expect(server!.propagation({ plural: "services", namespace: "default", name: "db" })).toMatchObject({
      agentsApplied: 0,
      agentsTotal: 1,
    });

    // The agent kept the old table, so what comes next is complete, not a diff from the refused one.
    a.decide = () => "ack";
    const recovery = a.nextConfig();
    await store.create(newServiceObject("cache", "10.96.0.13", { app: "cache" }));
    const full = await recovery;
    expect(full.full).toBe(true);
    await eventually(() => expect(statusOf("node-a")?.appliedVersion).toBe(full.version));
    expect(statusOf("node-a")?.lastNack).toBeUndefined();
  });

  it("counts N of M agents per resource and measures write → last ACK", async () => {
    const { store, metrics } = await startWorld();
    const a = agent("node-a");
    const b = agent("node-b");
    await converged(a);
    await converged(b);

    b.decide = () => "ignore"; // b receives the update but does not answer (yet)
    const key = { plural: "services", namespace: "default", name: "db" };
    const bGot = b.nextConfig();
    await store.create(newServiceObject("db", "10.96.0.12", { app: "db" }));
    const update = await bGot;
    await eventually(() => expect(server!.propagation(key)).toMatchObject({ agentsApplied: 1, agentsTotal: 2 }));
    const count = async () => (await histogramTotals(metrics, "nodemesh_controller_config_propagation_seconds")).count;
    expect(await count()).toBe(0);

    b.send({ kind: "ack", ack: { version: update.version } });
    await eventually(() => expect(server!.propagation(key)).toMatchObject({ agentsApplied: 2, agentsTotal: 2 }));
    expect(server!.propagation(key)).toMatchObject({ observedGeneration: 1, lastAppliedTime: expect.any(String) });
    expect(await count()).toBe(1);
    // An object no table carries has no propagation.
    expect(server!.propagation({ ...key, name: "nope" })).toBeUndefined();
  });

  it("sends routes and policies to every agent and counts N of M for an HTTPRoute", async () => {
    const { store } = await startWorld();
    const a = agent("node-a");
    const b = agent("node-b");
    await converged(a);
    await converged(b);

    b.decide = () => "ignore";
    const key = { plural: "httproutes", namespace: "default", name: "web-split" };
    const bGot = b.nextConfig();
    const route = await store.create(asNewObject(httpRouteResource("web-split", { backends: ["web-v1", "web-v2"] })));
    const update = await bGot;
    expect(update).toMatchObject({ full: false, services: [], removedTraffic: [] });
    expect(update.traffic.map((t) => `${t.kind}/${t.namespace}/${t.name}`)).toEqual(["HTTPRoute/default/web-split"]);
    expect(JSON.parse(update.traffic[0]!.specJson)).toEqual(route.spec);
    await a.until(() => a.traffic.has("HTTPRoute/default/web-split"), 5000, "the route");
    await eventually(() =>
      expect(server!.propagation(key)).toMatchObject({ observedGeneration: 1, agentsApplied: 1, agentsTotal: 2 }),
    );
    b.send({ kind: "ack", ack: { version: update.version } });
    await eventually(() => expect(server!.propagation(key)).toMatchObject({ agentsApplied: 2, agentsTotal: 2 }));

    // A policy of the same name is another object; deleting the route removes it from every agent.
    b.decide = () => "ack";
    await store.create(asNewObject(trafficPolicyResource("web-split")));
    await store.delete({ plural: "httproutes", namespace: "default", name: "web-split" });
    for (const x of [a, b]) {
      await x.until(
        () => !x.traffic.has("HTTPRoute/default/web-split") && x.traffic.has("TrafficPolicy/default/web-split"),
        5000,
        "the route to go and the policy to arrive",
      );
    }
    expect(server!.propagation(key)).toBeUndefined();
    await eventually(() =>
      expect(server!.propagation({ ...key, plural: "trafficpolicies" })).toMatchObject({ agentsApplied: 2 }),
    );
  });

  it("ends the older stream when a node connects again", async () => {
    await startWorld();
    const first = agent("node-a");
    await first.nextConfig();
    const second = agent("node-a");
    await second.nextConfig();
    await first.until(() => first.status !== undefined, 5000, "the old stream to end");
    expect(first.status?.code).toBe(GrpcStatus.ABORTED);
    expect(statusOf("node-a")?.connected).toBe(true);
  });

  it("ends a stream that breaks the protocol", async () => {
    await startWorld();
    const a = agent("node-a");
    await a.nextConfig();
    a.send({ kind: "hello", hello: { nodeName: "node-a", agentVersion: "", underlayIp: "", facts: FACTS } });
    await a.until(() => a.status !== undefined, 5000, "the stream to end");
    expect(a.status).toEqual({ code: GrpcStatus.FAILED_PRECONDITION, details: "Hello was already received" });
    await eventually(() => expect(statusOf("node-a")?.connected).toBe(false));
  });

  it("refuses agents without the bootstrap token when one is configured", async () => {
    await startWorld({ token: "s3cret" });
    const intruder = agent("node-x", { token: "wrong" });
    await intruder.until(() => intruder.status !== undefined, 5000, "refusal");
    expect(intruder.status?.code).toBe(GrpcStatus.UNAUTHENTICATED);
    const member = agent("node-a", { token: "s3cret" });
    expect((await member.nextConfig()).full).toBe(true);
  });

  it("tells the controller of each agent that connects, not of those it refuses", async () => {
    let connected = 0;
    await startWorld({ token: "s3cret", onAgentConnected: () => connected++ });
    const intruder = agent("node-x", { token: "wrong" });
    await intruder.until(() => intruder.status !== undefined, 5000, "refusal");
    expect(connected).toBe(0);
    for (const node of ["node-a", "node-b"]) await agent(node, { token: "s3cret" }).nextConfig();
    expect(connected).toBe(2);
  });
});

/** A counter's value for the labels, read from a registry (0 when never incremented). */
async function counter(registry: Registry, name: string, labels: Record<string, string> = {}): Promise<number> {
  const metric = registry.getSingleMetric(name);
  if (!metric) throw new Error(`no metric ${name}`);
  const values = (await metric.get()).values;
  const match = values.filter((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x));
  return match.reduce((n, v) => n + v.value, 0);
}

async function ended(a: SimAgent): Promise<{ code: number; details: string }> {
  await a.until(() => a.status !== undefined, 5000, "the stream to end");
  return a.status!;
}

const ROGUE_SECRET = "r".repeat(43);
const refused = "nodemesh_controller_agent_streams_refused_total";

describe("AgentServer trust boundary", () => {
  it("refuses to listen off loopback without a token unless insecureAgents", async () => {
    const store = new MemoryStore();
    await store.open();
    const opts = { store, metrics: new Registry(), host: "0.0.0.0", port: 0, log };
    await expect(AgentServer.start(opts)).rejects.toThrow(
      /refusing to serve the agents' gRPC on 0.0.0.0 without agent authentication.*--insecure-agents/,
    );
  });

  it("refuses a second node secret for a bound node; its pods stay; its own agent comes back", async () => {
    const { metrics } = await startWorld();
    const real = agent("node-a");
    await converged(real);
    real.send({ kind: "podsChanged", podsChanged: { pods: [webPod] } });
    await eventually(() =>
      expect(server!.service("default", "web")?.endpoints.map((e) => e.pod)).toEqual(["default/web-1"]),
    );

    const rogue = agent("node-a", { secret: ROGUE_SECRET });
    rogue.send({ kind: "podsChanged", podsChanged: { pods: [{ ...webPod, name: "evil", ip: "10.1.0.66" }] } });
    const status = await ended(rogue);
    expect(status.code).toBe(GrpcStatus.PERMISSION_DENIED);
    expect(status.details).toContain("node node-a is bound to another agent's node secret");
    expect(rogue.configs).toEqual([]);
    expect(await counter(metrics, refused, { reason: "node_bound" })).toBe(1);
    // The real stream was not replaced, and the endpoints are the real pods.
    expect(real.status).toBeUndefined();
    expect(statusOf("node-a")?.pods?.map((p) => p.name)).toEqual(["web-1"]);
    expect(server!.service("default", "web")?.endpoints.map((e) => e.pod)).toEqual(["default/web-1"]);

    // The same secret (an agent restarted with its state dir) replaces its older stream.
    const again = agent("node-a");
    expect((await again.nextConfig()).full).toBe(true);
    expect((await ended(real)).code).toBe(GrpcStatus.ABORTED);
  });

  it("refuses a Hello without a well-formed node secret", async () => {
    const { metrics } = await startWorld();
    for (const secret of [null, "short", `${"x".repeat(40)}!`]) {
      const a = agent("node-a", { secret });
      const status = await ended(a);
      expect(status.code).toBe(GrpcStatus.UNAUTHENTICATED);
      expect(status.details).toContain("nodemesh-node-secret");
    }
    expect(await counter(metrics, refused, { reason: "node_secret" })).toBe(3);
    expect(server!.agents()).toEqual([]);
  });

  it("refuses new node names past maxNodes; bound nodes still connect", async () => {
    const { metrics } = await startWorld({ maxNodes: 2 });
    await agent("node-a").nextConfig();
    await agent("node-b").nextConfig();
    const third = agent("node-c");
    const status = await ended(third);
    expect(status.code).toBe(GrpcStatus.RESOURCE_EXHAUSTED);
    expect(status.details).toContain("already has 2 nodes");
    expect(await counter(metrics, refused, { reason: "node_limit" })).toBe(1);
    expect((await agent("node-a").nextConfig()).full).toBe(true);
    expect(server!.agents().map((a) => a.node)).toEqual(["node-a", "node-b"]);
  });

  it("keeps bindings across a restart; an operator release frees the name and ends its stream", async () => {
    const dir = mkdtempSync(join(tmpdir(), "nodemesh-bindings-"));
    try {
      const path = join(dir, "node-bindings.json");
      const writeErrors: Error[] = [];
      const fail = (err: Error) => writeErrors.push(err);
      await startWorld({ bindings: await NodeBindings.load(path, fail) });
      await agent("node-a").nextConfig();
      await server!.stop(); // flushes the bindings
      server = undefined;
      expect(readFileSync(path, "utf8")).not.toContain(simSecretOf("node-a"));
      expect(readFileSync(path, "utf8")).toMatch(/"node-a": \{\s+"digest": "[0-9a-f]{64}"/);

      await startWorld({ bindings: await NodeBindings.load(path, fail) });
      expect(server!.nodeBindings().map((b) => b.node)).toEqual(["node-a"]);
      expect((await ended(agent("node-a", { secret: ROGUE_SECRET }))).code).toBe(GrpcStatus.PERMISSION_DENIED);
      const real = agent("node-a");
      await real.nextConfig();

      expect(await server!.releaseNode("node-a")).toBe(true);
      expect(await server!.releaseNode("node-a")).toBe(false);
      expect((await ended(real)).code).toBe(GrpcStatus.ABORTED);
      expect(JSON.parse(readFileSync(path, "utf8")).nodes).toEqual({});
      // The next agent to claim the name binds it.
      expect((await agent("node-a", { secret: ROGUE_SECRET }).nextConfig()).full).toBe(true);
      expect((await ended(agent("node-a"))).code).toBe(GrpcStatus.PERMISSION_DENIED);
      await server!.stop();
      server = undefined;
      expect(writeErrors).toEqual([]);
    } finally {
      await server?.stop();
      server = undefined;
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("takes at most maxEdgesPerReport edges from a report and counts the rest", async () => {
    const { metrics } = await startWorld({ maxEdgesPerReport: 3 });
    const a = agent("node-a");
    await a.nextConfig();
    const edges = Array.from({ length: 5 }, (_, i) => edgeSample({ sourceWorkload: `w${i}` }));
    a.send({ kind: "report", report: emptyReport({ edges }) });
    await eventually(async () =>
      expect(await counter(metrics, "nodemesh_controller_report_edges_dropped_total")).toBe(2),
    );
    expect(server!.traffic.size().edges).toBe(3);
  });

  it("ends a stream whose message exceeds MAX_AGENT_MESSAGE_BYTES, and counts it", async () => {
    const { metrics } = await startWorld();
    const a = agent("node-a");
    await a.nextConfig();
    const label = "x".repeat(60);
    const pods = Array.from({ length: Math.ceil(MAX_AGENT_MESSAGE_BYTES / 80) }, (_, i) => ({
      ...webPod,
      name: `p${i}`,
      labels: { app: label },
    }));
    a.send({ kind: "podsChanged", podsChanged: { pods } });
    const status = await ended(a);
    expect(status.code).toBe(GrpcStatus.RESOURCE_EXHAUSTED);
    expect(await counter(metrics, refused, { reason: "message_too_large" })).toBe(1);
    expect(statusOf("node-a")?.pods).toEqual([]);
  });

  it("folds a burst of writes into a table once it pauses, and one every 500 ms while it does not", async () => {
    const { store } = await startWorld({ debounceMs: 100 });
    const a = agent("node-a");
    await converged(a);
    const versionsBefore = a.configs.length;
    // 150 writes 10 ms apart: never a 100 ms pause, so only the 500 ms cap publishes during it.
    const started = performance.now();
    for (let i = 0; i < 150; i++) {
      await store.create(newServiceObject(`burst-${i}`, `10.98.0.${i + 1}`, { app: `burst-${i}` }));
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    const duringBurst = a.configs.length - versionsBefore;
    const burstMs = performance.now() - started;
    await eventually(() => expect(a.services.has("default/burst-149")).toBe(true));
    expect(duringBurst, `tables during a burst of ${burstMs.toFixed(0)} ms`).toBeGreaterThanOrEqual(2);
    // One per 500 ms, and a few more where a loaded machine paused the burst (a fixed 100 ms window
    // would publish one per 100 ms).
    expect(duringBurst).toBeLessThanOrEqual(Math.ceil(burstMs / 500) + 3);
  });

  it("sends a large Config compressed in the first encoding an agent lists that it writes, plain to others; a NACK of one is answered plain", async () => {
    const { store } = await startWorld();
    // 3000 Services without endpoints: a full table of about 120 KB, past COMPRESS_CONFIGS_FROM_BYTES.
    for (let i = 0; i < 3000; i++) {
      await store.create(newServiceObject(`svc-${i}`, `10.97.${i >> 8}.${i & 255}`, { app: `svc-${i}` }));
    }
    const reads = agent("node-a", { configEncodings: ["br"] });
    const plain = agent("node-b");
    const unknown = agent("node-c", { configEncodings: ["lz4"] });
    const zstd = agent("node-e", { configEncodings: ["lz4", "zstd", "br"] });
    for (const a of [reads, plain, unknown, zstd]) await converged(a);
    expect(reads.configs[0]!.full).toBe(true);
    expect(reads.compressedVersions).toContain(reads.configs[0]!.version);
    expect(new Set(reads.compressedEncodings)).toEqual(new Set(["br"]));
    expect(zstd.compressedVersions).toContain(zstd.configs[0]!.version);
    expect(new Set(zstd.compressedEncodings)).toEqual(new Set(["zstd"]));
    expect(plain.compressedVersions).toEqual([]);
    expect(unknown.compressedVersions).toEqual([]);
    expect(reads.services.size).toBe(3002);
    expect([...reads.services.entries()]).toEqual([...plain.services.entries()]);
    expect([...zstd.services.entries()]).toEqual([...plain.services.entries()]);
    // A small update goes plain to everyone.
    const compressedSoFar = reads.compressedVersions.length;
    await store.create(newServiceObject("db", "10.96.0.12", { app: "db" }));
    await eventually(() => expect(reads.services.has("default/db")).toBe(true));
    expect(reads.compressedVersions.length).toBe(compressedSoFar);

    // An agent that cannot read what it got compressed NACKs it: the table comes again, plain (the
    // same version, or a newer one if the node's arrival built one meanwhile), and stays plain.
    const refuses = agent("node-d", { configEncodings: ["br"] });
    refuses.decide = (config) =>
      refuses.compressedVersions.includes(config.version) ? { nack: "compressed config unreadable" } : "ack";
    await converged(refuses);
    const [first, second] = refuses.configs;
    expect(refuses.compressedVersions).toEqual([first!.version]);
    expect(second!.full).toBe(true);
    expect(refuses.services.size).toBe(3003);
  });
});
