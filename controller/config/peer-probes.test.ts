// A node's probes as the registry holds them: numbers and interned names, read back as reported.
import { describe, expect, it } from "vitest";
import type { Hello, PeerProbe, Report } from "../../api/agent-service.ts";
import { AgentRegistry } from "./agent-registry.ts";
import { PeerProbes } from "./peer-probes.ts";

const probes: PeerProbe[] = [
  { nodeName: "node-a", rttMs: 0.125, lossRatio: 0, error: "" },
  { nodeName: "node-b", rttMs: 0, lossRatio: 1, error: "" },
  { nodeName: "node-c", rttMs: 0, lossRatio: 1, error: "cannot open an ICMP raw socket: EPERM" },
  { nodeName: "node-d", rttMs: 17.5, lossRatio: 1 / 3, error: "" },
];

/** An intern that keeps each name and records the names it was asked for. */
function namesAskedFor() {
  const asked: string[] = [];
  const intern = (name: string) => {
    asked.push(name);
    return name;
  };
  return { asked, intern };
}

describe("PeerProbes", () => {
  it("reads back what was reported: names, RTTs, losses and errors", () => {
    expect(PeerProbes.from(probes, (name) => name).list()).toEqual(probes);
    expect(PeerProbes.NONE.list()).toEqual([]);
  });

  it("sums a round up: unreachable (lost or an error), with loss, median and slowest of those answering", () => {
    expect(PeerProbes.from(probes, (name) => name).summary()).toEqual({
      probed: 4,
      unreachable: 2,
      lossy: 1,
      rttMedianMs: 0.125,
      rttMaxMs: 17.5,
      slowestPeer: "node-d",
    });
    const three = [0.3, 0.1, 0.2].map((rttMs, i) => ({ nodeName: `n${i}`, rttMs, lossRatio: 0, error: "" }));
    expect(PeerProbes.from(three, (name) => name).summary()).toMatchObject({ rttMedianMs: 0.2, slowestPeer: "n0" });
  });

  it("holds each name as the controller already does", () => {
    const held = new Map([["node-a", "node-a (held)"]]);
    const names = PeerProbes.from(probes, (name) => held.get(name) ?? name)
      .list()
      .map((p) => p.nodeName);
    expect(names).toEqual(["node-a (held)", "node-b", "node-c", "node-d"]);
  });

  it("asks for a name only where the round does not line up with the previous one", () => {
    const { asked, intern } = namesAskedFor();
    const first = PeerProbes.from(probes, intern);
    asked.length = 0;
    const reordered = [probes[0]!, probes[2]!, probes[1]!, probes[3]!];
    expect(PeerProbes.from(reordered, intern, first).list()).toEqual(reordered);
    expect(asked).toEqual(["node-c", "node-b"]);
  });

  it("takes in only the peers probed since (peersChangedOnly): the rest keep their probes", () => {
    const { asked, intern } = namesAskedFor();
    const held = PeerProbes.from(probes, intern);
    expect(held.summary()).toMatchObject({ unreachable: 2, rttMaxMs: 17.5, slowestPeer: "node-d" });
    asked.length = 0;
    const changed: PeerProbe[] = [
      { nodeName: "node-c", rttMs: 0.25, lossRatio: 0, error: "" }, // reachable again: its error goes
      { nodeName: "node-a", rttMs: 0, lossRatio: 1, error: "sendto: EPERM" },
      { nodeName: "node-d", rttMs: 0.5, lossRatio: 0, error: "" },
    ];
    // Every name held: the rows are written in place, and the summary is worked out again.
    expect(held.merged(changed, intern)).toBe(held);
    expect(held.list()).toEqual([changed[1], probes[1], changed[0], changed[2]]);
    expect(asked).toEqual([]);
    expect(held.summary()).toEqual({
      probed: 4,
      unreachable: 2,
      lossy: 0,
      rttMedianMs: 0.25,
      rttMaxMs: 0.5,
      slowestPeer: "node-d",
    });
    // A peer not held (a node that joined) grows the rows, into new ones; nothing changed, nothing new.
    const joined = { nodeName: "node-e", rttMs: 1, lossRatio: 0, error: "" };
    const grown = held.merged([joined, { ...changed[0]!, rttMs: 0.75 }], intern);
    expect(grown).not.toBe(held);
    expect(grown.list()).toEqual([changed[1], probes[1], { ...changed[0], rttMs: 0.75 }, changed[2], joined]);
    expect(held.list()).toHaveLength(4);
    expect(asked).toEqual(["node-e"]);
    expect(grown.merged([], intern)).toBe(grown);
    // The shared empty rows are never written: what is reported to them has joined.
    expect(PeerProbes.NONE.merged([joined], intern).list()).toEqual([joined]);
    expect(PeerProbes.NONE.list()).toEqual([]);
  });
});

describe("AgentRegistry's reports", () => {
  const hello = (nodeName: string): Hello => ({
    nodeName,
    agentVersion: "test",
    underlayIp: "10.0.0.1",
    facts: {} as Hello["facts"],
  });
  const report = (peers: PeerProbe[]): Report => ({
    health: { ready: true, detail: "" },
    pods: [{ name: "web-1", namespace: "shop", ip: "10.1.0.11", labels: { app: "web" } }],
    traffic: { connectionsOpened: 3, connectionsClosed: 2, bytesReceived: 10, bytesSent: 20 },
    peers,
    edges: [],
    intervalSeconds: 5,
  });

  it("serves the latest probes as peers, and the report's own fields apart from its lists", () => {
    const registry = new AgentRegistry({ forgetAfterMs: 60_000, onTopologyChange: () => {} });
    registry.connected(hello("node-a"), {}, new Date());
    expect(registry.list()[0]!.peers).toEqual([]);
    registry.reported("node-a", report(probes), new Date("2026-12-06T00:00:00Z"));
    registry.reported("node-a", report(probes.slice(0, 2)), new Date("2026-12-06T00:00:05Z"));
    const [status] = registry.list();
    expect(status!.peers).toEqual(probes.slice(0, 2));
    expect(status!.lastReport).toEqual({
      at: "2026-12-06T00:00:05.000Z",
      health: { ready: true, detail: "" },
      traffic: { connectionsOpened: 3, connectionsClosed: 2, bytesReceived: 10, bytesSent: 20 },
      intervalSeconds: 5,
    });
    expect(status!.pods!.map((p) => p.name)).toEqual(["web-1"]);
    // A reconnecting agent keeps its last probes until it reports again.
    registry.connected(hello("node-a"), {}, new Date());
    expect(registry.list()[0]!.peers).toEqual(probes.slice(0, 2));
  });

  it("merges a report of the probes taken since the previous one, and replaces them on a full one", () => {
    const registry = new AgentRegistry({ forgetAfterMs: 60_000, onTopologyChange: () => {} });
    registry.connected(hello("node-a"), {}, new Date());
    registry.reported("node-a", report(probes), new Date());
    const node_b = { nodeName: "node-b", rttMs: 0.5, lossRatio: 0, error: "" };
    registry.reported("node-a", { ...report([node_b]), peersChangedOnly: true }, new Date());
    expect(registry.list()[0]!.peers).toEqual([probes[0], node_b, probes[2], probes[3]]);
    expect(registry.list()[0]!.lastReport).not.toHaveProperty("peersChangedOnly");
    registry.reported("node-a", { ...report([node_b]), peersChangedOnly: false }, new Date());
    expect(registry.list()[0]!.peers).toEqual([node_b]);
  });
});
