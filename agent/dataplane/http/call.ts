// The attempts of one request, as grpc-js's RetryingCall over its LoadBalancingCall: pick an
// endpoint, hold a lease on it, send, learn from the outcome, then commit, fail, fail over or
// retry (retry.ts decides) — all under the request's deadline and only while the client is there.

import { setTimeout as sleep } from "node:timers/promises";
import { AgentError, AgentErrors, errorCode, errorEntry } from "../../errors.ts";
import type { DataplaneContext } from "../context.ts";
import type { Endpoint } from "../endpoint.ts";
import { UNLIMITED } from "../limits.ts";
import { tunnelSecurity } from "../mtls.ts";
import { DEFAULT_POLICY } from "../policy.ts";
import { failure, type Outcome, type UpstreamRequest, type UpstreamResponse } from "./attempt.ts";
import type { RequestBody } from "./body.ts";
import type { Downstream } from "./downstream.ts";
import { IDEMPOTENT_METHODS } from "./headers.ts";
import { EndpointLease } from "./lease.ts";
import { observeAttempt } from "./outlier.ts";
import type { Proxying } from "./plan.ts";
import { type RequestRecord, recordEndpoint } from "./record.ts";
import { localEndpoint, type Resolved } from "./resolve.ts";
import { commit, reply } from "./respond.ts";
import { decideRetry, type RetryDecision } from "./retry.ts";
import { connectionLimits, startAttempt } from "./send.ts";
import { endAttemptSpan, retryReason, startAttemptSpan, traceBackoff } from "./trace.ts";

/** After one attempt: the request is answered, or the next attempt goes now or after a delay. */
type Next =
  | { readonly kind: "done" }
  | { readonly kind: "failover" }
  | { readonly kind: "retry"; readonly delayMs: number };
const DONE: Next = { kind: "done" };
const FAILOVER: Next = { kind: "failover" };

export class RetryingCall {
  private readonly tried: Endpoint[] = [];
  private lastConnectError: unknown;
  private retries = 0;
  /** A retry holds the route's retry budget until its attempt has an outcome. */
  private inRetry = false;
  private timedOut = false;
  private readonly deadline: number;
  private deadlineTimer: NodeJS.Timeout | undefined;
  /** The answer being delivered, and the attempt in flight: what the deadline or the client's leaving ends. */
  private committed: UpstreamResponse | undefined;
  private abortAttempt: (() => void) | undefined;

  private readonly ctx: DataplaneContext;
  private readonly down: Downstream;
  private readonly target: Resolved;
  private readonly plan: Proxying;
  private readonly rec: RequestRecord;
  private readonly up: UpstreamRequest & { readonly body: RequestBody };

  constructor(
    ctx: DataplaneContext,
    down: Downstream,
    target: Resolved,
    plan: Proxying,
    rec: RequestRecord,
    up: UpstreamRequest & { readonly body: RequestBody },
  ) {
    this.ctx = ctx;
    this.down = down;
    this.target = target;
    this.plan = plan;
    this.rec = rec;
    this.up = up;
    this.deadline = plan.requestTimeoutMs === undefined ? Number.POSITIVE_INFINITY : Date.now() + plan.requestTimeoutMs;
  }

  async run(): Promise<void> {
    const { ctx, down, plan } = this;
    ctx.shared.routeRequestStarted(plan.routeSlot);
    if (plan.requestTimeoutMs !== undefined) {
      this.deadlineTimer = setTimeout(() => {
        this.timedOut = true;
        this.stopInFlight();
      }, plan.requestTimeoutMs);
    }
    down.onGone(() => this.stopInFlight());
    try {
      for (;;) {
        const next = await this.attempt();
        if (next.kind === "done") return;
        if (next.kind === "retry") {
          await sleep(next.delayMs);
          if (down.gone || this.timedOut) throw this.timeout();
        }
      }
    } catch (err) {
      const code = errorCode(err);
      if (!down.gone && (code === AgentErrors.TIMEOUT.code || code === AgentErrors.PER_TRY_TIMEOUT.code)) {
        ctx.metrics.timeouts.labels(this.rec.peers.destinationService).inc();
      }
      reply(ctx, down, this.rec, err);
    } finally {
      if (this.inRetry) ctx.shared.retryEnded(plan.routeSlot);
      ctx.shared.routeRequestEnded(plan.routeSlot);
      clearTimeout(this.deadlineTimer);
      this.rec.requestBytes = this.up.body.bytes;
    }
  }

