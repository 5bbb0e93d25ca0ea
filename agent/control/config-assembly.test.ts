import { describe, expect, it } from "vitest";
import { type Config, toWireTraffic, type WireService, type WireTrafficObject } from "../../api/agent-service.ts";
import { HTTPRouteSpec, TrafficPolicySpec } from "../../api/traffic.ts";
import { assembleConfig, type ControllerConfig, fromServiceTable, toServiceTable } from "./config-assembly.ts";

function wire(name: string, vip: string, endpoints: string[] = []): WireService {
  return {
    name,
    namespace: "default",
    vip,
    ports: [{ name: "", port: 80, protocol: "http" }],
    endpoints: endpoints.map((ip) => ({
      ip,
      node: "node-a",
      pod: `default/${name}`,
      meshed: true,
      workload: name,
      serviceAccount: "",
    })),
  };
}

function config(fields: Partial<Config>): Config {
  return {
    version: "1.0",
    full: true,
    baseVersion: "",
    services: [],
    removed: [],
    peers: null,
    traffic: [],
    removedTraffic: [],
    ...fields,
  };
}

function assembled(current: ControllerConfig | undefined, update: Config): ControllerConfig {
  const result = assembleConfig(current, update);
  if (!result.ok) throw new Error(result.error);
  return result.config;
}

describe("assembleConfig", () => {
  const peers = [{ name: "node-b", underlayIp: "10.0.0.2" }];
  const first = assembled(
    undefined,
    config({ services: [wire("web", "10.96.0.10"), wire("api", "10.96.0.11")], peers: { nodes: peers } }),
  );

  it("takes a full config as the whole table, in the api/services.ts shape", () => {
    expect([...first.services.keys()].sort()).toEqual(["default/api", "default/web"]);
    expect(first.services.get("default/web")).toEqual({
      name: "web",
      namespace: "default",
      vip: "10.96.0.10",
      ports: [{ port: 80, protocol: "http" }],
      endpoints: [],
    });
    expect(first.peers).toEqual(peers);
  });

  it("applies an incremental update on top of its base", () => {
    const next = assembled(
      first,
      config({
        version: "2.0",
        full: false,
        baseVersion: "1.0",
        services: [wire("web", "10.96.0.10", ["10.1.0.11"])],
        removed: ["default/api"],
      }),
    );
    expect([...next.services.keys()]).toEqual(["default/web"]);
    expect(next.services.get("default/web")!.endpoints).toEqual([
      { ip: "10.1.0.11", node: "node-a", pod: "default/web", meshed: true, workload: "web" },
    ]);
    expect([...first.services.keys()]).toHaveLength(2); // the current config is never mutated
    expect(next.peers).toEqual(peers); // no node list in the update: unchanged
  });

  it("refuses an incremental update for another base", () => {
    const result = assembleConfig(first, config({ version: "3.0", full: false, baseVersion: "2.0" }));
    expect(result).toEqual({ ok: false, error: "incremental update 3.0 applies to 2.0, but this agent holds 1.0" });
  });

  it("refuses a table that does not validate, naming the field", () => {
    const result = assembleConfig(
      undefined,
      config({ services: [wire("web", "10.96.0.10"), wire("dup", "10.96.0.10")] }),
    );
    expect(result.ok).toBe(false);
    expect(!result.ok && result.error).toMatch(/services\[1\]\.ports\[0\]\.port: duplicate VIP:port 10\.96\.0\.10:80/);
  });
});

describe("assembleConfig with traffic objects", () => {
  const route = toWireTraffic({
    kind: "HTTPRoute",
    namespace: "default",
    name: "web-split",
    spec: HTTPRouteSpec.parse({
      parentRefs: [{ name: "web" }],
      rules: [
        {
          backendRefs: [
            { name: "web-v1", weight: 90 },
            { name: "web-v2", weight: 10 },
          ],
        },
      ],
    }),
  });
  const policy = toWireTraffic({
    kind: "TrafficPolicy",
    namespace: "default",
    name: "web-retries",
    spec: TrafficPolicySpec.parse({ targetRefs: [{ name: "web" }], retries: { attempts: 3 } }),
  });
  const first = assembled(undefined, config({ services: [wire("web", "10.96.0.10")], traffic: [route, policy] }));

  it("keeps them and puts them in ServiceTable.traffic, sorted by key", () => {
    expect([...first.traffic.keys()]).toEqual(["HTTPRoute/default/web-split", "TrafficPolicy/default/web-retries"]);
    const table = toServiceTable(first);
    expect(table.traffic?.map((o) => `${o.kind}/${o.name}`)).toEqual([
      "HTTPRoute/web-split",
      "TrafficPolicy/web-retries",
    ]);
    expect(table.traffic?.[0]?.spec).toEqual(JSON.parse(route.specJson));
    // The cache stores toServiceTable(config) and reads it back with fromServiceTable.
    expect(fromServiceTable(first.version, table, first.peers)).toEqual(first);
  });

  it("applies changed and removed traffic objects on top of its base, services untouched", () => {
    const changed = { ...policy, specJson: policy.specJson.replace('"attempts":3', '"attempts":5') };
    const next = assembled(
      first,
      config({
        version: "2.0",
        full: false,
        baseVersion: "1.0",
        traffic: [changed],
        removedTraffic: [`HTTPRoute/default/web-split`],
      }),
    );
    expect([...next.traffic.keys()]).toEqual(["TrafficPolicy/default/web-retries"]);
    expect(next.traffic.get("TrafficPolicy/default/web-retries")).toMatchObject({ spec: { retries: { attempts: 5 } } });
    expect([...next.services.keys()]).toEqual(["default/web"]);
    expect(first.traffic.size).toBe(2); // the current config is never mutated
  });

  it("replaces them all with a full config", () => {
    const next = assembled(first, config({ version: "2.0", traffic: [policy] }));
    expect([...next.traffic.keys()]).toEqual(["TrafficPolicy/default/web-retries"]);
  });

  it.each<[string, WireTrafficObject, RegExp]>([
    [
      "a route with a regex RE2 refuses",
      {
        ...route,
        specJson: JSON.stringify({
          parentRefs: [{ name: "web" }],
          rules: [{ matches: [{ path: { type: "RegularExpression", value: "/(a)\\1" } }] }],
        }),
      },
      /traffic\[HTTPRoute\/default\/web-split\]\.spec\.rules\[0\]\.matches\[0\]\.path\.value: backreferences are not supported/,
    ],
    [
      "an unknown kind",
      { ...route, kind: "TCPRoute" },
      /traffic\[TCPRoute\/default\/web-split\]\.kind: Invalid option/,
    ],
    [
      "a spec that is not JSON",
      { ...route, specJson: "{ torn" },
      /HTTPRoute\/default\/web-split: spec_json is not JSON/,
    ],
  ])("NACKs %s and keeps its table", (_, bad, error) => {
    const result = assembleConfig(first, config({ version: "2.0", full: false, baseVersion: "1.0", traffic: [bad] }));
    expect(result.ok).toBe(false);
    expect(!result.ok && result.error).toMatch(error);
  });
});
