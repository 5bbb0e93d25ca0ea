import { describe, expect, it } from "vitest";
import type { Service } from "../../api/services.ts";
import { parseTrafficObject, type TrafficObject } from "../../api/traffic.ts";
import { type ExplainInput, explainRequest } from "./explain.ts";
import type { PodContext } from "./pod.ts";
import { compileSnapshot, slotKeys } from "./snapshot.ts";

const REVIEWS = "10.96.0.10";

const SERVICES: Service[] = [
  {
    name: "reviews",
    namespace: "default",
    vip: REVIEWS,
    ports: [
      { name: "http", port: 80, targetPort: 8080, protocol: "http" },
      { name: "db", port: 5432, protocol: "tcp" },
      { name: "grpc", port: 9090, protocol: "grpc" },
    ],
    endpoints: [
      { ip: "10.244.1.1", node: "node-1", pod: "default/reviews-1", meshed: true },
      { ip: "10.244.2.1", node: "node-2", pod: "default/reviews-2", meshed: true },
    ],
  },
  {
    name: "reviews-v1",
    namespace: "default",
    vip: "10.96.0.11",
    ports: [{ port: 80, targetPort: 8080 }],
    endpoints: [{ ip: "10.244.1.1", node: "node-1", pod: "default/reviews-1", meshed: true }],
  },
  {
    name: "reviews-v2",
    namespace: "default",
    vip: "10.96.0.12",
    ports: [{ port: 80, targetPort: 8080 }],
    endpoints: [{ ip: "10.244.2.1", node: "node-2", pod: "default/reviews-2", meshed: true }],
  },
];

function traffic(...objs: unknown[]): TrafficObject[] {
  return objs.map((o) => {
    const r = parseTrafficObject(o);
    if (!r.ok) throw new Error(JSON.stringify(r.errors));
    return r.value;
  });
}

const route = (name: string, rules: unknown[]) => ({
  kind: "HTTPRoute",
  name,
  namespace: "default",
  spec: { parentRefs: [{ name: "reviews", port: 80 }], rules },
});

const FROM = {
  key: "default/client",
  pod: { name: "client", namespace: "default", ip: "10.244.1.9", labels: {}, serviceAccount: "", netnsPath: "" },
  workload: { name: "client", namespace: "default" },
} as unknown as PodContext;

function explain(objects: TrafficObject[], method: string, url: string, headers: Record<string, string> = {}) {
  const table = { services: SERVICES, traffic: objects };
  const keys = slotKeys(table);
  const snapshot = compileSnapshot({
    version: "7",
    table,
    routeSlots: Object.fromEntries(keys.routes.map((k, i) => [k, i])),
    endpointSlots: Object.fromEntries(keys.endpoints.map((k, i) => [k, i])),
    node: "node-1",
    rttMs: {},
  });
  const u = new URL(url);
  const input: ExplainInput = {
    snapshot,
    traffic: objects,
    from: FROM,
    method,
    ip: u.hostname,
    port: u.port === "" ? 80 : Number(u.port),
    target: `${u.pathname}${u.search}`,
    headers,
    interception: { intercepted: true, reason: "redirected" },
    nextEndpoint: (backend) => backend.route.endpoints[0],
    ejected: () => false,
  };
  return explainRequest(input);
}

