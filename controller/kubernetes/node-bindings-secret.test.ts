// Node bindings in Kubernetes mode, against the stand-in API server: two replicas share one Secret;
// a race for a free name has one winner; a binding or a release made on one replica holds on the
// other; a restarted replica keeps the bindings; without the API server a claim fails (and the
// agent server refuses it with UNAVAILABLE) instead of binding in memory only.
import { status as GrpcStatus, Metadata } from "@grpc/grpc-js";
import pino from "pino";
import { Registry } from "prom-client";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { NODE_SECRET_METADATA } from "../../api/agent-service.ts";
import { FakeApiServer } from "../../test/kubernetes/api-server.ts";
import { kubeConfigFor } from "../../test/kubernetes/kubeconfig.ts";
import { AgentServer } from "../config/agent-server.ts";
import type { AgentSession } from "../config/agent-session.ts";
import { MemoryStore } from "../store/memory-store.ts";
import { KubeClient } from "./kube-client.ts";
import { NODE_BINDINGS_SECRET_NAME, SecretNodeBindings } from "./node-bindings-secret.ts";

const NS = "nodemesh-system";
const SECRET_A = "a".repeat(43);
const SECRET_B = "b".repeat(43);
const now = new Date("2026-12-03T10:00:00Z");

let api: FakeApiServer;
const replicas: SecretNodeBindings[] = [];

beforeEach(async () => {
  api = new FakeApiServer({ bookmarkIntervalMs: 0 });
  await api.start();
});

afterEach(async () => {
  for (const r of replicas.splice(0)) {
    await r.flush();
    r.close();
  }
  await api.stop();
});

function replica(): SecretNodeBindings {
  const r = new SecretNodeBindings({
    client: new KubeClient(kubeConfigFor(api.url)),
    namespace: NS,
    log: pino({ level: "silent" }),
    refreshMs: 0,
  });
  replicas.push(r);
  return r;
}

describe("SecretNodeBindings", () => {
  it("lets exactly one of two racing replicas bind a free name", async () => {
    const [one, two] = [replica(), replica()];
    for (let round = 0; round < 5; round++) {
      const node = `node-${round}`;
      const results = await Promise.all([one.claim(node, SECRET_A, now), two.claim(node, SECRET_B, now)]);
      expect([...results].sort()).toEqual(["bound", "mismatch"]);
      // Both agree with the Secret on who won.
      const winner = results[0] === "bound" ? SECRET_A : SECRET_B;
      expect(await one.claim(node, winner, now)).toBe("matches");
      expect(await two.claim(node, winner, now)).toBe("matches");
    }
    const conflicts = api.requests.filter((r) => r.method === "PUT" || r.method === "POST");
    expect(conflicts.length).toBeGreaterThan(5); // the losers' writes were refused and decided again
    expect(Object.keys(api.get("secrets", NS, NODE_BINDINGS_SECRET_NAME)?.data ?? {}).sort()).toEqual([
      "node-0",
      "node-1",
      "node-2",
      "node-3",
      "node-4",
    ]);
  });

  it("refuses on one replica a name bound on the other; a release on one frees it on the other", async () => {
    const [one, two] = [replica(), replica()];
    expect(await one.claim("node-a", SECRET_A, now)).toBe("bound");
    expect(await two.claim("node-a", SECRET_B, now)).toBe("mismatch");
    expect(two.list()).toEqual([{ node: "node-a", boundAt: now.toISOString() }]);
    expect(two.boundAt("node-a")).toBe(now.toISOString());
    expect(two.boundAt("node-b")).toBeUndefined();
    expect(await one.release("node-a")).toBe(true);
    expect(await one.release("node-a")).toBe(false);
    expect(await two.claim("node-a", SECRET_B, now)).toBe("bound");
    expect(await one.claim("node-a", SECRET_A, now)).toBe("mismatch");
  });

  it("keeps the bindings across a restart (they live in the Secret)", async () => {
    const first = replica();
    expect(await first.claim("node-a", SECRET_A, now)).toBe("bound");
    first.close();
    const restarted = replica();
    await restarted.load();
    expect(restarted.list().map((b) => b.node)).toEqual(["node-a"]);
    expect(restarted.size).toBe(1);
    expect(await restarted.claim("node-a", SECRET_B, now)).toBe("mismatch");
    expect(await restarted.claim("node-a", SECRET_A, now)).toBe("matches");
  });
});

