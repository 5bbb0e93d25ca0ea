import { describe, expect, it } from "vitest";
import { PodIndex } from "./pod-index.ts";
import { pod } from "./testing/fixtures.ts";

const names = (pods: readonly { namespace: string; name: string }[]) =>
  pods.map((p) => `${p.namespace}/${p.name}`).sort();

describe("PodIndex", () => {
  const web1 = pod("web-1", "10.1.0.11", { app: "web", tier: "front" }, "node-a");
  const web2 = pod("web-2", "10.1.0.12", { app: "web" }, "node-b");
  const api1 = pod("api-1", "10.1.0.21", { app: "api" }, "node-a");
  const staged = pod("web-9", "10.1.0.31", { app: "web" }, "node-a", "staging");

  it("selects by every label of the selector, in the selector's namespace; an empty selector picks all", () => {
    const index = PodIndex.of([web1, web2, api1, staged]);
    expect(names(index.select("default", { app: "web" }))).toEqual(["default/web-1", "default/web-2"]);
    expect(names(index.select("default", { app: "web", tier: "front" }))).toEqual(["default/web-1"]);
    expect(index.select("default", { app: "web", tier: "back" })).toEqual([]);
    expect(names(index.select("default", {}))).toEqual(["default/api-1", "default/web-1", "default/web-2"]);
    expect(names(index.select("staging", { app: "web" }))).toEqual(["staging/web-9"]);
    expect(index.select("nowhere", {})).toEqual([]);
  });

  it("reports only the pods that changed, as they were and as they are; unchanged nodes are skipped", () => {
    const index = new PodIndex();
    const nodeA = [web1, api1];
    const nodeB = [web2];
    expect(
      names(
        index.update(
          new Map([
            ["node-a", nodeA],
            ["node-b", nodeB],
          ]),
        ),
      ),
    ).toEqual(["default/api-1", "default/web-1", "default/web-2"]);
    // The same arrays: nothing to look at.
    expect(
      index.update(
        new Map([
          ["node-a", nodeA],
          ["node-b", nodeB],
        ]),
      ),
    ).toEqual([]);
    // node-a reports again: api-1 relabelled, web-1 the same (a new object with equal content), web-3 new.
    const relabelled = pod("api-1", "10.1.0.21", { app: "api", version: "v2" }, "node-a");
    const web3 = pod("web-3", "10.1.0.13", { app: "web" }, "node-a");
    const changed = index.update(
      new Map([
        ["node-a", [{ ...web1 }, relabelled, web3]],
        ["node-b", nodeB],
      ]),
    );
    expect(changed).toEqual([api1, relabelled, web3]);
    expect(names(index.select("default", { version: "v2" }))).toEqual(["default/api-1"]);
    expect(names(index.select("default", { app: "web" }))).toEqual(["default/web-1", "default/web-2", "default/web-3"]);
    // node-b is gone, and web-3 left node-a: both are changes, and neither is selected any more.
    const gone = index.update(new Map([["node-a", [web1, relabelled]]]));
    expect(names(gone)).toEqual(["default/web-2", "default/web-3"]);
    expect(names(index.select("default", { app: "web" }))).toEqual(["default/web-1"]);
    expect(index.select("default", { app: "api", version: "v1" })).toEqual([]);
  });

  it("sees a new address, identity or label value as a change, and the same labels in another order as none", () => {
    const index = PodIndex.of([web1, api1]);
    const report = (...pods: (typeof web1)[]) => index.update(new Map([["node-a", pods]]));
    const reordered = { ...web1, labels: { tier: "front", app: "web" } };
    expect(report(reordered, api1)).toEqual([]);
    const moved = { ...api1, ip: "10.1.0.22" };
    expect(report(reordered, moved)).toEqual([api1, moved]);
    const withIdentity = { ...moved, serviceAccount: "api" };
    expect(report(reordered, withIdentity)).toEqual([moved, withIdentity]);
    // As many labels as before, one of them another value (and one swapped for another key).
    const retiered = { ...web1, labels: { app: "web", tier: "back" } };
    const rekeyed = { ...withIdentity, labels: { role: "api" } };
    expect(report(retiered, rekeyed)).toEqual([web1, retiered, withIdentity, rekeyed]);
    expect(names(index.select("default", { tier: "back" }))).toEqual(["default/web-1"]);
    expect(index.select("default", { app: "api" })).toEqual([]);
  });

  it("forgets a label and a namespace with their last pod", () => {
    const index = new PodIndex();
    index.update(new Map([["node-a", [staged]]]));
    index.update(new Map([["node-a", []]]));
    expect(index.select("staging", {})).toEqual([]);
    expect(index.select("staging", { app: "web" })).toEqual([]);
  });
});
