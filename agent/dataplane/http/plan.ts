// The request plan: everything decided about a request before any upstream work — route rule,
// backend (weights), fault, rate-limit verdict, deadlines, retry policy, mirror. A pure function
// of the resolved target and the request: chance and the token bucket come in as `PlanEnv`, so
// every branch is testable without sockets.

import { AgentError, type AgentErrorKind, AgentErrors } from "../../errors.ts";
import { hash32 } from "../hash-ring.ts";
import { MAX_TIMER_MS } from "../limits.ts";
import type { PodContext } from "../pod.ts";
import { type CompiledPolicy, DEFAULT_POLICY } from "../policy.ts";
import type { RequestFacts } from "../routing.ts";
import { RATE_BUCKETS } from "../shared-state.ts";
import { type Backend, type Rule, selectRule } from "../snapshot.ts";
import type { AnswerOverride } from "./errors.ts";
import { IDEMPOTENT_METHODS } from "./headers.ts";
import { destinationService, type Resolved, sourcePod } from "./resolve.ts";

/** Without a retry policy, this much of a body is kept so a connect failure can fail over. */
export const DEFAULT_KEPT_BODY_BYTES = 64 * 1024;

export type RetryPolicy = NonNullable<CompiledPolicy["retry"]>;
type RateLimit = NonNullable<CompiledPolicy["rateLimit"]>;

/** What the plan cannot decide alone. */
export interface PlanEnv {
  /** Uniform in [0, 1): weights, fault ratios, mirror ratio. */
  random(): number;
  /** Takes a token from `bucket`: 0 when admitted, else microseconds until one is free. */
  rateLimitWaitUs(bucket: number, limit: RateLimit): number;
}

/** The request as the plan needs it. */
export interface PlanRequest extends RequestFacts {
  readonly grpc: boolean;
}

interface PlanCommon {
  /** The route rule the request matched (access log, response header changes). */
  readonly rule: Rule | undefined;
  /** An injected delay before anything else happens (fault injection), 0 for none. */
  readonly delayMs: number;
}

/** The agent answers the request itself (after `delayMs`). */
export interface Refusal extends PlanCommon {
  readonly kind: "refuse";
  readonly error: AgentError;
  readonly answer?: AnswerOverride;
}

/** The request goes upstream. */
export interface Proxying extends PlanCommon {
  readonly kind: "proxy";
  /** The pod whose network namespace upstream connections leave from. */
  readonly from: PodContext;
  readonly policy: CompiledPolicy;
  /** Outbound: the backend endpoints are picked from. Inbound: none (the local pod). */
  readonly backend: Backend | undefined;
  /** The Service a destination agent is told the request was sent to. */
  readonly sentTo: string | undefined;
  /** ConsistentHash input. */
  readonly hashKey: string | undefined;
  readonly requestTimeoutMs: number | undefined;
  readonly perTryMs: number | undefined;
  /** Set only when this request may be retried (outbound, a method the policy retries). */
  readonly retry: RetryPolicy | undefined;
  /** How much of the body is kept for a failover, a retry or a mirror. */
  readonly keptBodyBytes: number;
  readonly mirror: Backend | undefined;
  /** The route's shared counters (round robin, retry budget). */
  readonly routeSlot: number;
}

export type RequestPlan = Refusal | Proxying;

export function planRequest(target: Resolved, req: PlanRequest, env: PlanEnv): RequestPlan {
  return target.direction === "outbound" ? planOutbound(target, req, env) : planInbound(target, req, env);
}

function planOutbound(target: Resolved & { direction: "outbound" }, req: PlanRequest, env: PlanEnv): RequestPlan {
  const policy = target.route.policy;
  const { rule, routed } = selectRule(target.route, req.grpc, req);
  if (routed && !rule) return refuse(AgentErrors.NO_ROUTE, req.path, rule);
  const backend = rule ? pickWeighted(rule, env.random) : target.route.self;
  if (!backend) return refuse(AgentErrors.BACKEND_NOT_FOUND, rule?.name, rule);
  const fault = policy.fault && drawFault(policy.fault, req, env.random);
  if (fault?.abort) {
    return {
      kind: "refuse",
      error: new AgentError(AgentErrors.FAULT_ABORT),
      answer: fault.abort,
      rule,
      delayMs: fault.delayMs,
    };
  }
  const lb = backend.policy.lb;
  return {
    ...proxying(target, policy, rule, req),
    delayMs: fault?.delayMs ?? 0,
    backend,
    sentTo: backend.route.id,
    hashKey: lb.hashHeader !== undefined ? req.header(lb.hashHeader) : lb.hashSourceIp ? target.from.pod.ip : undefined,
    retry:
      policy.retry && (policy.retry.nonIdempotent || IDEMPOTENT_METHODS.has(req.method)) ? policy.retry : undefined,
    mirror: rule?.mirror && env.random() < rule.mirror.ratio ? rule.mirror.backend : undefined,
  };
}

