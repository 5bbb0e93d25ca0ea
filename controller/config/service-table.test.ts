import { describe, expect, it } from "vitest";
import { fromWireService, fromWireTraffic } from "../../api/agent-service.ts";
import { validateServiceTable } from "../../api/services.ts";
import { diffTables } from "./config-diff.ts";
import { PodIndex, selectorMatches } from "./pod-index.ts";
import { buildServiceTable, sameTableContent } from "./service-table.ts";
import { httpRouteResource, pod, serviceResource, trafficPolicyResource } from "./testing/fixtures.ts";
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
      {
        ip: "10.1.0.11",
        node: "node-a",
        pod: "default/web-1",
        meshed: true,
        workload: "web",
        serviceAccount: "default",
      },
      {
        ip: "10.1.0.12",
        node: "node-b",
        pod: "default/web-2",
        meshed: true,
        workload: "web",
        serviceAccount: "default",
      },
    ]);
    // The endpoint port comes from the service port: targetPort ?? port.
    expect(web.ports).toEqual([{ port: 80, targetPort: 8080, protocol: "http" }]);
    expect(validateServiceTable({ services: [web] })).toEqual([]);
    expect(table.peers.map((p) => p.name)).toEqual(["node-a", "node-b"]);
  });

  it("in Kubernetes mode takes the EndpointSlices' ready endpoints, meshed where an agent enrolled the pod", () => {
    const input = {
      version: "7.0",
      services: [serviceResource("web", { targetPort: 8080 }), serviceResource("api")],
      pods: [
        pod("web-1", "10.1.0.11", { app: "web" }, "node-a"),
        // Enrolled, but not ready as far as Kubernetes knows: not in the slices, not an endpoint.
        pod("web-2", "10.1.0.12", { app: "web" }, "node-b"),
      ],
      nodes,
      clusterEndpoints: new Map([
        [
          "default/web",
          [
            { ip: "10.1.0.11", pod: "default/web-1", node: "node-a" },
            // Opted out of the mesh (no agent knows it): dialled directly.
            { ip: "10.1.0.13", pod: "default/web-3", node: "node-b" },
          ],
        ],
      ]),
    };
    const table = buildServiceTable(input);
    expect(table.services.get("default/web")!.service.endpoints).toEqual([
      {
        ip: "10.1.0.11",
        node: "node-a",
        pod: "default/web-1",
        meshed: true,
        workload: "web",
        serviceAccount: "default",
      },
      { ip: "10.1.0.13", node: "node-b", pod: "default/web-3", meshed: false },
    ]);
    // A Service no slice names has no endpoints (as with kube-proxy).
    expect(table.services.get("default/api")!.service.endpoints).toEqual([]);
    // The opted-out pod enrolls later: the same address becomes meshed, and the entry is rebuilt.
    const enrolled = buildServiceTable({
      ...input,
      version: "7.1",
      pods: [...input.pods, pod("web-3", "10.1.0.13", { app: "web" }, "node-b")],
      previous: table,
    });
    expect(enrolled.services.get("default/web")).not.toBe(table.services.get("default/web"));
    expect(enrolled.services.get("default/web")!.service.endpoints[1]).toMatchObject({ ip: "10.1.0.13", meshed: true });
  });

  it("after a pod change, recomputes the endpoints of the services selecting it and no others", () => {
    const services = [
      serviceResource("web"),
      serviceResource("api", { vip: "10.96.0.11" }),
      serviceResource("all", { vip: "10.96.0.12", selector: {} }),
    ];
    const pods = new PodIndex();
    const selectedFor: string[] = [];
    const select = pods.select.bind(pods);
    pods.select = (namespace, selector) => {
      selectedFor.push(JSON.stringify(selector));
      return select(namespace, selector);
    };
    const nodeA = [pod("web-1", "10.1.0.11", { app: "web" }), pod("api-1", "10.1.0.21", { app: "api" })];
    const first = buildServiceTable({
      version: "1.0",
      services,
      pods,
      changedPods: pods.update(new Map([["node-a", nodeA]])),
      nodes,
    });
    expect(selectedFor).toHaveLength(3);
    // web-2 enrolls on node-b: "web" and "all" (empty selector) pick it; "api" is not looked at.
    selectedFor.length = 0;
    const web2 = pod("web-2", "10.1.0.12", { app: "web" }, "node-b");
    const second = buildServiceTable({
      version: "1.1",
      services,
      pods,
      changedPods: pods.update(
        new Map([
          ["node-a", nodeA],
          ["node-b", [web2]],
        ]),
      ),
      nodes,
      previous: first,
    });
    expect(selectedFor.sort()).toEqual(['{"app":"web"}', "{}"]);
    expect(second.services.get("default/api")).toBe(first.services.get("default/api"));
    expect(second.services.get("default/web")!.service.endpoints.map((e) => e.ip)).toEqual(["10.1.0.11", "10.1.0.12"]);
    expect(second.services.get("default/all")!.service.endpoints).toHaveLength(3);
    // Nothing changed: nothing is recomputed. A Service written anew is, even with no pod change.
    selectedFor.length = 0;
    const rewritten = serviceResource("api", { vip: "10.96.0.11", generation: 2 });
    const third = buildServiceTable({
      version: "2.1",
      services: [services[0]!, rewritten, services[2]!],
      pods,
      changedPods: pods.update(
        new Map([
          ["node-a", nodeA],
          ["node-b", [web2]],
        ]),
      ),
      nodes,
      previous: second,
    });
    expect(selectedFor).toEqual(['{"app":"api"}']);
    expect(third.services.get("default/api")!.resource.generation).toBe(2);
    expect(third.services.get("default/web")).toBe(second.services.get("default/web"));
    expect(sameTableContent(second, third)).toBe(false);
    // A pod no Service selects: every entry is reused, the content is the same (no new table goes out).
    const loner = pod("cron-1", "10.1.0.99", { app: "cron" }, "node-b", "batch");
    const fourth = buildServiceTable({
      version: "2.2",
      services: [services[0]!, rewritten, services[2]!],
      pods,
      changedPods: pods.update(
        new Map([
          ["node-a", nodeA],
          ["node-b", [web2, loner]],
        ]),
      ),
      nodes,
      previous: third,
    });
    expect(sameTableContent(third, fourth)).toBe(true);
    expect(sameTableContent(third, { ...fourth, peers: [nodes[0]!] })).toBe(false);
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

  it("leaves an unset protocol absent: empty on the wire, absent again at the agent", () => {
    const web = serviceResource("web");
    const raw = { ...web, spec: { ...web.spec, ports: [{ port: 5432 }] } };
    const table = buildServiceTable({ version: "1.0", services: [raw], pods: [], nodes: [] });
    expect(table.services.get("default/web")!.service.ports).toEqual([{ port: 5432 }]);
    const [wire] = diffTables(undefined, table).services;
    expect(wire!.ports).toEqual([{ name: "", port: 5432, protocol: "" }]);
    expect(fromWireService(wire!).ports).toEqual([{ port: 5432 }]);
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

describe("traffic objects", () => {
  const services = [serviceResource("web")];
  const route = httpRouteResource("web-split", { backends: ["web-v1", "web-v2"], generation: 2 });
  const policy = trafficPolicyResource("web-retries");
  const before = buildServiceTable({ version: "5.0", services, pods: [], nodes, traffic: [route, policy] });

  it("are keyed by kind/namespace/name and tracked under <plural>/<namespace>/<name>", () => {
    expect([...before.traffic.keys()]).toEqual(["HTTPRoute/default/web-split", "TrafficPolicy/default/web-retries"]);
    expect(before.traffic.get("HTTPRoute/default/web-split")!.resource).toEqual({
      key: "httproutes/default/web-split",
      generation: 2,
    });
    expect(before.traffic.get("TrafficPolicy/default/web-retries")!.resource.key).toBe(
      "trafficpolicies/default/web-retries",
    );
  });

  it("all go in a full Config, as valid objects with their defaults", () => {
    const full = diffTables(undefined, before);
    expect(full).toMatchObject({ full: true, removedTraffic: [] });
    const objects = full.traffic.map(fromWireTraffic);
    expect(objects).toEqual([
      { kind: "HTTPRoute", namespace: "default", name: "web-split", spec: route.spec },
      { kind: "TrafficPolicy", namespace: "default", name: "web-retries", spec: policy.spec },
    ]);
    expect(objects[1]!.spec).toMatchObject({ retries: { budget: { percent: 20 } } });
    const table = { services: full.services.map(fromWireService), traffic: objects };
    expect(validateServiceTable(table)).toEqual([]);
  });

  it("go in an incremental Config only when changed, and are removed by key", () => {
    expect(diffTables(before, before)).toMatchObject({ traffic: [], removedTraffic: [] });
    // A pod change rebuilds the table from equal objects: nothing to send.
    const same = buildServiceTable({
      version: "5.1",
      services,
      pods: [pod("web-1", "10.1.0.11", { app: "web" })],
      nodes,
      traffic: [httpRouteResource("web-split", { backends: ["web-v1", "web-v2"], generation: 2 }), policy],
    });
    expect(diffTables(before, same)).toMatchObject({ traffic: [], removedTraffic: [] });

    const changed = buildServiceTable({
      version: "6.0",
      services,
      pods: [],
      nodes,
      traffic: [httpRouteResource("web-split", { backends: ["web-v2"], generation: 3 })],
    });
    const update = diffTables(before, changed);
    expect(update).toMatchObject({ full: false, services: [], removed: [] });
    expect(update.traffic.map((t) => [t.kind, t.name])).toEqual([["HTTPRoute", "web-split"]]);
    expect(JSON.parse(update.traffic[0]!.specJson).rules[0].backendRefs).toEqual([
      { kind: "Service", name: "web-v2", weight: 1 },
    ]);
    expect(update.removedTraffic).toEqual(["TrafficPolicy/default/web-retries"]);
  });

  it("of the same name but different kinds do not collide", () => {
    const table = buildServiceTable({
      version: "1.0",
      services: [],
      pods: [],
      nodes: [],
      traffic: [httpRouteResource("web"), trafficPolicyResource("web")],
    });
    expect([...table.traffic.keys()]).toEqual(["HTTPRoute/default/web", "TrafficPolicy/default/web"]);
  });
});

describe("versions", () => {
  it("order by store version, then endpoints generation", () => {
    expect(compareVersions(formatVersion("9", 5), formatVersion("10", 0))).toBeLessThan(0);
    expect(compareVersions("10.2", "10.1")).toBeGreaterThan(0);
    expect(compareVersions("10.2", "10.2")).toBe(0);
  });
});
