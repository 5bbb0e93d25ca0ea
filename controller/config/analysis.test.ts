import { describe, expect, it } from "vitest";
import type { Resource } from "../../api/resources.ts";
import { analyzeConfig, policiesSelectingNothing, vipPortConflicts, vipPortLosers } from "./analysis.ts";

function object(kind: string, name: string, spec: unknown, created = "2026-01-01T00:00:00Z", namespace = "default") {
  return {
    kind,
    metadata: { name, namespace, uid: name, resourceVersion: "1", generation: 1, creationTimestamp: created },
    spec,
  } as Resource;
}

const service = (name: string, vip: string, ports = [80], created?: string) =>
  object("Service", name, { vip, ports: ports.map((port) => ({ port })), selector: { app: name } }, created);

describe("VIP:port conflicts", () => {
  const web = service("web", "10.96.0.10", [80, 8080]);
  it("names each port of a candidate that another Service holds, and who holds it", () => {
    expect(vipPortConflicts(service("b", "10.96.0.10", [443, 8080]), [web])).toEqual([
      { portIndex: 1, vipPort: "10.96.0.10:8080", holder: "default/web" },
    ]);
    expect(vipPortConflicts(service("b", "10.96.0.11", [80]), [web])).toEqual([]);
    // A Service replacing itself does not conflict with its stored version.
    expect(vipPortConflicts(service("web", "10.96.0.10", [80]), [web])).toEqual([]);
  });

  it("the older Service keeps a VIP:port; the younger loses it, whatever the list order", () => {
    const older = service("zeta", "10.96.0.10", [80], "2026-01-01T00:00:00Z");
    const younger = service("alpha", "10.96.0.10", [80], "2026-01-02T00:00:00Z");
    const losers = vipPortLosers([younger, older]);
    expect([...losers]).toEqual([
      ["services/default/alpha", { portIndex: 0, vipPort: "10.96.0.10:80", holder: "default/zeta" }],
    ]);
    const analysis = analyzeConfig({ services: [younger, older], traffic: [] });
    expect([...analysis.excluded]).toEqual(["services/default/alpha"]);
    expect(analysis.conditions.get("services/default/alpha")).toEqual([
      expect.objectContaining({ type: "Accepted", status: "False", reason: "Conflicted" }),
    ]);
    expect(analysis.conditions.get("services/default/alpha")![0]!.message).toContain("default/zeta");
    expect(analysis.conditions.get("services/default/zeta")![0]!.status).toBe("True");
  });
});

