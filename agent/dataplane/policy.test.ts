import { describe, expect, it } from "vitest";
import { parseTrafficObject, type TrafficObject, type TrafficPolicySpec } from "../../api/traffic.ts";
import { compilePolicy, DEFAULT_IDLE_TIMEOUT_MS, DEFAULT_POLICY, headerTest, policiesByService } from "./policy.ts";

function parsed(obj: unknown): TrafficObject {
  const r = parseTrafficObject(obj);
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.value;
}

function policySpec(spec: Record<string, unknown>): TrafficPolicySpec {
  const o = parsed({
    kind: "TrafficPolicy",
    name: "p",
    namespace: "default",
    spec: { targetRefs: [{ name: "x" }], ...spec },
  });
  if (o.kind !== "TrafficPolicy") throw new Error("not a policy");
  return o.spec;
}

const policyObj = (name: string, namespace: string, targets: string[], spec: Record<string, unknown> = {}) =>
  parsed({ kind: "TrafficPolicy", name, namespace, spec: { targetRefs: targets.map((t) => ({ name: t })), ...spec } });

describe("compilePolicy", () => {
  it("carries the tracing rate as a percentage; absent when the policy sets none", () => {
    expect(compilePolicy("p", policySpec({ tracing: { randomSamplingPercentage: 2.5 } })).tracingPercent).toBe(2.5);
    expect(compilePolicy("p", policySpec({})).tracingPercent).toBeUndefined();
  });
  it("fills defaults: round robin, idle 1h, X-Forwarded-For appended, nothing else", () => {
    const p = compilePolicy("default/p", policySpec({}));
    expect(DEFAULT_IDLE_TIMEOUT_MS).toBe(3_600_000);
    expect(p).toEqual({
      name: "default/p",
      lb: { type: "RoundRobin", hashHeader: undefined, hashSourceIp: false, localityToleranceMs: undefined },
      requestTimeoutMs: undefined,
      perTryTimeoutMs: undefined,
      idleTimeoutMs: 3_600_000,
      forwardedFor: "Append",
      connectTimeoutMs: undefined,
      retry: undefined,
      circuitBreaker: undefined,
      outlier: undefined,
      fault: undefined,
      rateLimit: undefined,
    });
    expect(DEFAULT_POLICY.idleTimeoutMs).toBe(3_600_000);
    expect(DEFAULT_POLICY.lb.type).toBe("RoundRobin");
  });

  it("compiles durations to milliseconds", () => {
    const p = compilePolicy(
      "p",
      policySpec({ timeouts: { request: "1m30s", perTry: "500ms", idle: "2h", connect: "1s" } }),
    );
    expect(p.requestTimeoutMs).toBe(90_000);
    expect(p.perTryTimeoutMs).toBe(500);
    expect(p.idleTimeoutMs).toBe(7_200_000);
    expect(p.connectTimeoutMs).toBe(1000);
  });

  it("compiles retries with their defaults", () => {
    const p = compilePolicy("p", policySpec({ retries: {} }));
    expect(p.retry).toEqual({
      attempts: 2,
      on: new Set(["connect-failure", "reset", "gateway-error", "unavailable"]),
      baseMs: 25,
      maxMs: 250,
      nonIdempotent: false,
      maxBodyBytes: 65_536,
      budgetPercent: 20,
      budgetMin: 3,
    });
    const q = compilePolicy(
      "p",
      policySpec({
        retries: {
          attempts: 5,
          retryOn: ["5xx"],
          backoff: { baseInterval: "10ms", maxInterval: "1s" },
          retryNonIdempotent: true,
          maxRetryBodyBytes: 0,
          budget: { percent: 50, minConcurrency: 0 },
        },
      }),
    );
    expect(q.retry).toEqual({
      attempts: 5,
      on: new Set(["5xx"]),
      baseMs: 10,
      maxMs: 1000,
      nonIdempotent: true,
      maxBodyBytes: 0,
      budgetPercent: 50,
      budgetMin: 0,
    });
  });

  it("compiles circuit breaking with unset limits unlimited", () => {
    const p = compilePolicy("p", policySpec({ circuitBreaker: { maxRequests: 10 } }));
    expect(p.circuitBreaker).toEqual({ maxConnections: 2 ** 31 - 1, maxPending: 2 ** 31 - 1, maxRequests: 10 });
    const q = compilePolicy("p", policySpec({ circuitBreaker: { maxConnections: 1, maxPendingRequests: 0 } }));
    expect(q.circuitBreaker?.maxConnections).toBe(1);
    expect(q.circuitBreaker?.maxPending).toBe(0);
  });

  it("compiles outlier detection: durations, ratio", () => {
    const p = compilePolicy("p", policySpec({ outlierDetection: { consecutive5xx: 3 } }));
    expect(p.outlier).toEqual({
      consecutive5xx: 3,
      consecutiveGatewayErrors: 2 ** 31 - 1,
      baseMs: 30_000,
      maxMs: 300_000,
      maxEjectionRatio: 0.5,
    });
    const q = compilePolicy(
      "p",
      policySpec({ outlierDetection: { baseEjectionTime: "5s", maxEjectionTime: "1m", maxEjectionPercent: 100 } }),
    );
    expect([q.outlier?.baseMs, q.outlier?.maxMs, q.outlier?.maxEjectionRatio]).toEqual([5000, 60_000, 1]);
  });

  it("compiles fault injection: ratios and header tests", () => {
    const p = compilePolicy(
      "p",
      policySpec({
        faultInjection: {
          delay: { fixedDelay: "200ms", percent: 25 },
          abort: { httpStatus: 503, percent: 10 },
          headers: [
            { name: "X-Fault", value: "yes" },
            { name: "x-user", type: "RegularExpression", value: "test-[0-9]+" },
          ],
        },
      }),
    );
    const f = p.fault!;
    expect([f.delayMs, f.delayRatio, f.abortHttpStatus, f.abortGrpcStatus, f.abortRatio]).toEqual([
      200,
      0.25,
      503,
      undefined,
      0.1,
    ]);
    expect(f.headers.map((h) => h.name)).toEqual(["x-fault", "x-user"]);
    expect(f.headers[0]!.test("yes")).toBe(true);
    expect(f.headers[0]!.test("YES")).toBe(false);
    expect(f.headers[1]!.test("test-12")).toBe(true);
    expect(f.headers[1]!.test("test-12x")).toBe(false); // anchored
    const g = compilePolicy("p", policySpec({ faultInjection: { abort: { grpcStatus: 14, percent: 100 } } })).fault!;
    expect([g.delayMs, g.delayRatio, g.abortHttpStatus, g.abortGrpcStatus, g.abortRatio]).toEqual([
      0,
      0,
      undefined,
      14,
      1,
    ]);
    expect(g.headers).toEqual([]);
  });

  it("compiles rate limits: interval in µs, burst defaulting to one second's worth", () => {
    const p = compilePolicy("p", policySpec({ rateLimit: { requestsPerSecond: 100 } }));
    expect(p.rateLimit).toEqual({ intervalUs: 10_000, burst: 100, perSource: false });
    const q = compilePolicy("p", policySpec({ rateLimit: { requestsPerSecond: 0.5, perSourceWorkload: true } }));
    expect(q.rateLimit).toEqual({ intervalUs: 2_000_000, burst: 1, perSource: true });
    const r = compilePolicy("p", policySpec({ rateLimit: { requestsPerSecond: 2.5, burst: 7 } }));
    expect(r.rateLimit).toEqual({ intervalUs: 400_000, burst: 7, perSource: false });
  });

  it("compiles load balancing: hash header lower-cased, locality tolerance default 1 ms", () => {
    const p = compilePolicy(
      "p",
      policySpec({ loadBalancer: { type: "ConsistentHash", consistentHash: { header: "X-User" }, locality: {} } }),
    );
    expect(p.lb).toEqual({ type: "ConsistentHash", hashHeader: "x-user", hashSourceIp: false, localityToleranceMs: 1 });
    const q = compilePolicy(
      "p",
      policySpec({ loadBalancer: { type: "ConsistentHash", consistentHash: { sourceIP: true } } }),
    );
    expect(q.lb).toEqual({
      type: "ConsistentHash",
      hashHeader: undefined,
      hashSourceIp: true,
      localityToleranceMs: undefined,
    });
    const r = compilePolicy(
      "p",
      policySpec({ loadBalancer: { type: "LeastRequest", locality: { rttToleranceMs: 0 } } }),
    );
    expect(r.lb.type).toBe("LeastRequest");
    expect(r.lb.localityToleranceMs).toBe(0);
  });
});