describe("the agent server with bindings in Kubernetes", () => {
  let server: AgentServer | undefined;
  const servers: AgentServer[] = [];
  afterEach(async () => {
    await server?.stop();
    server = undefined;
    for (const s of servers.splice(0)) await s.stop();
  });

  async function controllerReplica(): Promise<AgentServer> {
    const s = await AgentServer.start({
      store: new MemoryStore(),
      metrics: new Registry(),
      host: "127.0.0.1",
      port: 0,
      insecureAgents: true,
      bindings: replica(),
      log: pino({ level: "silent" }),
    });
    servers.push(s);
    return s;
  }

  function fakeSession(): AgentSession {
    return { closed: false, node: "node-a", end: () => {} } as unknown as AgentSession;
  }

  function claimOf(secret: string) {
    const metadata = new Metadata();
    metadata.set(NODE_SECRET_METADATA, secret);
    return { metadata, peer: "test" };
  }

  it("two replicas: one binding per name, refused on the other with another secret, released for both", async () => {
    const [one, two] = [await controllerReplica(), await controllerReplica()];
    const hello = { nodeName: "node-a", agentVersion: "test", underlayIp: "10.0.0.1", facts: {} } as never;
    const [first, second] = await Promise.all([
      one.claim(fakeSession(), hello, claimOf(SECRET_A)),
      two.claim(fakeSession(), hello, claimOf(SECRET_B)),
    ]);
    // Exactly one of the racing agents is accepted.
    expect([first?.code, second?.code].filter((c) => c === undefined)).toHaveLength(1);
    const winner = first === undefined ? SECRET_A : SECRET_B;
    const loser = winner === SECRET_A ? SECRET_B : SECRET_A;
    expect((await one.claim(fakeSession(), hello, claimOf(loser)))?.code).toBe(GrpcStatus.PERMISSION_DENIED);
    expect((await two.claim(fakeSession(), hello, claimOf(loser)))?.code).toBe(GrpcStatus.PERMISSION_DENIED);
    // The operator releases through one replica (REST DELETE .../nodebindings/node-a); the other binds anew.
    expect(await one.releaseNode("node-a")).toBe(true);
    expect(await two.claim(fakeSession(), hello, claimOf(loser))).toBeUndefined();
    expect((await one.claim(fakeSession(), hello, claimOf(winner)))?.code).toBe(GrpcStatus.PERMISSION_DENIED);
  });

  it("refuses a claim with UNAVAILABLE when the API server cannot be reached, and binds nothing", async () => {
    const bindings = replica();
    server = await AgentServer.start({
      store: new MemoryStore(),
      metrics: new Registry(),
      host: "127.0.0.1",
      port: 0,
      insecureAgents: true,
      bindings,
      log: pino({ level: "silent" }),
    });
    const hello = { nodeName: "node-a", agentVersion: "test", underlayIp: "10.0.0.1", facts: {} } as never;
    await api.down();
    const refusal = await server.claim(fakeSession(), hello, claimOf(SECRET_A));
    expect(refusal?.code).toBe(GrpcStatus.UNAVAILABLE);
    expect(server.nodeBindings()).toEqual([]);
    await api.up();
    expect(api.get("secrets", NS, NODE_BINDINGS_SECRET_NAME)).toBeUndefined();
    // Back: the same agent binds; another secret is then refused.
    expect(await server.claim(fakeSession(), hello, claimOf(SECRET_A))).toBeUndefined();
    const other = await server.claim(fakeSession(), hello, claimOf(SECRET_B));
    expect(other?.code).toBe(GrpcStatus.PERMISSION_DENIED);
  });
});