describe("references and overlapping policies", () => {
  const services = [service("web", "10.96.0.10"), service("web-v1", "10.96.0.11"), service("api", "10.96.0.12")];
  const analyze = (...traffic: Resource[]) => analyzeConfig({ services, traffic }).conditions;

  it("a route with no matching parent is not accepted; a missing backend or mirror is BackendNotFound", () => {
    const route = object("HTTPRoute", "r", {
      parentRefs: [{ name: "web" }, { name: "gone" }],
      rules: [
        {
          backendRefs: [{ name: "web-v1" }, { name: "web-v9" }],
          filters: [{ type: "RequestMirror", requestMirror: { backendRef: { name: "shadow" } } }],
        },
      ],
    });
    const [accepted, resolved] = analyze(route).get("httproutes/default/r")!;
    expect(accepted).toMatchObject({ status: "True", message: "accepted in part: no such Service: default/gone" });
    expect(resolved).toMatchObject({ type: "ResolvedRefs", status: "False", reason: "BackendNotFound" });
    expect(resolved!.message).toContain("default/web-v9, default/shadow");

    const orphan = object("GRPCRoute", "g", { parentRefs: [{ name: "web", port: 9090 }], rules: [] });
    expect(analyze(orphan).get("grpcroutes/default/g")![0]).toMatchObject({
      status: "False",
      reason: "NoMatchingParent",
      message: "Service default/web has no port 9090",
    });
  });

  it("a policy whose targets do not exist selects nothing: TargetNotFound", () => {
    for (const kind of ["TrafficPolicy", "AuthorizationPolicy", "RequestAuthentication", "PeerAuthentication"]) {
      const plural = `${kind.toLowerCase().replace(/y$/, "ie")}s`;
      const conditions = analyze(object(kind, "p", { targetRefs: [{ name: "nope" }] })).get(`${plural}/default/p`);
      expect(conditions, kind).toEqual([
        { type: "Accepted", status: "False", reason: "TargetNotFound", message: "no such Service: default/nope" },
      ]);
    }
  });

  it("two TrafficPolicies on one Service: the first by name applies there, the other is Conflicted", () => {
    const a = object("TrafficPolicy", "a-retries", { targetRefs: [{ name: "web" }] });
    const b = object("TrafficPolicy", "b-timeouts", { targetRefs: [{ name: "web" }] });
    const c = object("TrafficPolicy", "c-both", { targetRefs: [{ name: "web" }, { name: "api" }] });
    const conditions = analyze(c, b, a);
    expect(conditions.get("trafficpolicies/default/a-retries")![0]!.status).toBe("True");
    expect(conditions.get("trafficpolicies/default/b-timeouts")![0]).toMatchObject({
      status: "False",
      reason: "Conflicted",
    });
    expect(conditions.get("trafficpolicies/default/b-timeouts")![0]!.message).toContain(
      "overridden by TrafficPolicy default/a-retries at default/web",
    );
    // Still in force on api: accepted, in part.
    expect(conditions.get("trafficpolicies/default/c-both")![0]).toMatchObject({ status: "True" });
    expect(conditions.get("trafficpolicies/default/c-both")![0]!.message).toContain("accepted in part");
  });

  it("PeerAuthentications: two setting a mode at one level conflict; AuthorizationPolicies combine", () => {
    const mode = (name: string) => object("PeerAuthentication", name, { mtls: { mode: "STRICT" } });
    const conditions = analyze(mode("b"), mode("a"), object("PeerAuthentication", "c", { portLevelMtls: {} }));
    expect(conditions.get("peerauthentications/default/a")![0]!.status).toBe("True");
    expect(conditions.get("peerauthentications/default/b")![0]).toMatchObject({
      status: "False",
      reason: "Conflicted",
    });
    expect(conditions.get("peerauthentications/default/c")![0]!.status).toBe("True"); // sets no mode
    const allow = object("AuthorizationPolicy", "allow", { targetRefs: [{ name: "web" }], action: "ALLOW" });
    const deny = object("AuthorizationPolicy", "deny", { targetRefs: [{ name: "web" }], action: "DENY" });
    const authz = analyze(allow, deny);
    expect(authz.get("authorizationpolicies/default/allow")![0]!.status).toBe("True");
    expect(authz.get("authorizationpolicies/default/deny")![0]!.status).toBe("True");
  });
});

