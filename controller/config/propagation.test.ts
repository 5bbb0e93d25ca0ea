import { describe, expect, it } from "vitest";
import { PropagationTracker } from "./propagation.ts";
import { buildServiceTable } from "./service-table.ts";
import { httpRouteResource, serviceResource } from "./testing/fixtures.ts";

function table(version: string, generations: Record<string, number>) {
  const services = Object.entries(generations).map(([name, generation]) =>
    serviceResource(name, { generation, vip: `10.96.0.${name.length}` }),
  );
  return buildServiceTable({ version, services, pods: [], nodes: [] });
}

describe("PropagationTracker", () => {
  const web = "services/default/web";

  it("counts agents that ACKed a version carrying the resource's current generation", () => {
    const t = new PropagationTracker();
    t.agentConnected("a");
    t.agentConnected("b");
    t.recordTable(table("1.0", { web: 1 }), []);
    t.recordTable(table("2.0", { web: 1, db: 1 }), []); // web unchanged: still "since 1.0"
    expect(t.status(web)).toEqual({ observedGeneration: 1, agentsApplied: 0, agentsTotal: 2 });
    t.agentAcked("a", "2.0", Date.parse("2025-01-01T00:00:01Z"));
    expect(t.status(web)).toEqual({
      observedGeneration: 1,
      agentsApplied: 1,
      agentsTotal: 2,
      lastAppliedTime: "2025-01-01T00:00:01.000Z",
    });
    t.recordTable(table("3.0", { web: 2, db: 1 }), []); // a new generation starts over
    expect(t.status(web)).toMatchObject({ observedGeneration: 2, agentsApplied: 0 });
    expect(t.status("services/default/db")).toMatchObject({ agentsApplied: 1 });
    t.recordTable(table("4.0", { db: 1 }), []);
    expect(t.status(web)).toBeUndefined();
  });

  it("measures each write once, when the last connected agent ACKs", () => {
    const t = new PropagationTracker();
    t.agentConnected("a");
    t.agentConnected("b");
    t.recordTable(table("1.0", { web: 1 }), [1000, 1010]);
    expect(t.agentAcked("a", "1.0", 1100)).toEqual([]);
    expect(t.agentAcked("b", "1.0", 1250)).toEqual([0.25, 0.24]);
    expect(t.agentAcked("b", "1.0", 1300)).toEqual([]);
  });

  it("lets a disconnecting straggler complete a write, and ignores writes nobody could receive", () => {
    const t = new PropagationTracker();
    t.recordTable(table("1.0", { web: 1 }), [500]); // no agent connected: not measured
    t.agentConnected("a");
    t.agentConnected("b");
    t.recordTable(table("2.0", { web: 2 }), [1000]);
    expect(t.agentAcked("a", "2.0", 1100)).toEqual([]);
    expect(t.agentDisconnected("b", 1200)).toEqual([0.2]);
  });

  it("tracks traffic objects like Services, under <plural>/<namespace>/<name>", () => {
    const t = new PropagationTracker();
    t.agentConnected("a");
    const withRoute = (version: string, generation: number) =>
      buildServiceTable({
        version,
        services: [],
        pods: [],
        nodes: [],
        traffic: [httpRouteResource("r", { generation })],
      });
    t.recordTable(withRoute("1.0", 1), []);
    t.agentAcked("a", "1.0", 1000);
    expect(t.status("httproutes/default/r")).toMatchObject({ observedGeneration: 1, agentsApplied: 1, agentsTotal: 1 });
    t.recordTable(withRoute("2.0", 2), []);
    expect(t.status("httproutes/default/r")).toMatchObject({ observedGeneration: 2, agentsApplied: 0 });
  });
});