  private stopInFlight(): void {
    this.committed?.abort();
    this.abortAttempt?.();
  }

  private timeout(): AgentError {
    return new AgentError(AgentErrors.TIMEOUT, `after ${this.plan.requestTimeoutMs} ms`);
  }

  /** One endpoint, held by a lease for as long as its attempt (and a committed answer) lasts. */
  private async attempt(): Promise<Next> {
    const endpoint = this.nextEndpoint();
    this.tried.push(endpoint);
    const t = this.target;
    const security = t.direction === "outbound" ? tunnelSecurity(this.ctx, t.from, endpoint) : undefined;
    recordEndpoint(this.rec, endpoint, security);
    const guard = this.plan.backend?.policy ?? DEFAULT_POLICY;
    const lease = EndpointLease.acquire(this.ctx.shared, endpoint, guard.circuitBreaker?.maxRequests ?? UNLIMITED);
    if (!lease) {
      this.ctx.metrics.breakerTrips.labels(this.rec.peers.destinationService).inc();
      throw new AgentError(AgentErrors.CIRCUIT_OPEN, `${endpoint.ip}:${endpoint.port}: max requests`);
    }
    try {
      const span = startAttemptSpan(this.rec, endpoint, security === "mutual_tls", this.up.headers);
      const started = performance.now();
      const outcome = await this.send(endpoint, connectionLimits(guard, this.ctx.settings.connectTimeoutMs));
      if (span) endAttemptSpan(span, outcome);
      return await this.learn(endpoint, outcome, performance.now() - started);
    } finally {
      lease.release();
    }
  }

  private nextEndpoint(): Endpoint {
    const { plan, target, tried } = this;
    const endpoint = plan.backend
      ? this.ctx.picker.pick(plan.backend, { tried, hashKey: plan.hashKey, nowMs: Date.now() })
      : target.direction === "inbound" && tried.length === 0
        ? localEndpoint(target.to, target.port, target.route)
        : undefined;
    if (endpoint) return endpoint;
    if (this.lastConnectError) {
      throw new AgentError(AgentErrors.ALL_ENDPOINTS_FAILED, (this.lastConnectError as Error).message);
    }
    throw new AgentError(
      plan.backend?.route.endpoints.length ? AgentErrors.NO_HEALTHY_ENDPOINT : AgentErrors.NO_ENDPOINT,
    );
  }

  /** Sends once, and once more on a pooled connection the server had just closed (uncounted). */
  private async send(endpoint: Endpoint, limits: ReturnType<typeof connectionLimits>): Promise<Outcome> {
    const { perTryMs } = this.plan;
    // Only a per-try timeout shorter than what is left of the request arms the attempt's own
    // timer; otherwise the request's deadline ends the attempt (and answers NM_TIMEOUT).
    const attemptMs =
      perTryMs !== undefined && perTryMs < this.deadline - Date.now() ? perTryMs : Number.POSITIVE_INFINITY;
    const once = () => {
      const a = startAttempt(
        this.ctx,
        this.down.protocol,
        this.plan.from,
        endpoint,
        limits,
        this.up,
        attemptMs,
        this.plan.sentTo,
      );
      this.abortAttempt = a.abort;
      return a.outcome;
    };
    try {
      const outcome = await once();
      // (Not a reset we caused ourselves: the deadline or the client leaving aborts the attempt.)
      const stale = outcome.kind === "failure" && outcome.stale && outcome.class === "reset";
      const resend = stale && this.up.body.replayable && IDEMPOTENT_METHODS.has(this.up.method);
      return resend && !this.timedOut && !this.down.gone ? await once() : outcome;
    } catch (err) {
      return failure(err, false, "connect-failure"); // e.g. the pool's pending limit (CIRCUIT_OPEN)
    } finally {
      this.abortAttempt = undefined;
    }
  }