describe("rules that never match", () => {
  const web = object("Service", "web", {
    vip: "10.96.0.10",
    ports: [
      { port: 80, protocol: "http" },
      { port: 5432, protocol: "tcp" },
    ],
    selector: { app: "web" },
  });
  const route = (name: string, rules: unknown[], parent: Record<string, unknown> = { name: "web", port: 80 }) =>
    object("HTTPRoute", name, { parentRefs: [parent], rules });
  const reachable = (...traffic: Resource[]) => {
    const conditions = analyzeConfig({ services: [web], traffic }).conditions;
    return new Map(
      traffic.map((t) => [t.metadata.name, conditions.get(`${t.kind.toLowerCase()}s/default/${t.metadata.name}`)![2]!]),
    );
  };

  it("every rule of distinct matches can match: RulesReachable True", () => {
    const r = reachable(
      route("a", [
        { matches: [{ headers: [{ name: "end-user", value: "jason" }] }], backendRefs: [{ name: "web" }] },
        { backendRefs: [{ name: "web" }] },
      ]),
    );
    expect(r.get("a")).toEqual({
      type: "RulesReachable",
      status: "True",
      reason: "RulesReachable",
      message: "every rule can match",
    });
  });

  it("the same match in a later route (by namespace/name) never matches; the earlier one stays reachable", () => {
    const catchAll = [{ matches: [{ path: { type: "PathPrefix", value: "/" } }], backendRefs: [{ name: "web" }] }];
    const r = reachable(route("b-late", [{ backendRefs: [{ name: "web" }] }]), route("a-first", catchAll));
    expect(r.get("a-first")!.status).toBe("True");
    expect(r.get("b-late")).toMatchObject({ status: "False", reason: "NeverMatches" });
    expect(r.get("b-late")!.message).toBe(
      "rule 0 match 0 never matches on default/web:80: HTTPRoute default/a-first rule 0 match 0 has the same match, and is tried first (same precedence: ties go by route namespace/name, then rule order)",
    );
  });

  it("header names compare without case, and a later identical rule of the same route never matches", () => {
    const jason = (name: string) => ({
      matches: [{ headers: [{ name, value: "jason" }] }],
      backendRefs: [{ name: "web" }],
    });
    const r = reachable(route("a", [jason("end-user"), jason("End-User")]));
    expect(r.get("a")!.message).toContain("rule 1 match 0 never matches on default/web:80: HTTPRoute default/a rule 0");
  });

  it("a RegularExpression path behind a catch-all never matches; behind a header-only prefix it still can", () => {
    const regex = {
      matches: [{ path: { type: "RegularExpression", value: "/v[0-9]+" } }],
      backendRefs: [{ name: "web" }],
    };
    const caught = reachable(route("r", [{ backendRefs: [{ name: "web" }] }, regex]));
    expect(caught.get("r")!.message).toContain(
      "rule 1 match 0 never matches on default/web:80: HTTPRoute default/r rule 0 match 0 takes every path with a subset of its conditions",
    );
    const header = { matches: [{ headers: [{ name: "x", value: "1" }] }], backendRefs: [{ name: "web" }] };
    expect(reachable(route("r", [header, regex])).get("r")!.status).toBe("True");
  });

  it("a route whose only parent port is declared tcp never sees a request", () => {
    const r = reachable(route("db", [{ backendRefs: [{ name: "web" }] }], { name: "web", port: 5432 }));
    expect(r.get("db")).toMatchObject({ status: "False", reason: "NeverMatches" });
    expect(r.get("db")!.message).toContain("every parent port (default/web:5432) is declared tcp");
  });
});

describe("policies that select no enrolled pod", () => {
  const services = [service("web", "10.96.0.10"), service("api", "10.96.0.11")];
  const pods = [{ namespace: "default", labels: { app: "web" } }];
  const idle = (...traffic: Resource[]) => policiesSelectingNothing({ services, traffic, pods });

  it("names the policies whose targets select no pod, and namespace-wide ones of an empty namespace", () => {
    expect(
      idle(
        object("AuthorizationPolicy", "web-only", { targetRefs: [{ name: "web" }], action: "ALLOW" }),
        object("AuthorizationPolicy", "api-only", { targetRefs: [{ name: "api" }], action: "ALLOW" }),
        object("PeerAuthentication", "ns-wide", { mtls: { mode: "STRICT" } }),
        object("RequestAuthentication", "elsewhere", { jwtRules: [] }, undefined, "shop"),
        object("TrafficPolicy", "tp", { targetRefs: [{ name: "api" }] }),
        object("AuthorizationPolicy", "missing", { targetRefs: [{ name: "gone" }] }),
      ),
    ).toEqual([
      {
        kind: "AuthorizationPolicy",
        namespace: "default",
        name: "api-only",
        message: "its targets (default/api) select no enrolled pod",
      },
      {
        kind: "RequestAuthentication",
        namespace: "shop",
        name: "elsewhere",
        message: "no enrolled pod in namespace shop",
      },
    ]);
  });
});