describe("explainRequest", () => {
  const jason = route("jason", [
    {
      matches: [{ headers: [{ name: "end-user", value: "jason" }], path: { type: "PathPrefix", value: "/v2" } }],
      backendRefs: [{ name: "reviews-v2" }],
    },
    {
      matches: [{ method: "POST" }, { queryParams: [{ name: "v", value: "1" }] }],
      backendRefs: [{ name: "reviews-v1" }],
    },
  ]);

  it("names the rule taken and, for each rule tried before it, every condition that failed", () => {
    const e = explain(traffic(jason), "GET", `http://${REVIEWS}/v3?v=1`, { "end-user": "bob" });
    expect(e.outcome).toBe("service");
    expect(e.rules).toEqual([
      {
        rule: "default/jason#0",
        match: 0,
        matched: false,
        failed: ["path PathPrefix /v2 (request: /v3)", 'header end-user = jason (request: "bob")'],
      },
      // Same rule, another match: the method one ranks before the query one.
      { rule: "default/jason#1", match: 0, matched: false, failed: ["method POST (request: GET)"] },
      { rule: "default/jason#1", match: 1, matched: true, failed: [] },
    ]);
    expect(e.matchedRule).toBe("default/jason#1");
    expect(e.backends).toEqual([{ service: "reviews-v1.default:80", weight: 1, share: 1, assumed: true }]);
    expect(e.endpoints).toEqual([
      { address: "10.244.1.1:8080", pod: "default/reviews-1", node: "node-1", ejected: false, next: true },
    ]);
  });

  it("no rule matching is a 404 from the agent, with every rule's reason", () => {
    const e = explain(traffic(jason), "GET", `http://${REVIEWS}/`);
    expect(e.outcome).toBe("refused");
    expect(e.refusal?.code).toBe("NM_NO_ROUTE");
    expect(e.rules?.map((r) => r.failed)).toEqual([
      ["path PathPrefix /v2 (request: /)", "header end-user = jason (request: none)"],
      ["method POST (request: GET)"],
      ["query v = 1 (request: none)"],
    ]);
    expect(e.steps.find((s) => s.step === "route")?.summary).toBe(
      "no HTTPRoute rule matches: the agent answers 404 (NM_NO_ROUTE)",
    );
  });

  it("a split lists every weight, follows the heaviest, and counts a missing backend's share", () => {
    const split = route("split", [
      {
        backendRefs: [
          { name: "reviews-v1", weight: 30 },
          { name: "reviews-v2", weight: 60 },
          { name: "gone", weight: 10 },
        ],
      },
    ]);
    const e = explain(traffic(split), "GET", `http://${REVIEWS}/`);
    expect(e.backends).toEqual([
      { service: "reviews-v1.default:80", weight: 30, share: 0.3, assumed: false },
      { service: "reviews-v2.default:80", weight: 60, share: 0.6, assumed: true },
    ]);
    expect(e.missingBackendWeight).toBe(10);
    expect(e.endpoints?.map((x) => x.pod)).toEqual(["default/reviews-2"]);
    expect(e.steps.find((s) => s.step === "backend")?.details).toContain(
      "weight 10 (10%) names no known Service: those requests get 500 (NM_BACKEND_NOT_FOUND)",
    );
  });

  it("the policy's timeouts, retries and faults are those the plan applies; a certain abort is the answer", () => {
    const policy = {
      kind: "TrafficPolicy",
      name: "p",
      namespace: "default",
      spec: {
        targetRefs: [{ name: "reviews" }],
        timeouts: { request: "2s" },
        retries: { attempts: 3 },
        faultInjection: { delay: { fixedDelay: "1s", percent: 50 } },
      },
    };
    const e = explain(traffic(policy), "POST", `http://${REVIEWS}/`);
    expect(e.policy).toContain("timeouts: request 2000 ms, per try none, connect none");
    expect(e.policy).toContain("retries: not for POST (not idempotent; retryNonIdempotent is off)");
    expect(e.policy).toContain("faults (source agent): delay 1000 ms for 50%");
    const abort = {
      ...policy,
      name: "q",
      spec: { targetRefs: [{ name: "reviews" }], faultInjection: { abort: { httpStatus: 418, percent: 100 } } },
    };
    const refused = explain(traffic(abort), "GET", `http://${REVIEWS}/`);
    expect(refused).toMatchObject({ outcome: "refused", refusal: { code: "NM_FAULT_ABORT" } });
    expect(refused.steps.find((s) => s.step === "policy")?.summary).toMatch(/^the source agent answers 418 itself/);
  });

  it("gRPC calls are explained by the GRPCRoutes; a route named twice as parent counts twice, as in the snapshot", () => {
    const greeter = {
      kind: "GRPCRoute",
      name: "greeter",
      namespace: "default",
      spec: {
        parentRefs: [{ name: "reviews", port: 9090 }, { name: "reviews" }],
        rules: [
          {
            matches: [{ method: { service: "helloworld.Greeter", method: "SayHello" } }],
            backendRefs: [{ name: "reviews-v2", port: 80 }],
          },
          { backendRefs: [{ name: "reviews-v1", port: 80 }] },
        ],
      },
    };
    const e = explain(traffic(greeter), "POST", `http://${REVIEWS}:9090/helloworld.Greeter/SayHi`, {
      "content-type": "application/grpc",
    });
    expect(e.rules?.[0]).toEqual({
      rule: "default/greeter#0",
      match: 0,
      matched: false,
      failed: ["gRPC method Exact helloworld.Greeter/SayHello (request: /helloworld.Greeter/SayHi)"],
    });
    expect(e.matchedRule).toBe("default/greeter#1");
  });

  it("passthrough, a tcp port, and a request the rules do not intercept", () => {
    expect(explain([], "GET", "http://10.244.2.1:8080/").outcome).toBe("passthrough");
    const tcp = explain(traffic(jason), "GET", `http://${REVIEWS}:5432/`);
    expect(tcp.steps.find((s) => s.step === "route")?.summary).toContain("declared tcp");
    expect(tcp.rules).toBeUndefined();
    expect(tcp.endpoints).toHaveLength(2);
  });
});
