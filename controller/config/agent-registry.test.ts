// The registry's pods in Kubernetes mode: a reported pod counts only as the API server has it, is
// checked again when the API's pods change, and each refusal is told once.
import { describe, expect, it } from "vitest";
import type { Hello, WirePod } from "../../api/agent-service.ts";
import { AgentRegistry, type PodVerifier } from "./agent-registry.ts";
import { emptyReport } from "./testing/fixtures.ts";

const hello = (nodeName: string): Hello => ({
  nodeName,
  agentVersion: "test",
  underlayIp: "10.0.0.1",
  facts: {} as Hello["facts"],
});
const podsOf = (registry: AgentRegistry) => [...registry.podsByNode().values()].flat();
const web: WirePod = {
  name: "web-1",
  namespace: "shop",
  ip: "10.1.0.11",
  labels: { app: "claimed" },
  serviceAccount: "web",
};

describe("AgentRegistry with a pod verifier", () => {
  it("keeps only verified pods, with the API's labels; checks again when the API changes", () => {
    // The API server's view: the pod has no address yet.
    let apiAddress: string | undefined;
    const verify: PodVerifier = (node, pod) =>
      node === "node-a" && apiAddress === pod.ip
        ? { ok: true, pod: { ...pod, labels: { app: "web" } } }
        : { ok: false, reason: `its address is ${apiAddress ?? "not assigned yet"}` };
    const refused: string[] = [];
    let changes = 0;
    const registry = new AgentRegistry({
      forgetAfterMs: 60_000,
      onTopologyChange: () => changes++,
      verifyPod: verify,
      onRefused: (node, pod, reason) => refused.push(`${node} ${pod.name}: ${reason}`),
    });
    registry.connected(hello("node-a"), {}, new Date());
    registry.connected(hello("node-b"), {}, new Date());
    const before = changes;
    registry.podsChanged("node-a", [web]);
    registry.podsChanged("node-a", [web]); // a report repeats it: told once
    expect(podsOf(registry)).toEqual([]);
    expect(refused).toEqual(["node-a web-1: its address is not assigned yet"]);
    expect(changes).toBe(before);

    apiAddress = "10.1.0.11";
    registry.reverify();
    expect(podsOf(registry)).toEqual([{ ...web, labels: { app: "web" }, node: "node-a" }]);
    expect(changes).toBe(before + 1);

    // Another node claiming the same pod gets nothing: no endpoint, and so no certificate.
    registry.podsChanged("node-b", [web]);
    expect(podsOf(registry).map((p) => p.node)).toEqual(["node-a"]);
    expect(refused.at(-1)).toBe("node-b web-1: its address is 10.1.0.11");
  });

  it("without a verifier keeps what the agents report (standalone)", () => {
    const registry = new AgentRegistry({ forgetAfterMs: 60_000, onTopologyChange: () => {} });
    registry.connected(hello("node-a"), {}, new Date());
    registry.podsChanged("node-a", [web, { ...web, name: "Not_A_Label" }]);
    expect(podsOf(registry)).toEqual([{ ...web, node: "node-a" }]);
  });

  it("takes a pod whose service account alone changed: its endpoint's identity follows", () => {
    let changes = 0;
    const registry = new AgentRegistry({ forgetAfterMs: 60_000, onTopologyChange: () => changes++ });
    registry.connected(hello("node-a"), {}, new Date());
    registry.podsChanged("node-a", [web]);
    const before = changes;
    registry.podsChanged("node-a", [{ ...web }]); // the same pod again: nothing to do
    expect(changes).toBe(before);
    // Enrolled again under another service account, same name, address and labels.
    registry.podsChanged("node-a", [{ ...web, serviceAccount: "web-v2" }]);
    expect(podsOf(registry)).toEqual([{ ...web, serviceAccount: "web-v2", node: "node-a" }]);
    expect(changes).toBe(before + 1);
    // And by a delta: the default service account again.
    registry.podsDelta("node-a", [{ ...web, serviceAccount: "" }], []);
    expect(podsOf(registry)).toEqual([{ ...web, serviceAccount: "", node: "node-a" }]);
    expect(changes).toBe(before + 2);
  });
});

describe("AgentRegistry with pod deltas", () => {
  const pod = (i: number): WirePod => ({ ...web, name: `web-${i}`, ip: `10.1.0.${i}` });
  const names = (registry: AgentRegistry) => podsOf(registry).map((p) => p.name);

  it("applies upserts and removals on top of the whole list, and a whole list replaces them", () => {
    let changes = 0;
    const registry = new AgentRegistry({ forgetAfterMs: 60_000, onTopologyChange: () => changes++ });
    registry.connected(hello("node-a"), {}, new Date());
    registry.podsChanged("node-a", [pod(1), pod(2)]);
    registry.podsDelta("node-a", [pod(3)], ["shop/web-1"]);
    expect(names(registry)).toEqual(["web-2", "web-3"]);

    // Enrolled again with other labels: replaced in place.
    registry.podsDelta("node-a", [{ ...pod(2), labels: { app: "web", version: "v2" } }], []);
    expect(podsOf(registry).find((p) => p.name === "web-2")?.labels).toEqual({ app: "web", version: "v2" });

    // Nothing that changes the endpoints (a removal of a pod not known): no new table.
    const before = changes;
    registry.podsDelta("node-a", [], ["shop/web-9"]);
    expect(changes).toBe(before);

    // An upserted pod that cannot be an endpoint drops the one it replaces.
    registry.podsDelta("node-a", [{ ...pod(3), ip: "not-an-ip" }], []);
    expect(names(registry)).toEqual(["web-2"]);

    // A report's whole list is the truth: what a lost delta left out comes back.
    registry.podsChanged("node-a", [pod(1), pod(2)]);
    expect(names(registry)).toEqual(["web-1", "web-2"]);
  });

  it("keeps a node's pods through reports that leave them out; an older agent's report with its list replaces them", () => {
    let changes = 0;
    const registry = new AgentRegistry({ forgetAfterMs: 60_000, onTopologyChange: () => changes++ });
    registry.connected(hello("node-a"), {}, new Date());
    registry.podsChanged("node-a", [pod(1), pod(2)]);
    const before = changes;
    registry.reported("node-a", emptyReport({ podsOmitted: true }), new Date());
    expect(names(registry)).toEqual(["web-1", "web-2"]);
    expect(changes).toBe(before);
    expect(registry.list()[0]!.lastReport).not.toHaveProperty("podsOmitted");
    // An agent from before Report.podsOmitted: its report's list is the node's list, empty included.
    registry.reported("node-a", emptyReport({ pods: [pod(3)] }), new Date());
    expect(names(registry)).toEqual(["web-3"]);
    registry.reported("node-a", emptyReport(), new Date());
    expect(names(registry)).toEqual([]);
  });

  it("ignores a delta from a node it does not know", () => {
    const registry = new AgentRegistry({ forgetAfterMs: 60_000, onTopologyChange: () => {} });
    registry.podsDelta("node-x", [pod(1)], []);
    expect(podsOf(registry)).toEqual([]);
  });
});
