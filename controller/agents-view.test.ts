// The agents list over REST: every probe and pod by default, summaries only with ?peers=summary,
// every probe only in a mesh small enough for a matrix with ?peers=matrix, counts only with
// ?pods=count, and a clear 400 for any other value.
import { afterEach, describe, expect, it } from "vitest";
import { type Hello, MATRIX_MAX_NODES, type PeerProbe } from "../api/agent-service.ts";
import { agentsView } from "./agents-view.ts";
import { AgentRegistry } from "./config/agent-registry.ts";
import { startTestServer, type TestServer } from "./rest/test-server.fixture.ts";

const AGENTS = "/apis/nodemesh.io/v1alpha1/agents";
const probe = (nodeName: string, rttMs: number, lossRatio = 0, error = ""): PeerProbe => ({
  nodeName,
  rttMs,
  lossRatio,
  error,
});

describe("the agents view", () => {
  let t: TestServer;
  afterEach(async () => {
    await t.rest.close();
  });

  const hello = (nodeName: string): Hello => ({
    nodeName,
    agentVersion: "test",
    underlayIp: "10.250.0.1",
    facts: {} as Hello["facts"],
  });

  function startView(registry: AgentRegistry): Promise<TestServer> {
    return startTestServer({
      views: { agents: agentsView({ agents: (detail) => registry.list(detail), configVersion: () => "7.1" }) },
    });
  }

  async function serve(): Promise<void> {
    const registry = new AgentRegistry({ forgetAfterMs: 60_000, onTopologyChange: () => {} });
    for (const node of ["node-1", "node-2"]) registry.connected(hello(node), {}, new Date());
    const peers = [probe("node-2", 0.4), probe("node-3", 3.5, 0.25), probe("node-4", 0, 1), probe("node-5", 0.2)];
    registry.reported(
      "node-1",
      {
        health: { ready: true, detail: "" },
        pods: [{ name: "web-1", namespace: "shop", ip: "10.1.0.11", labels: { app: "web" } }],
        traffic: { connectionsOpened: 0, connectionsClosed: 0, bytesReceived: 0, bytesSent: 0 },
        peers,
        edges: [],
        intervalSeconds: 5,
      },
      new Date(),
    );
    t = await startView(registry);
  }

  it("lists every probe by default, with each node's summary", async () => {
    await serve();
    const { status, body } = await t.call("GET", AGENTS);
    expect(status).toBe(200);
    const [one, two] = body.items;
    expect(one.currentVersion).toBe("7.1");
    expect(one.peers.map((p: PeerProbe) => p.nodeName)).toEqual(["node-2", "node-3", "node-4", "node-5"]);
    expect(one.peerSummary).toEqual({
      probed: 4,
      unreachable: 1,
      lossy: 1,
      rttMedianMs: 0.4,
      rttMaxMs: 3.5,
      slowestPeer: "node-3",
    });
    expect(two.peers).toEqual([]);
    expect(two.peerSummary).toEqual({
      probed: 0,
      unreachable: 0,
      lossy: 0,
      rttMedianMs: null,
      rttMaxMs: null,
      slowestPeer: null,
    });
    expect(one.pods.map((p: { name: string }) => p.name)).toEqual(["web-1"]);
    expect([one.podCount, two.podCount]).toEqual([1, 0]);
    expect((await t.call("GET", `${AGENTS}?peers=all&pods=all`)).body).toEqual(body);
  });

  it("leaves the probes out with ?peers=summary, and refuses any other value", async () => {
    await serve();
    const { status, body } = await t.call("GET", `${AGENTS}?peers=summary`);
    expect(status).toBe(200);
    expect(body.items.map((a: { peers?: unknown }) => a.peers)).toEqual([undefined, undefined]);
    expect(body.items[0].peerSummary.slowestPeer).toBe("node-3");
    for (const query of ["peers=some", "peers=all&peers=summary", "peers="]) {
      const refused = await t.call("GET", `${AGENTS}?${query}`);
      expect(refused.status).toBe(400);
      expect(refused.body.message).toMatch(/^peers: "all" or "summary" or "matrix" \(got /);
    }
  });

  it("with ?peers=matrix lists the probes of a mesh of up to 40 nodes, and sums up those of a larger one", async () => {
    const registry = new AgentRegistry({ forgetAfterMs: 60_000, onTopologyChange: () => {} });
    t = await startView(registry);
    const withProbes = async () => {
      const { status, body } = await t.call("GET", `${AGENTS}?peers=matrix&pods=count`);
      expect(status).toBe(200);
      expect(body.items.every((a: { peerSummary?: unknown }) => a.peerSummary)).toBe(true);
      return body.items.filter((a: { peers?: unknown }) => a.peers).length;
    };
    for (let i = 0; i < MATRIX_MAX_NODES; i++) registry.connected(hello(`node-${i}`), {}, new Date());
    expect(await withProbes()).toBe(MATRIX_MAX_NODES);
    registry.connected(hello("node-one-too-many"), {}, new Date());
    expect(await withProbes()).toBe(0);
  });

  it("leaves the pods out with ?pods=count, their number kept, and refuses any other value", async () => {
    await serve();
    const { status, body } = await t.call("GET", `${AGENTS}?peers=summary&pods=count`);
    expect(status).toBe(200);
    expect(body.items.map((a: { pods?: unknown }) => a.pods)).toEqual([undefined, undefined]);
    expect(body.items.map((a: { podCount: number }) => a.podCount)).toEqual([1, 0]);
    expect(body.items[0].peers).toBeUndefined();
    for (const query of ["pods=none", "pods=all&pods=count"]) {
      const refused = await t.call("GET", `${AGENTS}?${query}`);
      expect(refused.status).toBe(400);
      expect(refused.body.message).toMatch(/^pods: "all" or "count" \(got /);
    }
  });
});
