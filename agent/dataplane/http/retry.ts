// The retry decision, pure: an attempt's outcome, the request's state and its retry policy in; what
// to do next out. Like grpc-js's RetryingCall and Envoy's retry policy: retryOn names, a capped
// jittered backoff or the server's Retry-After, within the request's deadline. The retry budget is
// shared state and is asked by the caller once this says "retry".

import type { Outcome, UpstreamResponse } from "./attempt.ts";
import { headerValue } from "./headers.ts";
import type { RetryPolicy } from "./plan.ts";

/** A Retry-After longer than this is not waited for: the answer goes to the client. */
export const MAX_RETRY_AFTER_MS = 10_000;

export type RetryDecision =
  /** The upstream's answer goes to the client as it is. */
  | { readonly kind: "commit" }
  /** The failure becomes the agent's error answer. */
  | { readonly kind: "fail" }
  /** The request never reached an app: try another endpoint now (not a retry, no budget). */
  | { readonly kind: "failover" }
  | { readonly kind: "retry"; readonly delayMs: number };

export interface RetryState {
  /** Retries made so far. */
  readonly retries: number;
  /** Time left before the request's deadline (Infinity without one). */
  readonly msLeft: number;
  /** The whole body so far is kept: it can be sent again. */
  readonly replayable: boolean;
  /** Other endpoints may be tried after a connect failure (outbound; inbound has one pod). */
  readonly canFailOver: boolean;
  readonly nowMs: number;
}

const COMMIT: RetryDecision = { kind: "commit" };
const FAIL: RetryDecision = { kind: "fail" };
const FAILOVER: RetryDecision = { kind: "failover" };

/** `policy`: undefined when this request may not be retried (see plan.ts). */
export function decideRetry(
  outcome: Outcome,
  state: RetryState,
  policy: RetryPolicy | undefined,
  random: () => number,
): RetryDecision {
  const finish = outcome.kind === "response" ? COMMIT : FAIL;
  if (outcome.kind === "failure" && outcome.class === "connect-failure" && state.canFailOver && state.replayable) {
    // As a TCP connection would, whatever the retry policy. Needs the body kept.
    return FAILOVER;
  }
  const names = retryNames(outcome);
  const failed = outcome.kind === "failure" || names.length > 0;
  if (!failed || !policy || state.retries >= policy.attempts || !state.replayable) return finish;
  if (!names.some((n) => policy.on.has(n as never))) return finish;
  // Wait: the server's Retry-After, else jittered exponential backoff; too long means no retry.
  const hinted = retryAfterMs(outcome, state.nowMs);
  const delayMs = hinted ?? random() * Math.min(policy.maxMs, policy.baseMs * 2 ** state.retries);
  if ((hinted !== undefined && hinted > MAX_RETRY_AFTER_MS) || delayMs >= state.msLeft) return finish;
  return { kind: "retry", delayMs };
}

/** gRPC status names as retryOn spells them. */
const GRPC_RETRY_NAMES: Record<number, string> = {
  1: "cancelled",
  4: "deadline-exceeded",
  8: "resource-exhausted",
  13: "internal",
  14: "unavailable",
};

/** The retryOn names an outcome matches. */
export function retryNames(outcome: Outcome): string[] {
  if (outcome.kind === "failure") {
    if (outcome.class === "connect-failure") return ["connect-failure", "gateway-error", "5xx"];
    if (outcome.class === "reset") return ["reset", "5xx"];
    return ["gateway-error", "5xx"]; // per-try timeout
  }
  const names: string[] = [];
  const s = outcome.status;
  if (s >= 500) names.push("5xx");
  if (s === 502 || s === 503 || s === 504) names.push("gateway-error");
  if (s === 429) names.push("retriable-429");
  const grpcStatus = trailersOnlyGrpcStatus(outcome);
  if (grpcStatus !== undefined && GRPC_RETRY_NAMES[grpcStatus]) names.push(GRPC_RETRY_NAMES[grpcStatus]!);
  return names;
}

/** The gRPC status of a trailers-only answer, if that is what the response is. */
function trailersOnlyGrpcStatus(res: UpstreamResponse): number | undefined {
  if (!res.trailersOnly) return undefined;
  const v = Number(res.headers["grpc-status"]);
  return Number.isInteger(v) ? v : undefined;
}

function retryAfterMs(res: Outcome, nowMs: number): number | undefined {
  if (res.kind !== "response") return undefined;
  const v = headerValue(res.headers, "retry-after");
  if (v === undefined) return undefined;
  const seconds = Number(v);
  if (Number.isFinite(seconds) && seconds >= 0) return seconds * 1000;
  const date = Date.parse(v);
  return Number.isNaN(date) ? undefined : Math.max(0, date - nowMs);
}
