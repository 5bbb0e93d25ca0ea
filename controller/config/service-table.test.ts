import { describe, expect, it } from "vitest";
import { fromWireService } from "../../api/agent-service.ts";
import { validateServiceTable } from "../../api/services.ts";
import { diffTables } from "./config-diff.ts";
import { buildServiceTable, selectorMatches } from "./service-table.ts";
import { pod, serviceResource } from "./testing/fixtures.ts";
import { compareVersions, formatVersion } from "./version.ts";

const nodes = [
  { name: "node-b", underlayIp: "10.0.0.2" },
  { name: "node-a", underlayIp: "10.0.0.1" },
];

describe("selectorMatches", () => {
  it("needs every selector label with the same value; extra pod labels are fine", () => {
    expect(selectorMatches({ app: "web" }, { app: "web", tier: "front" })).toBe(true);
    expect(selectorMatches({ app: "web", tier: "front" }, { app: "web" })).toBe(false);
    expect(selectorMatches({ app: "web" }, { app: "api" })).toBe(false);
  });
});

describe("buildServiceTable", () => {
  it("selects enrolled pods of the service's namespace by label, all meshed", () => {
    const table = buildServiceTable({
      version: "7.0",
      services: [serviceResource("web", { targetPort: 8080 })],
      pods: [
        pod("web-2", "10.1.0.12", { app: "web", tier: "front" }, "node-b"),
        pod("web-1", "10.1.0.11", { app: "web" }, "node-a"),
        pod("api-1", "10.1.0.21", { app: "api" }),
        pod("web-other-ns", "10.1.0.31", { app: "web" }, "node-a", "staging"),
      ],
      nodes,
    });
    const web = table.services.get("default/web")!.service;
    expect(web.endpoints).toEqual([
      { ip: "10.1.0.11", node: "node-a", pod: "default/web-1", meshed: true },
      { ip: "10.1.0.12", node: "node-b", pod: "default/web-2", meshed: true },
    ]);
    // The endpoint port comes from the service port: targetPort ?? port.
    expect(web.ports).toEqual([{ port: 80, targetPort: 8080, protocol: "http" }]);
    expect(validateServiceTable({ services: [web] })).toEqual([]);
    expect(table.peers.map((p) => p.name)).toEqual(["node-a", "node-b"]);
  });

  it("gives a service without matching pods an empty endpoint list", () => {
    const table = buildServiceTable({ version: "1.0", services: [serviceResource("db")], pods: [], nodes: [] });
    expect(table.services.get("default/db")!.service.endpoints).toEqual([]);
  });

  it("records the resource and generation each entry comes from", () => {
    const table = buildServiceTable({
      version: "1.0",
      services: [serviceResource("web", { generation: 3 })],
      pods: [],
      nodes: [],
    });
    expect(table.services.get("default/web")!.resource).toEqual({ key: "services/default/web", generation: 3 });
  });
});

describe("diffTables", () => {
  const services = [serviceResource("web"), serviceResource("api", { vip: "10.96.0.11" })];
  const before = buildServiceTable({
    version: "5.0",
    services,
    pods: [pod("web-1", "10.1.0.11", { app: "web" })],
    nodes,
  });

  it("without a base, is the full table", () => {
    const full = diffTables(undefined, before);
    expect(full).toMatchObject({ version: "5.0", full: true, baseVersion: "", removed: [] });
    expect(full.services.map((s) => s.name).sort()).toEqual(["api", "web"]);
  });

  it("sends a service again when an endpoint appears or disappears", () => {
    const podAdded = buildServiceTable({
      version: "5.1",
      services,
      pods: [pod("web-1", "10.1.0.11", { app: "web" }), pod("web-2", "10.1.0.12", { app: "web" })],
      nodes,
    });
    const up = diffTables(before, podAdded);
    expect(up).toMatchObject({ version: "5.1", full: false, baseVersion: "5.0", removed: [] });
    expect(up.services.map((s) => [s.name, s.endpoints.map((e) => e.ip)])).toEqual([
      ["web", ["10.1.0.11", "10.1.0.12"]],
    ]);

    const podGone = buildServiceTable({ version: "5.2", services, pods: [], nodes });
    const down = diffTables(podAdded, podGone);
    expect(down.services.map((s) => [s.name, s.endpoints.length])).toEqual([["web", 0]]);
  });

  it("lists removed services by key and nothing else when nothing changed", () => {
    const after = buildServiceTable({
      version: "6.0",
      services: [services[0]],
      pods: [pod("web-1", "10.1.0.11", { app: "web" })],
      nodes,
    });
    expect(diffTables(before, after)).toMatchObject({ services: [], removed: ["default/api"] });
    expect(diffTables(after, after)).toMatchObject({ services: [], removed: [] });
  });

  it("round-trips through the wire form into a valid api/services.ts table", () => {
    const wire = diffTables(undefined, before).services;
    const back = wire.map(fromWireService);
    expect(validateServiceTable({ services: back })).toEqual([]);
    expect(back.find((s) => s.name === "web")).toEqual(before.services.get("default/web")!.service);
  });

  it("carries the node list when full or changed, and leaves it out when unchanged", () => {
    const sorted = [
      { name: "node-a", underlayIp: "10.0.0.1" },
      { name: "node-b", underlayIp: "10.0.0.2" },
    ];
    expect(diffTables(undefined, before).peers).toEqual({ nodes: sorted });
    expect(diffTables(before, before).peers).toBeNull();
    const moved = buildServiceTable({
      version: "5.1",
      services,
      pods: [],
      nodes: [{ name: "node-a", underlayIp: "10.0.0.9" }],
    });
    expect(diffTables(before, moved).peers).toEqual({ nodes: [{ name: "node-a", underlayIp: "10.0.0.9" }] });
  });
});

describe("versions", () => {
  it("order by store version, then endpoints generation", () => {
    expect(compareVersions(formatVersion("9", 5), formatVersion("10", 0))).toBeLessThan(0);
    expect(compareVersions("10.2", "10.1")).toBeGreaterThan(0);
    expect(compareVersions("10.2", "10.2")).toBe(0);
  });
});