describe("headerTest", () => {
  it("matches Exact by equality and RegularExpression anchored at both ends", () => {
    expect(headerTest("Exact", "a.b")("a.b")).toBe(true);
    expect(headerTest("Exact", "a.b")("axb")).toBe(false);
    const re = headerTest("RegularExpression", "a.b|c");
    expect(re("axb")).toBe(true);
    expect(re("c")).toBe(true);
    expect(re("xc")).toBe(false); // the alternation is anchored as a whole
    expect(re("axbx")).toBe(false);
  });
});

describe("policiesByService", () => {
  it("keys policies by targeted Service name.namespace", () => {
    const m = policiesByService([
      policyObj("p", "default", ["reviews", "ratings"], { timeouts: { request: "1s" } }),
      policyObj("p", "shop", ["reviews"], { timeouts: { request: "2s" } }),
    ]);
    expect([...m.keys()].sort()).toEqual(["ratings.default", "reviews.default", "reviews.shop"]);
    expect(m.get("reviews.default")?.requestTimeoutMs).toBe(1000);
    expect(m.get("ratings.default")?.name).toBe("default/p");
    expect(m.get("reviews.shop")?.requestTimeoutMs).toBe(2000);
    expect(m.get("reviews.shop")?.name).toBe("shop/p");
  });

  it("lets the first policy by name win for a Service", () => {
    const m = policiesByService([
      policyObj("zeta", "default", ["reviews"], { timeouts: { request: "3s" } }),
      policyObj("alpha", "default", ["reviews", "ratings"], { timeouts: { request: "1s" } }),
      policyObj("beta", "default", ["reviews", "details"], { timeouts: { request: "2s" } }),
    ]);
    expect(m.get("reviews.default")?.name).toBe("default/alpha");
    expect(m.get("reviews.default")?.requestTimeoutMs).toBe(1000);
    expect(m.get("details.default")?.name).toBe("default/beta");
    expect(m.get("ratings.default")?.name).toBe("default/alpha");
  });

  it("ignores routes", () => {
    const route = parsed({
      kind: "HTTPRoute",
      name: "r",
      namespace: "default",
      spec: { parentRefs: [{ name: "reviews" }], rules: [{ backendRefs: [{ name: "reviews" }] }] },
    });
    expect(policiesByService([route]).size).toBe(0);
  });
});