  /** What an outcome means for the endpoint, the budget and the request; then what comes next. */
  private async learn(endpoint: Endpoint, result: Outcome, ms: number): Promise<Next> {
    const { ctx, down, plan } = this;
    if (down.gone) {
      // The client left: nothing to answer, nothing to learn about the endpoint.
      if (result.kind === "response") result.abort();
      return DONE;
    }
    const outcome = throughAgent(result, endpoint);
    if (outcome.kind === "failure" && outcome.class === "connect-failure") {
      ctx.metrics.connectFailures.labels(this.target.direction, errorCode(outcome.error)).inc();
    }
    if (this.inRetry) {
      ctx.shared.retryEnded(plan.routeSlot);
      this.inRetry = false;
    }
    if (this.timedOut) {
      if (outcome.kind === "response") outcome.abort();
      throw this.timeout();
    }
    if (outcome.kind === "failure" && errorCode(outcome.error) === AgentErrors.CIRCUIT_OPEN.code) {
      ctx.metrics.breakerTrips.labels(this.rec.peers.destinationService).inc();
      throw outcome.error;
    }
    if (plan.backend) observeAttempt(ctx, plan.backend, endpoint, outcome, ms);
    const state = {
      retries: this.retries,
      msLeft: this.deadline - Date.now(),
      replayable: this.up.body.replayable,
      canFailOver: this.target.direction === "outbound",
      nowMs: Date.now(),
    };
    return this.follow(decideRetry(outcome, state, plan.retry, Math.random), outcome);
  }

  private async follow(decision: RetryDecision, outcome: Outcome): Promise<Next> {
    const { ctx, plan } = this;
    if (decision.kind === "failover") {
      this.lastConnectError = (outcome as { error?: unknown }).error;
      return FAILOVER;
    }
    if (decision.kind === "retry") {
      if (ctx.shared.tryStartRetry(plan.routeSlot, plan.retry!.budgetPercent, plan.retry!.budgetMin)) {
        if (outcome.kind === "response") outcome.abort();
        this.inRetry = true;
        this.rec.retries = ++this.retries;
        ctx.metrics.retries.labels(this.rec.peers.destinationService).inc();
        traceBackoff(this.rec, decision.delayMs, retryReason(outcome));
        // Another endpoint is preferred; with a single endpoint the retry goes to it again.
        if (plan.backend && this.tried.length >= plan.backend.route.endpoints.length) this.tried.length = 0;
        return { kind: "retry", delayMs: decision.delayMs };
      }
      ctx.metrics.retriesRefused.labels(this.rec.peers.destinationService).inc();
    }
    // The last outcome is final: its answer goes to the client as it is, or its failure becomes the agent's answer.
    if (outcome.kind === "failure") throw this.failureError(outcome);
    this.committed = outcome;
    // An upgraded connection lives as long as its peers want: the request's deadline was for the 101.
    if (outcome.upgraded) clearTimeout(this.deadlineTimer);
    await commit(this.down, outcome, plan.rule, this.rec);
    return DONE;
  }

  private failureError(outcome: Outcome & { kind: "failure" }): unknown {
    if (outcome.class === "timeout")
      return new AgentError(AgentErrors.PER_TRY_TIMEOUT, `after ${this.plan.perTryMs} ms`);
    if (outcome.class === "reset") return new AgentError(AgentErrors.UPSTREAM_RESET, (outcome.error as Error)?.message);
    return outcome.error;
  }
}

/**
 * A meshed endpoint's agent that could not reach its workload answers with a code saying so: the
 * app never saw the request, which is a connect failure for this side (it fails over).
 */
export function throughAgent(outcome: Outcome, endpoint: Endpoint): Outcome {
  if (outcome.kind !== "response" || !endpoint.meshed) return outcome;
  if (!errorEntry(String(outcome.headers["x-nodemesh-error"]))?.undelivered) return outcome;
  outcome.abort();
  return failure(
    new AgentError(AgentErrors.TUNNEL_REFUSED, `${endpoint.ip}:${endpoint.port}`),
    false,
    "connect-failure",
  );
}
