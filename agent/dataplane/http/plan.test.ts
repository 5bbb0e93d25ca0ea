import { describe, expect, it } from "vitest";
import type { Service } from "../../../api/services.ts";
import { loopbackDataplane, loopbackPod } from "../testing/loopback.ts";
import { type PlanEnv, type PlanRequest, type Proxying, planRequest, type Refusal } from "./plan.ts";
import { type Resolved, resolveTarget } from "./resolve.ts";

const CLIENT = loopbackPod("10.244.1.5", "client-0", "client");
const WEB = loopbackPod("10.244.2.7", "web-0", "web");

function svc(name: string, vip: string, ip: string): Service {
  return {
    name,
    namespace: "default",
    vip,
    ports: [{ port: 80, targetPort: 8080, protocol: "http" }],
    endpoints: [{ ip, pod: name }],
  };
}
const SERVICES = [svc("web", "10.96.0.1", WEB.pod.ip), svc("web-v2", "10.96.0.2", "10.244.3.1")];

function policy(spec: Record<string, unknown>, target = "web") {
  return {
    kind: "TrafficPolicy",
    name: `p-${target}`,
    namespace: "default",
    spec: { targetRefs: [{ name: target }], ...spec },
  };
}
function route(rules: unknown[]) {
  return { kind: "HTTPRoute", name: "r", namespace: "default", spec: { parentRefs: [{ name: "web" }], rules } };
}

function outbound(traffic: unknown[]): Resolved {
  const snap = loopbackDataplane(SERVICES, traffic).snapshot();
  return resolveTarget(snap, { direction: "outbound", from: CLIENT, routeKey: "10.96.0.1:80" }, {})!;
}
function inbound(traffic: unknown[], callerKey = "default/client"): Resolved {
  const snap = loopbackDataplane(SERVICES, traffic).snapshot();
  const caller = { workload: { name: "client", namespace: "default" }, key: callerKey, viaTunnel: true };
  return resolveTarget(snap, { direction: "inbound", to: WEB, port: 8080, caller }, {})!;
}

function request(path = "/", method = "GET", headers: Record<string, string> = {}, grpc = false): PlanRequest {
  return { method, path, query: "", header: (n) => headers[n], grpc };
}

/** Draws come from a list (then 0.99); the token bucket admits `admitted` requests. */
function env(draws: number[] = [], admitted = Number.POSITIVE_INFINITY): PlanEnv & { buckets: number[] } {
  const buckets: number[] = [];
  return {
    buckets,
    random: () => draws.shift() ?? 0.99,
    rateLimitWaitUs: (bucket) => {
      buckets.push(bucket);
      return buckets.length <= admitted ? 0 : 400_000;
    },
  };
}

const proxying = (p: unknown) => p as Proxying;
const refusal = (p: unknown) => p as Refusal;