function planInbound(target: Resolved & { direction: "inbound" }, req: PlanRequest, env: PlanEnv): RequestPlan {
  const policy = target.route?.policy ?? DEFAULT_POLICY;
  if (policy.rateLimit) {
    // One bucket per destination pod (several pods of a Service may share this agent).
    const key = `${destinationService(target)}|${target.to.pod.ip}:${target.port}`;
    const bucket = hash32(policy.rateLimit.perSource ? `${key}|${target.caller.key}` : key) % RATE_BUCKETS;
    const waitUs = env.rateLimitWaitUs(bucket, policy.rateLimit);
    if (waitUs > 0) {
      const retryAfterS = Math.max(1, Math.ceil(waitUs / 1_000_000));
      return { ...refuse(AgentErrors.RATE_LIMITED, undefined, undefined), answer: { retryAfterS } };
    }
  }
  return {
    ...proxying(target, policy, undefined, req),
    delayMs: 0,
    backend: undefined,
    sentTo: undefined,
    hashKey: undefined,
    retry: undefined,
    mirror: undefined,
  };
}

/** What both directions decide the same way. */
function proxying(target: Resolved, policy: CompiledPolicy, rule: Rule | undefined, req: PlanRequest) {
  // Timeouts: the rule's, else the policy's; a gRPC deadline can only shorten them.
  const grpcDeadline = req.grpc ? grpcTimeoutMs(req.header("grpc-timeout")) : undefined;
  const configured = rule?.requestTimeoutMs ?? policy.requestTimeoutMs;
  const shortest =
    configured !== undefined && grpcDeadline !== undefined
      ? Math.min(configured, grpcDeadline)
      : (configured ?? grpcDeadline);
  const perTry = rule?.perTryTimeoutMs ?? policy.perTryTimeoutMs;
  return {
    kind: "proxy" as const,
    rule,
    from: sourcePod(target),
    policy,
    requestTimeoutMs: shortest !== undefined && shortest <= MAX_TIMER_MS ? shortest : undefined,
    perTryMs: perTry !== undefined && perTry <= MAX_TIMER_MS ? perTry : undefined,
    // Kept up to the retry policy's cap whether or not this method is retried: a failover needs it too.
    keptBodyBytes:
      (target.direction === "outbound" ? policy.retry?.maxBodyBytes : undefined) ?? DEFAULT_KEPT_BODY_BYTES,
    routeSlot: target.route?.slot ?? 0,
  };
}

function refuse(kind: AgentErrorKind, detail: string | undefined, rule: Rule | undefined): Refusal {
  return { kind: "refuse", error: new AgentError(kind, detail), rule, delayMs: 0 };
}

/** grpc-timeout ("100m", "5S") in ms. */
export function grpcTimeoutMs(value: string | undefined): number | undefined {
  const m = value && /^(\d{1,8})([HMSmun])$/.exec(value);
  if (!m) return undefined;
  const unit = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000001 }[m[2] as "H"];
  return Number(m[1]) * unit;
}

/** A backend by weight, or undefined when the draw lands on the invalid backends' share. */
function pickWeighted(rule: Rule, random: () => number): Backend | undefined {
  let r = random() * rule.totalWeight;
  for (const b of rule.backends) {
    r -= b.weight;
    if (r < 0) return b;
  }
  return undefined;
}

/**
 * Fault injection (on the source side, as Istio does) for requests whose headers match: a delay,
 * then maybe an abort with the status the policy names.
 */
function drawFault(
  fault: NonNullable<CompiledPolicy["fault"]>,
  req: RequestFacts,
  random: () => number,
): { delayMs: number; abort?: AnswerOverride } | undefined {
  for (const h of fault.headers) {
    const v = req.header(h.name);
    if (v === undefined || !h.test(v)) return undefined;
  }
  const delayMs = fault.delayRatio > 0 && random() < fault.delayRatio ? fault.delayMs : 0;
  if (fault.abortRatio > 0 && random() < fault.abortRatio) {
    return { delayMs, abort: { status: fault.abortHttpStatus ?? 503, grpcStatus: fault.abortGrpcStatus } };
  }
  return { delayMs };
}
