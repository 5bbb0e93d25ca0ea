import { PassThrough } from "node:stream";
import { describe, expect, it } from "vitest";
import { AgentError, AgentErrors } from "../../errors.ts";
import { failure, type Outcome } from "./attempt.ts";
import type { RetryPolicy } from "./plan.ts";
import { decideRetry, MAX_RETRY_AFTER_MS, type RetryState, retryNames } from "./retry.ts";

function response(status: number, headers: Record<string, string> = {}, trailersOnly = false): Outcome {
  return {
    kind: "response",
    status,
    headers,
    body: new PassThrough(),
    trailersOnly,
    trailers: () => undefined,
    abort: () => {},
  };
}
const connectFailure = failure(new AgentError(AgentErrors.CONNECT_FAILED));
const reset = failure(new Error("socket hang up"));
const perTryTimeout = failure(new AgentError(AgentErrors.PER_TRY_TIMEOUT));

const POLICY: RetryPolicy = {
  attempts: 2,
  on: new Set(["5xx", "reset", "connect-failure", "unavailable"] as never[]),
  baseMs: 25,
  maxMs: 250,
  nonIdempotent: false,
  maxBodyBytes: 65536,
  budgetPercent: 20,
  budgetMin: 3,
};
const STATE: RetryState = {
  retries: 0,
  msLeft: Number.POSITIVE_INFINITY,
  replayable: true,
  canFailOver: true,
  nowMs: 0,
};

// [what, outcome, state changes, policy, expected]
const CASES: [string, Outcome, Partial<RetryState>, RetryPolicy | undefined, ReturnType<typeof decideRetry>][] = [
  ["a 200 is committed", response(200), {}, POLICY, { kind: "commit" }],
  ["a 503 is retried after jittered backoff", response(503), {}, POLICY, { kind: "retry", delayMs: 12.5 }],
  ["the backoff doubles per retry", response(503), { retries: 1 }, POLICY, { kind: "retry", delayMs: 25 }],
  ["no retry left: the 503 goes to the client", response(503), { retries: 2 }, POLICY, { kind: "commit" }],
  ["a 404 is not a failure", response(404), {}, POLICY, { kind: "commit" }],
  ["a 429 only with retriable-429", response(429), {}, POLICY, { kind: "commit" }],
  ["no policy: the 503 goes to the client", response(503), {}, undefined, { kind: "commit" }],
  ["a body no longer kept cannot be resent", response(503), { replayable: false }, POLICY, { kind: "commit" }],
  ["Retry-After is waited for", response(503, { "retry-after": "2" }), {}, POLICY, { kind: "retry", delayMs: 2000 }],
  [
    "a Retry-After past 10 s is not",
    response(503, { "retry-after": String(MAX_RETRY_AFTER_MS / 1000 + 1) }),
    {},
    POLICY,
    { kind: "commit" },
  ],
  ["no retry that would end past the deadline", response(503), { msLeft: 10 }, POLICY, { kind: "commit" }],
  ["a connect failure fails over, whatever the policy", connectFailure, {}, undefined, { kind: "failover" }],
  [
    "inbound cannot fail over: the failure is the answer",
    connectFailure,
    { canFailOver: false },
    undefined,
    { kind: "fail" },
  ],
  [
    "a connect failure without the body kept is retried by policy",
    connectFailure,
    { replayable: false },
    POLICY,
    { kind: "fail" },
  ],
  ["a reset is retried with retryOn reset", reset, {}, POLICY, { kind: "retry", delayMs: 12.5 }],
  [
    "a per-try timeout is not a reset",
    perTryTimeout,
    {},
    { ...POLICY, on: new Set(["reset"] as never[]) },
    { kind: "fail" },
  ],
  ["a per-try timeout is a 5xx", perTryTimeout, {}, POLICY, { kind: "retry", delayMs: 12.5 }],
  [
    "gRPC UNAVAILABLE (trailers-only) is retried",
    response(200, { "grpc-status": "14" }, true),
    {},
    POLICY,
    { kind: "retry", delayMs: 12.5 },
  ],
  [
    "gRPC status in a full response is not looked at",
    response(200, { "grpc-status": "14" }),
    {},
    POLICY,
    { kind: "commit" },
  ],
];

describe("decideRetry", () => {
  it.each(CASES)("%s", (_, outcome, state, policy, expected) => {
    expect(decideRetry(outcome, { ...STATE, ...state }, policy, () => 0.5)).toEqual(expected);
  });
});

describe("retryNames", () => {
  it("names each outcome in the retryOn vocabulary", () => {
    expect(retryNames(response(503))).toEqual(["5xx", "gateway-error"]);
    expect(retryNames(response(429))).toEqual(["retriable-429"]);
    expect(retryNames(connectFailure)).toEqual(["connect-failure", "gateway-error", "5xx"]);
    expect(retryNames(reset)).toEqual(["reset", "5xx"]);
    expect(retryNames(perTryTimeout)).toEqual(["gateway-error", "5xx"]);
    expect(retryNames(response(200, { "grpc-status": "4" }, true))).toEqual(["deadline-exceeded"]);
  });
});
