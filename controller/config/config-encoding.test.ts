import { describe, expect, it } from "vitest";
import { agentServiceDefinition, type ControllerMessage } from "../../api/agent-service.ts";
import type { Resource, ServiceSpec } from "../../api/resources.ts";
import { diffTables, tableDiff } from "./config-diff.ts";
import { encodeConfigMessage } from "./config-encoding.ts";
import { buildServiceTable, type ConfigTable } from "./service-table.ts";
import { httpRouteResource, pod, serviceResource, trafficPolicyResource } from "./testing/fixtures.ts";

const { responseSerialize, responseDeserialize } = agentServiceDefinition.Connect;

/** What the contract's own codec (proto-loader) makes of the bytes. */
const decode = (bytes: Buffer) => responseDeserialize(bytes) as Extract<ControllerMessage, { kind: "config" }>;

/** The same Config encoded by proto-loader from diffTables' message object, then decoded. */
function reference(from: ConfigTable | undefined, to: ConfigTable): ControllerMessage {
  return decode(responseSerialize({ kind: "config", config: diffTables(from, to) }));
}

const multiPort: Resource<ServiceSpec> = {
  ...serviceResource("db", { vip: "10.96.0.12" }),
  spec: {
    vip: "10.96.0.12",
    ports: [
      { name: "sql", port: 5432, targetPort: 0, protocol: "tcp" },
      { port: 9187 }, // no name, no targetPort, no protocol: all left to the defaults
    ],
    selector: {},
  },
};
const nodes = [
  { name: "node-a", underlayIp: "10.0.0.1" },
  { name: "node-b", underlayIp: "" },
];
const pods = [
  pod("web-1", "10.1.0.11", { app: "web" }, "node-a"),
  pod("wéb-2", "10.1.0.12", { app: "web" }, "node-b"),
  pod("db-0", "10.1.0.21", { "app.kubernetes.io/name": "postgres" }, "node-b"),
];
const before = buildServiceTable({
  version: "7.3",
  services: [serviceResource("web", { targetPort: 8080 }), serviceResource("api", { vip: "10.96.0.11" }), multiPort],
  pods,
  nodes,
  traffic: [httpRouteResource("web-split", { backends: ["web-v1", "web-v2"] }), trafficPolicyResource("web-retries")],
});

describe("encodeConfigMessage", () => {
  it("encodes a full table as the contract's codec does", () => {
    const bytes = encodeConfigMessage(tableDiff(undefined, before));
    expect(decode(bytes)).toEqual(reference(undefined, before));
    expect(decode(bytes).config.services.find((s) => s.name === "db")!.ports[0]!.targetPort).toBe(0);
  });

  it("encodes updates: changed entries, removed keys, the node list only when it changed", () => {
    const after = buildServiceTable({
      version: "8.0",
      services: [serviceResource("web", { targetPort: 8080 }), multiPort],
      pods: pods.slice(1),
      nodes: [],
      traffic: [trafficPolicyResource("web-retries", { attempts: 5 })],
      previous: before,
    });
    for (const [from, to] of [
      [before, after],
      [after, before],
      [before, before],
    ] as const) {
      expect(decode(encodeConfigMessage(tableDiff(from, to)))).toEqual(reference(from, to));
    }
    const update = decode(encodeConfigMessage(tableDiff(before, after))).config;
    expect(update).toMatchObject({ removed: ["default/api"], removedTraffic: ["HTTPRoute/default/web-split"] });
    expect(update.peers).toEqual({ nodes: [] });
    expect(decode(encodeConfigMessage(tableDiff(before, before))).config.peers).toBeNull();
  });
});

describe("buildServiceTable with the previous table", () => {
  it("reuses the entries whose resource and endpoints did not change", () => {
    const next = buildServiceTable({
      version: "7.4",
      services: [...before.services.values()].map((e) => e.source),
      pods: [...pods, pod("api-1", "10.1.0.31", { app: "api" })],
      nodes,
      traffic: [...before.traffic.values()].map((e) => e.source),
      previous: before,
    });
    expect(next.services.get("default/web")).toBe(before.services.get("default/web"));
    expect(next.traffic.get("HTTPRoute/default/web-split")).toBe(before.traffic.get("HTTPRoute/default/web-split"));
    expect(next.services.get("default/api")).not.toBe(before.services.get("default/api"));
    expect(next.services.get("default/api")!.service.endpoints.map((e) => e.ip)).toEqual(["10.1.0.31"]);
    // An empty selector picks every pod of the namespace.
    expect(next.services.get("default/db")!.service.endpoints).toHaveLength(4);
    expect(tableDiff(before, next).services.map((e) => e.service.name)).toEqual(["api", "db"]);
  });

  it("keeps the previous service entries when told only traffic objects changed", () => {
    const next = buildServiceTable({
      version: "8.3",
      services: [],
      pods: [],
      nodes,
      traffic: [],
      previous: before,
      servicesUnchanged: true,
    });
    expect(next.services).toBe(before.services);
    expect(tableDiff(before, next)).toMatchObject({ services: [], removed: [], removedTraffic: expect.any(Array) });
    expect(tableDiff(before, next).removedTraffic).toHaveLength(2);
  });
});