describe("planRequest, outbound", () => {
  it("without routes or policy: the Service itself, no deadlines, no retry, 64 KiB kept", () => {
    const p = proxying(planRequest(outbound([]), request(), env()));
    expect(p.kind).toBe("proxy");
    expect([p.backend?.route.id, p.sentTo, p.from.key]).toEqual(["web.default", "web.default", CLIENT.key]);
    expect([p.requestTimeoutMs, p.perTryMs, p.retry, p.mirror, p.delayMs]).toEqual([
      undefined,
      undefined,
      undefined,
      undefined,
      0,
    ]);
    expect(p.keptBodyBytes).toBe(64 * 1024);
  });

  it("refuses a path no rule matches (404) and picks backends by weight", () => {
    const target = outbound([
      route([
        {
          matches: [{ path: { type: "PathPrefix", value: "/api" } }],
          backendRefs: [
            { name: "web", weight: 1 },
            { name: "web-v2", weight: 3 },
          ],
        },
      ]),
    ]);
    expect(refusal(planRequest(target, request("/other"), env())).error.code).toBe("NM_NO_ROUTE");
    expect(proxying(planRequest(target, request("/api"), env([0.1]))).backend?.route.id).toBe("web.default");
    expect(proxying(planRequest(target, request("/api"), env([0.3]))).backend?.route.id).toBe("web-v2.default");
  });

  it("gives the share of a backend that does not exist a 500 NM_BACKEND_NOT_FOUND", () => {
    const target = outbound([
      route([
        {
          backendRefs: [
            { name: "web", weight: 1 },
            { name: "nope", weight: 1 },
          ],
        },
      ]),
    ]);
    expect(proxying(planRequest(target, request(), env([0.2]))).backend?.route.id).toBe("web.default");
    expect(refusal(planRequest(target, request(), env([0.7]))).error.code).toBe("NM_BACKEND_NOT_FOUND");
  });

  it("draws a fault's delay and abort (with the policy's status) only for matching headers", () => {
    const fault = {
      delay: { fixedDelay: "50ms", percent: 50 },
      abort: { httpStatus: 418, percent: 50 },
      headers: [{ name: "x-test", value: "yes" }],
    };
    const target = outbound([policy({ faultInjection: fault })]);
    expect(proxying(planRequest(target, request(), env([0, 0]))).delayMs).toBe(0); // no x-test: no fault
    const matching = request("/", "GET", { "x-test": "yes" });
    const aborted = refusal(planRequest(target, matching, env([0.1, 0.1])));
    expect([aborted.error.code, aborted.answer?.status, aborted.delayMs]).toEqual(["NM_FAULT_ABORT", 418, 50]);
    const delayed = proxying(planRequest(target, matching, env([0.1, 0.9])));
    expect([delayed.kind, delayed.delayMs]).toEqual(["proxy", 50]);
  });

  it("retries only methods the policy allows; keeps the body up to the retry cap either way", () => {
    const target = outbound([policy({ retries: { attempts: 2, retryOn: ["5xx"] } })]);
    const get = proxying(planRequest(target, request("/", "GET"), env()));
    const post = proxying(planRequest(target, request("/", "POST"), env()));
    expect(get.retry?.attempts).toBe(2);
    expect(post.retry).toBeUndefined();
    expect(post.keptBodyBytes).toBe(get.keptBodyBytes);
  });

  it("takes the shorter of the policy's timeout and a gRPC deadline", () => {
    const target = outbound([policy({ timeouts: { request: "2s", perTry: "500ms" } })]);
    const grpc = (t: string) => request("/pkg.Svc/Call", "POST", { "grpc-timeout": t }, true);
    expect(proxying(planRequest(target, grpc("100m"), env())).requestTimeoutMs).toBe(100);
    expect(proxying(planRequest(target, grpc("5S"), env())).requestTimeoutMs).toBe(2000);
    expect(proxying(planRequest(target, grpc("junk"), env())).requestTimeoutMs).toBe(2000);
    expect(proxying(planRequest(target, request(), env())).perTryMs).toBe(500);
  });

  it("hashes on the configured header", () => {
    const target = outbound([
      policy({ loadBalancer: { type: "ConsistentHash", consistentHash: { header: "X-User" } } }),
    ]);
    expect(proxying(planRequest(target, request("/", "GET", { "x-user": "ada" }), env())).hashKey).toBe("ada");
  });
});

describe("planRequest, inbound", () => {
  it("delivers to the local pod with no retries and no backend", () => {
    const p = proxying(planRequest(inbound([]), request(), env()));
    expect([p.kind, p.backend, p.retry, p.from.key]).toEqual(["proxy", undefined, undefined, WEB.key]);
  });

  it("refuses past the rate limit with 429 and the seconds to wait; one bucket per source when asked", () => {
    const limited = inbound([policy({ rateLimit: { requestsPerSecond: 1, burst: 1 } })]);
    const e = env([], 1);
    expect(planRequest(limited, request(), e).kind).toBe("proxy");
    const refused = refusal(planRequest(limited, request(), e));
    expect([refused.error.code, refused.answer?.retryAfterS]).toEqual(["NM_RATE_LIMITED", 1]);
    const perSource = (key: string) =>
      inbound([policy({ rateLimit: { requestsPerSecond: 1, burst: 1, perSourceWorkload: true } })], key);
    const e2 = env();
    planRequest(perSource("default/a"), request(), e2);
    planRequest(perSource("default/b"), request(), e2);
    planRequest(limited, request(), e2);
    planRequest(limited, request(), e2);
    expect(new Set(e2.buckets.slice(0, 2)).size).toBe(2);
    expect(new Set(e2.buckets.slice(2)).size).toBe(1);
  });
});
