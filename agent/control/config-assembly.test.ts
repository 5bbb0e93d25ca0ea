import { describe, expect, it } from "vitest";
import { type Config, toWireTraffic, type WireService, type WireTrafficObject } from "../../api/agent-service.ts";
import { HTTPRouteSpec, type TrafficObject, TrafficPolicySpec } from "../../api/traffic.ts";
import { compileProblem } from "../dataplane/snapshot.ts";
import { assembleConfig, type ControllerConfig, fromServiceTable, usableTable } from "./config-assembly.ts";

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

  it("leaves out a Service whose VIP:port another holds, and applies the rest", () => {
    const result = assembleConfig(
      undefined,
      config({ services: [wire("web", "10.96.0.10"), wire("web-b", "10.96.0.10"), wire("api", "10.96.0.11")] }),
    );
    if (!result.ok) throw new Error(result.error);
    expect(result.table.services.map((s) => s.name)).toEqual(["api", "web"]);
    expect(result.rejected).toEqual([
      {
        kind: "Service",
        namespace: "default",
        name: "web-b",
        reason: "VIP:port 10.96.0.10:80 is Service default/web's",
      },
    ]);
  });

  it("leaves out a Service that does not validate alone, naming the field", () => {
    const bad = { ...wire("bad", "10.96.0.12"), ports: [{ name: "", port: 70000, protocol: "http" }] };
    const result = assembleConfig(undefined, config({ services: [bad, wire("web", "10.96.0.10")] }));
    if (!result.ok) throw new Error(result.error);
    expect(result.table.services.map((s) => s.name)).toEqual(["web"]);
    expect(result.rejected).toEqual([
      { kind: "Service", namespace: "default", name: "bad", reason: "ports[0].port: must be an integer 1-65535" },
    ]);
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
    const { table } = usableTable(first);
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
      /^spec\.rules\[0\]\.matches\[0\]\.path\.value: backreferences are not supported/,
    ],
    ["an unknown kind", { ...route, kind: "TCPRoute" }, /^kind: Invalid option/],
    ["a spec that is not JSON", { ...route, specJson: "{ torn" }, /^spec_json is not JSON/],
  ])("leaves out %s, says why in the ACK and applies the rest", (_, bad, reason) => {
    const result = assembleConfig(first, config({ version: "2.0", full: false, baseVersion: "1.0", traffic: [bad] }));
    if (!result.ok) throw new Error(result.error);
    expect(result.rejected).toHaveLength(1);
    expect(result.rejected[0]).toMatchObject({ kind: bad.kind, namespace: "default", name: "web-split" });
    expect(result.rejected[0]!.reason).toMatch(reason);
    // The valid policy stays; the refused object is held (a later removal or fix finds it).
    expect(result.table.traffic?.some((o) => o.kind === bad.kind && o.name === "web-split")).toBe(false);
    expect(result.table.traffic?.map((o) => o.name)).toContain("web-retries");
    expect(result.config.traffic.has(`${bad.kind}/default/web-split`)).toBe(true);
  });

  it("takes an object back once a fixed version arrives, and forgets one that is removed", () => {
    const broken = { ...route, specJson: "{ torn" };
    const refused = assembleConfig(
      first,
      config({ version: "2.0", full: false, baseVersion: "1.0", traffic: [broken] }),
    );
    if (!refused.ok) throw new Error(refused.error);
    const fixed = assembleConfig(
      refused.config,
      config({ version: "3.0", full: false, baseVersion: "2.0", traffic: [route] }),
    );
    if (!fixed.ok) throw new Error(fixed.error);
    expect(fixed.rejected).toEqual([]);
    expect(fixed.table.traffic?.map((o) => o.name)).toEqual(["web-split", "web-retries"]);
    const removed = assembleConfig(
      refused.config,
      config({ version: "3.0", full: false, baseVersion: "2.0", removedTraffic: ["HTTPRoute/default/web-split"] }),
    );
    if (!removed.ok) throw new Error(removed.error);
    expect(removed.rejected).toEqual([]);
  });

  it("leaves out an object the data plane's check refuses, once per object", () => {
    const checked: string[] = [];
    const checkTraffic = (o: TrafficObject) => {
      checked.push(o.name);
      return o.name === "web-split" ? "does not compile: refused" : undefined;
    };
    const result = assembleConfig(
      undefined,
      config({ services: [wire("web", "10.96.0.10")], traffic: [route, policy] }),
      {
        checkTraffic,
      },
    );
    if (!result.ok) throw new Error(result.error);
    expect(result.rejected).toEqual([
      { kind: "HTTPRoute", namespace: "default", name: "web-split", reason: "does not compile: refused" },
    ]);
    expect(result.table.traffic?.map((o) => o.name)).toEqual(["web-retries"]);
    // An incremental update that does not touch them does not check them again.
    const next = assembleConfig(result.config, config({ version: "2.0", full: false, baseVersion: "1.0" }), {
      checkTraffic,
    });
    if (!next.ok) throw new Error(next.error);
    expect(next.rejected).toHaveLength(1);
    expect(checked).toEqual(["web-split", "web-retries"]);
  });

  it("compileProblem: an object the data plane cannot compile (a JWKS key that is not an object)", () => {
    const authn = {
      kind: "RequestAuthentication",
      namespace: "default",
      name: "jwt",
      spec: { jwtRules: [{ issuer: "https://issuer", jwks: '{"keys":[1]}', forwardOriginalToken: false }] },
    } as TrafficObject;
    expect(compileProblem(authn)).toMatch(/^does not compile: .*JSON Web Key Set malformed/);
    const readable = { issuer: "https://issuer", jwks: '{"keys":[]}', forwardOriginalToken: false };
    expect(compileProblem({ ...authn, spec: { jwtRules: [readable] } } as TrafficObject)).toBeUndefined();
  });
});
