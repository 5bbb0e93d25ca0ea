// TrafficPolicy → the numbers the request path reads. Compiled once per snapshot: durations are
// milliseconds, sets are Sets, percentages are ratios; nothing here runs per request.

import { durationMs } from "../../api/duration.ts";
import { byCodeUnits } from "../../api/order.ts";
import { fullMatch } from "../../api/regex.ts";
import type { HealthCheck, RetryOn, TrafficObject, TrafficPolicySpec } from "../../api/traffic.ts";
import { UNLIMITED } from "./limits.ts";

export type LbType = "RoundRobin" | "LeastRequest" | "ConsistentHash";

export interface CompiledPolicy {
  readonly name: string;
  readonly lb: {
    readonly type: LbType;
    readonly hashHeader?: string;
    readonly hashSourceIp: boolean;
    readonly localityToleranceMs?: number;
  };
  readonly requestTimeoutMs?: number;
  readonly perTryTimeoutMs?: number;
  readonly idleTimeoutMs: number;
  readonly connectTimeoutMs?: number;
  readonly retry?: {
    readonly attempts: number;
    readonly on: ReadonlySet<RetryOn>;
    readonly baseMs: number;
    readonly maxMs: number;
    readonly nonIdempotent: boolean;
    readonly maxBodyBytes: number;
    readonly budgetPercent: number;
    readonly budgetMin: number;
  };
  readonly circuitBreaker?: {
    readonly maxConnections: number;
    readonly maxPending: number;
    readonly maxRequests: number;
  };
  readonly outlier?: {
    readonly consecutive5xx: number;
    readonly consecutiveGatewayErrors: number;
    readonly baseMs: number;
    readonly maxMs: number;
    readonly maxEjectionRatio: number;
  };
  /** Active health checking of the Service's endpoints (run by the control thread: control/health-checks.ts). */
  readonly healthCheck?: HealthCheck;
  readonly fault?: {
    readonly delayMs: number;
    readonly delayRatio: number;
    readonly abortHttpStatus?: number;
    readonly abortGrpcStatus?: number;
    readonly abortRatio: number;
    readonly headers: readonly { name: string; test: (value: string) => boolean }[];
  };
  readonly rateLimit?: { readonly intervalUs: number; readonly burst: number; readonly perSource: boolean };
  /** Share (0..1) of requests to log; absent: the agent-wide setting decides. */
  readonly accessLogRatio?: number;
  /** Percent (0–100) of requests sampled where their trace starts; absent: --trace-sampling decides. */
  readonly tracingPercent?: number;
  /** X-Forwarded-For: append the immediate caller's address, or replace the header with it. */
  readonly forwardedFor: "Append" | "Sanitize";
}

/** Idle timeout of connections when no policy says otherwise (Envoy's and Istio's default: 1 h). */
export const DEFAULT_IDLE_TIMEOUT_MS = 3_600_000;

export const DEFAULT_POLICY: CompiledPolicy = {
  name: "",
  lb: { type: "RoundRobin", hashSourceIp: false },
  idleTimeoutMs: DEFAULT_IDLE_TIMEOUT_MS,
  forwardedFor: "Append",
};

export function headerTest(type: "Exact" | "RegularExpression", value: string): (v: string) => boolean {
  if (type === "Exact") return (v) => v === value;
  return fullMatch(value);
}

export function compilePolicy(name: string, spec: TrafficPolicySpec): CompiledPolicy {
  const { loadBalancer: lb, timeouts, retries, circuitBreaker: cb, outlierDetection: od, faultInjection: fi } = spec;
  const rl = spec.rateLimit;
  return {
    name,
    lb: {
      type: lb?.type ?? "RoundRobin",
      hashHeader: lb?.consistentHash?.header?.toLowerCase(),
      hashSourceIp: lb?.consistentHash?.sourceIP === true,
      localityToleranceMs: lb?.locality?.rttToleranceMs,
    },
    requestTimeoutMs: timeouts?.request ? durationMs(timeouts.request) : undefined,
    perTryTimeoutMs: timeouts?.perTry ? durationMs(timeouts.perTry) : undefined,
    idleTimeoutMs: timeouts?.idle ? durationMs(timeouts.idle) : DEFAULT_IDLE_TIMEOUT_MS,
    forwardedFor: spec.forwardedFor ?? "Append",
    connectTimeoutMs: timeouts?.connect ? durationMs(timeouts.connect) : undefined,
    retry: retries && {
      attempts: retries.attempts,
      on: new Set(retries.retryOn),
      baseMs: durationMs(retries.backoff.baseInterval),
      maxMs: durationMs(retries.backoff.maxInterval),
      nonIdempotent: retries.retryNonIdempotent,
      maxBodyBytes: retries.maxRetryBodyBytes,
      budgetPercent: retries.budget.percent,
      budgetMin: retries.budget.minConcurrency,
    },
    circuitBreaker: cb && {
      maxConnections: cb.maxConnections ?? UNLIMITED,
      maxPending: cb.maxPendingRequests ?? UNLIMITED,
      maxRequests: cb.maxRequests ?? UNLIMITED,
    },
    outlier: od && {
      consecutive5xx: od.consecutive5xx ?? UNLIMITED,
      consecutiveGatewayErrors: od.consecutiveGatewayErrors ?? UNLIMITED,
      baseMs: durationMs(od.baseEjectionTime),
      maxMs: durationMs(od.maxEjectionTime),
      maxEjectionRatio: od.maxEjectionPercent / 100,
    },
    healthCheck: spec.healthCheck,
    fault: fi && {
      delayMs: fi.delay ? durationMs(fi.delay.fixedDelay) : 0,
      delayRatio: (fi.delay?.percent ?? 0) / 100,
      abortHttpStatus: fi.abort?.httpStatus,
      abortGrpcStatus: fi.abort?.grpcStatus,
      abortRatio: (fi.abort?.percent ?? 0) / 100,
      headers: (fi.headers ?? []).map((h) => ({ name: h.name.toLowerCase(), test: headerTest(h.type, h.value) })),
    },
    rateLimit: rl && {
      intervalUs: 1_000_000 / rl.requestsPerSecond,
      burst: rl.burst ?? Math.max(1, Math.ceil(rl.requestsPerSecond)),
      perSource: rl.perSourceWorkload,
    },
    accessLogRatio: spec.accessLog ? spec.accessLog.sampling / 100 : undefined,
    tracingPercent: spec.tracing?.randomSamplingPercentage,
  };
}

/**
 * The policy of each Service ("name.namespace"). When several policies target one Service, the
 * first by name wins (Gateway API resolves conflicts by age, then name; agents do not see ages).
 */
export function policiesByService(traffic: readonly TrafficObject[]): Map<string, CompiledPolicy> {
  const out = new Map<string, CompiledPolicy>();
  const policies = traffic
    .filter((o) => o.kind === "TrafficPolicy")
    .sort((a, b) => byCodeUnits(a.namespace + a.name, b.namespace + b.name));
  for (const p of policies) {
    for (const ref of p.spec.targetRefs) {
      const id = `${ref.name}.${p.namespace}`;
      if (!out.has(id)) out.set(id, compilePolicy(`${p.namespace}/${p.name}`, p.spec));
    }
  }
  return out;
}
