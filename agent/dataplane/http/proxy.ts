// One HTTP request through the agent, written once for HTTP/1.1, HTTP/2 and gRPC:
//
//   outbound: route rule → fault injection → backend (weights) → mirror → attempts
//   inbound:  rate limit → attempt to the local workload
//   attempts: pick endpoint → circuit breaker → send (per-try timeout) → outlier detection →
//             retry (policy, idempotency, body cap, budget, backoff or Retry-After) or commit
//
// Everything configurable was compiled into the snapshot; here it is only read. Failures are
// AgentErrors until the last moment, when errors.ts turns them into the client's answer.

import http, { type IncomingHttpHeaders, type OutgoingHttpHeaders } from "node:http";
import http2 from "node:http2";
import type { Socket } from "node:net";
import type { Readable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { AgentError, AgentErrors, errorCode } from "../../errors.ts";
import { type AccessEntry, type AccessLog, traceIdOf } from "../access-log.ts";
import type { EndpointPicker } from "../balancer.ts";
import { hash32 } from "../balancer.ts";
import type { PodContext } from "../context.ts";
import type { EdgeAggregator } from "../edges.ts";
import type { Caller } from "../inbound.ts";
import { type DataplaneMetrics, type Peers, UNKNOWN } from "../metrics.ts";
import { pipeBoth } from "../pipe.ts";
import { type CompiledPolicy, DEFAULT_POLICY } from "../policy.ts";
import type { RequestFacts } from "../routing.ts";
import { RATE_BUCKETS, type SharedState } from "../shared-state.ts";
import {
  type Backend,
  type Endpoint,
  type Rule,
  routeKey,
  type ServiceRoute,
  type Snapshot,
  selectRule,
} from "../snapshot.ts";
import { type BodySource, FixedBody, RequestBody } from "./body.ts";
import type { Downstream } from "./downstream.ts";
import { clientError, GrpcStatus } from "./errors.ts";
import { applyHeaderOps, endToEnd, ensureRequestId, headerValue, IDEMPOTENT_METHODS } from "./headers.ts";
import { type ConnectionLimits, type Connector, isPooledSocket, type UpstreamPools } from "./upstream.ts";

const UNLIMITED = 2 ** 31 - 1;
/** Node timers cannot wait longer (a longer one fires at once): longer timeouts mean none. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** Without a retry policy, this much of a body is kept so a connect failure can fail over. */
const DEFAULT_KEPT_BODY_BYTES = 64 * 1024;
/** A Retry-After longer than this is not waited for: the error goes to the client. */
const MAX_RETRY_AFTER_MS = 10_000;

export interface ProxyContext {
  readonly shared: SharedState;
  readonly picker: EndpointPicker;
  readonly pools: UpstreamPools;
  snapshot(): Snapshot;
  readonly metrics: DataplaneMetrics;
  readonly edges: EdgeAggregator;
  readonly accessLog: AccessLog;
  /** Per-request metrics and edge samples (off only to measure their cost). */
  readonly requestMetrics: boolean;
  readonly connectTimeoutMs: number;
  /** Opens one upstream connection, unpooled (upgrades). */
  readonly connect: Connector;
}

/**
 * Where a connection's requests go. Bound once per client connection; the route is looked up
 * again for every request, so a keep-alive connection follows configuration changes.
 */
export type ProxyTarget =
  | { readonly direction: "outbound"; readonly from: PodContext; readonly routeKey: string }
  | { readonly direction: "inbound"; readonly to: PodContext; readonly port: number; readonly caller: Caller };

/** A target with the current snapshot's route. */
type Resolved =
  | { readonly direction: "outbound"; readonly from: PodContext; readonly route: ServiceRoute }
  | {
      readonly direction: "inbound";
      readonly to: PodContext;
      readonly port: number;
      /** The Service the pod port belongs to, when known (its policy applies). */
      readonly route: ServiceRoute | undefined;
      readonly caller: Caller;
    };

/**
 * Set by the source agent on requests to a meshed endpoint: the Service the request was sent to,
 * so the destination agent applies that Service's policy (a pod can back several Services on one
 * port). Clients cannot set it: every x-nodemesh-* header from a client is removed.
 */
const SERVICE_HEADER = "x-nodemesh-service";

/** The target under the current configuration; undefined when its Service is gone. */
function resolve(px: ProxyContext, target: ProxyTarget, headers: IncomingHttpHeaders): Resolved | undefined {
  const snapshot = px.snapshot();
  if (target.direction === "outbound") {
    const route = snapshot.routes.get(target.routeKey);
    return route && { ...target, route };
  }
  const key = routeKey(target.to.pod.ip, target.port);
  const named = target.caller.viaTunnel ? headerValue(headers, SERVICE_HEADER) : undefined;
  const route = (named && snapshot.inboundByService.get(`${named}|${key}`)) || snapshot.inbound.get(key);
  return { ...target, route };
}

/** What one request did: filled in along the way, reported once at its end (metrics, edges). */
interface RequestRecord {
  readonly started: number;
  readonly peers: { -readonly [K in keyof Peers]: Peers[K] };
  readonly grpc: boolean;
  status: number;
  grpcStatus: string;
  requestBytes: number;
  responseBytes: number;
  // For the access log:
  route?: string;
  /** The endpoint of the last attempt. */
  endpoint?: Endpoint;
  retries: number;
  requestId?: string;
  error?: string;
}

function newRecord(down: Downstream, target: Resolved): RequestRecord {
  const peers =
    target.direction === "outbound"
      ? {
          reporter: "source" as const,
          sourceWorkload: target.from.workload.name,
          sourceNamespace: target.from.workload.namespace,
          destinationService: target.route.id,
          destinationWorkload: UNKNOWN,
          destinationNamespace: UNKNOWN,
        }
      : {
          reporter: "destination" as const,
          sourceWorkload: target.caller.workload.name,
          sourceNamespace: target.caller.workload.namespace,
          destinationService: target.route?.id ?? `${target.to.workload.name}.${target.to.workload.namespace}`,
          destinationWorkload: target.to.workload.name,
          destinationNamespace: target.to.workload.namespace,
        };
  return {
    started: performance.now(),
    peers,
    grpc: down.grpc,
    status: 0,
    grpcStatus: "",
    requestBytes: 0,
    responseBytes: 0,
    retries: 0,
  };
}

/** Why an attempt failed, in the retryOn vocabulary. */
type FailureClass = "connect-failure" | "reset" | "timeout" | "status";

interface UpstreamResponse {
  readonly kind: "response";
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: Readable;
  /** The response ended with its headers (a gRPC trailers-only answer over HTTP/2). */
  readonly trailersOnly: boolean;
  readonly trailers: () => OutgoingHttpHeaders | undefined;
  readonly abort: () => void;
}
interface UpstreamFailure {
  readonly kind: "failure";
  readonly error: unknown;
  readonly class: FailureClass;
  /** A pooled connection the server had already closed: safe to resend once. */
  readonly stale: boolean;
}
type Outcome = UpstreamResponse | UpstreamFailure;

/** Errors with which a destination agent says the request never reached its workload. */
const NEVER_DELIVERED = new Set<string>([
  AgentErrors.CONNECT_FAILED.code,
  AgentErrors.CONNECT_TIMEOUT.code,
  AgentErrors.ALL_ENDPOINTS_FAILED.code,
]);

/** gRPC status names as retryOn spells them. */
const GRPC_RETRY_NAMES: Record<number, string> = {
  1: "cancelled",
  4: "deadline-exceeded",
  8: "resource-exhausted",
  13: "internal",
  14: "unavailable",
};

function facts(down: Downstream): RequestFacts {
  const q = down.target.indexOf("?");
  return {
    method: down.method,
    path: q < 0 ? down.target : down.target.slice(0, q),
    query: q < 0 ? "" : down.target.slice(q + 1),
    header: (name) => headerValue(down.headers, name),
  };
}

/** grpc-timeout ("100m", "5S") in ms. */
function grpcTimeoutMs(value: string | undefined): number | undefined {
  const m = value && /^(\d{1,8})([HMSmun])$/.exec(value);
  if (!m) return undefined;
  const unit = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000001 }[m[2] as "H"];
  return Number(m[1]) * unit;
}

/** A backend by weight, or undefined when the draw lands on the invalid backends' share. */
function pickWeighted(rule: Rule): Backend | undefined {
  let r = Math.random() * rule.totalWeight;
  for (const b of rule.backends) {
    r -= b.weight;
    if (r < 0) return b;
  }
  return undefined;
}

function retryNames(outcome: Outcome, grpcStatus: number | undefined): string[] {
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
  if (grpcStatus !== undefined && GRPC_RETRY_NAMES[grpcStatus]) names.push(GRPC_RETRY_NAMES[grpcStatus]!);
  return names;
}

/** A gRPC status as a metric label: "0"–"16", else "unknown" (an app cannot grow the label set). */
function grpcStatusLabel(value: unknown): string {
  const n = Number(value);
  return Number.isInteger(n) && n >= 0 && n <= 16 ? String(n) : "unknown";
}

/** The gRPC status of a trailers-only answer, if that is what the response is. */
function trailersOnlyGrpcStatus(res: UpstreamResponse): number | undefined {
  if (!res.trailersOnly) return undefined;
  const v = Number(res.headers["grpc-status"]);
  return Number.isInteger(v) ? v : undefined;
}

function retryAfterMs(res: Outcome): number | undefined {
  if (res.kind !== "response") return undefined;
  const v = headerValue(res.headers, "retry-after");
  if (v === undefined) return undefined;
  const seconds = Number(v);
  if (Number.isFinite(seconds) && seconds >= 0) return seconds * 1000;
  const date = Date.parse(v);
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}

export async function proxyRequest(px: ProxyContext, down: Downstream, bound: ProxyTarget): Promise<void> {
  const target = resolve(px, bound, down.headers);
  if (!target) {
    // The Service was removed while this connection stayed open.
    down.fail(clientError(new AgentError(AgentErrors.NO_ENDPOINT, "the service is gone")));
    return;
  }
  const rec = newRecord(down, target);
  try {
    await handle(px, down, target, rec);
  } finally {
    reportLater({ px, down, target, rec, seconds: (performance.now() - rec.started) / 1000 });
  }
}

/** A finished request whose metrics, edge sample and access-log line are still to be written. */
interface Finished {
  readonly px: ProxyContext;
  readonly down: Downstream;
  readonly target: Resolved;
  readonly rec: RequestRecord;
  readonly seconds: number;
}

/**
 * Requests that finished during this turn of the event loop. They are reported once the loop has
 * handled all the I/O that was ready (setImmediate): when requests arrive together (a client's
 * burst, many connections at once), every answer goes out before any bookkeeping is done.
 */
let finished: Finished[] = [];

function reportLater(f: Finished): void {
  if (finished.length === 0) setImmediate(reportFinished);
  finished.push(f);
}

function reportFinished(): void {
  const batch = finished;
  finished = [];
  for (const f of batch) report(f);
}

function report({ px, down, target, rec, seconds }: Finished): void {
  if (px.requestMetrics) {
    px.metrics.recordRequest(rec.peers, rec.status, rec.grpcStatus, seconds, rec.requestBytes, rec.responseBytes);
    if (rec.peers.reporter === "source") {
      const failed = rec.status === 0 || rec.status >= 500 || (rec.grpc && rec.grpcStatus !== "0");
      px.edges.request(rec.peers, rec.grpc, failed, seconds * 1000, rec.requestBytes, rec.responseBytes);
    }
  }
  if (px.accessLog.wants(target.route?.policy, rec.peers.sourceNamespace, rec.peers.destinationNamespace)) {
    px.accessLog.write(accessEntry(down, target, rec, seconds));
  }
}

function accessEntry(down: Downstream, target: Resolved, rec: RequestRecord, seconds: number): AccessEntry {
  const p = rec.peers;
  return {
    type: rec.grpc ? "grpc" : "http",
    reporter: p.reporter,
    sourceWorkload: p.sourceWorkload,
    sourceNamespace: p.sourceNamespace,
    sourceIp: target.direction === "outbound" ? target.from.pod.ip : target.caller.address,
    destinationService: p.destinationService,
    destinationWorkload: p.destinationWorkload,
    destinationNamespace: p.destinationNamespace,
    route: rec.route,
    upstream: rec.endpoint && `${rec.endpoint.ip}:${rec.endpoint.port}`,
    method: down.method,
    path: down.target,
    status: rec.status,
    grpcStatus: rec.grpcStatus || undefined,
    durationMs: Math.round(seconds * 1e6) / 1000,
    bytesReceived: rec.requestBytes,
    bytesSent: rec.responseBytes,
    retries: rec.retries,
    requestId: rec.requestId,
    traceId: traceIdOf(headerValue(down.headers, "traceparent"), headerValue(down.headers, "x-b3-traceid")),
    error: rec.error,
  };
}

async function handle(px: ProxyContext, down: Downstream, target: Resolved, rec: RequestRecord): Promise<void> {
  const req = facts(down);
  const service = rec.peers.destinationService;
  const headers = endToEnd(down.headers, true);
  rec.requestId = ensureRequestId(headers);

  let policy: CompiledPolicy;
  let backend: Backend | undefined;
  let rule: Rule | undefined;
  let from: PodContext;
  if (target.direction === "outbound") {
    from = target.from;
    policy = target.route.policy;
    const selected = selectRule(target.route, down.grpc, req);
    rule = selected.rule;
    rec.route = rule?.name;
    if (selected.routed && !rule) return reply(px, down, rec, new AgentError(AgentErrors.NO_ROUTE, req.path));
    backend = rule ? pickWeighted(rule) : target.route.self;
    if (!backend) {
      return reply(px, down, rec, new AgentError(AgentErrors.BACKEND_NOT_FOUND, rule?.name));
    }
    if (policy.fault) {
      const abort = await injectFault(px, policy.fault, req, service);
      if (down.gone) return;
      if (abort) return reply(px, down, rec, new AgentError(AgentErrors.FAULT_ABORT), abort);
    }
    applyHeaderOps(headers, rule?.requestHeaders);
  } else {
    from = target.to;
    policy = target.route?.policy ?? DEFAULT_POLICY;
    const pod = `${target.to.pod.ip}:${target.port}`;
    const waitS = policy.rateLimit && rateLimitWait(px, policy.rateLimit, service, pod, target.caller.key);
    if (waitS) {
      return reply(px, down, rec, new AgentError(AgentErrors.RATE_LIMITED), {
        retryAfterS: waitS,
      });
    }
  }

  // Timeouts: the rule's, else the policy's; a gRPC deadline can only shorten them.
  const grpcDeadline = down.grpc ? grpcTimeoutMs(headerValue(down.headers, "grpc-timeout")) : undefined;
  const configured = rule?.requestTimeoutMs ?? policy.requestTimeoutMs;
  const shortest =
    configured !== undefined && grpcDeadline !== undefined
      ? Math.min(configured, grpcDeadline)
      : (configured ?? grpcDeadline);
  const requestTimeoutMs = shortest !== undefined && shortest <= MAX_TIMER_MS ? shortest : undefined;
  const perTry = rule?.perTryTimeoutMs ?? policy.perTryTimeoutMs;
  const perTryMs = perTry !== undefined && perTry <= MAX_TIMER_MS ? perTry : undefined;
  const deadline = requestTimeoutMs === undefined ? Number.POSITIVE_INFINITY : Date.now() + requestTimeoutMs;

  const retry = target.direction === "outbound" ? policy.retry : undefined;
  const retriableMethod = retry !== undefined && (retry.nonIdempotent || IDEMPOTENT_METHODS.has(req.method));
  const mirror = rule?.mirror && Math.random() < rule.mirror.ratio ? rule.mirror.backend : undefined;
  // Keep the body (up to the cap) for a failover after a connect failure, a retry or a mirror.
  const body = new RequestBody(down.body, retry?.maxBodyBytes ?? DEFAULT_KEPT_BODY_BYTES);
  rec.requestBytes = 0;
  if (mirror) void sendMirror(px, from, mirror, down, headers, body);

  const routeSlot = target.route?.slot ?? 0;
  const sentTo = target.direction === "outbound" ? backend?.route.id : undefined;
  px.shared.routeRequestStarted(routeSlot);
  const hashKey =
    backend?.policy.lb.hashHeader !== undefined
      ? req.header(backend.policy.lb.hashHeader)
      : backend?.policy.lb.hashSourceIp && target.direction === "outbound"
        ? target.from.pod.ip
        : undefined;

  let current: UpstreamResponse | undefined;
  let timedOut = false;
  const deadlineTimer =
    requestTimeoutMs === undefined
      ? undefined
      : setTimeout(() => {
          timedOut = true;
          current?.abort();
          attemptAbort?.();
        }, requestTimeoutMs);
  let attemptAbort: (() => void) | undefined;
  down.onGone(() => {
    current?.abort();
    attemptAbort?.();
  });

  /**
   * The last attempt's outcome is final: its answer goes to the client as it is, or its failure
   * becomes the agent's error answer (in the catch below). Releases the endpoint either way.
   */
  const finish = async (outcome: Outcome, endpoint: Endpoint): Promise<void> => {
    if (outcome.kind === "failure") {
      px.shared.requestEnded(endpoint.slot);
      throw outcome.class === "timeout"
        ? new AgentError(AgentErrors.PER_TRY_TIMEOUT, `after ${perTryMs} ms`)
        : outcome.class === "reset"
          ? new AgentError(AgentErrors.UPSTREAM_RESET, (outcome.error as Error)?.message)
          : outcome.error;
    }
    current = outcome;
    try {
      await commit(down, outcome, rule, rec);
    } finally {
      px.shared.requestEnded(endpoint.slot);
    }
  };

  const tried: Endpoint[] = [];
  let lastConnectError: unknown;
  let retries = 0;
  let inRetry = false;
  try {
    for (;;) {
      const endpoint =
        target.direction === "outbound"
          ? px.picker.pick(backend!, { tried, hashKey, nowMs: Date.now() })
          : tried.length === 0
            ? localEndpoint(target.to, target.port, target.route)
            : undefined;
      if (!endpoint) {
        if (lastConnectError)
          throw new AgentError(AgentErrors.ALL_ENDPOINTS_FAILED, (lastConnectError as Error).message);
        throw new AgentError(
          backend?.route.endpoints.length ? AgentErrors.NO_HEALTHY_ENDPOINT : AgentErrors.NO_ENDPOINT,
        );
      }
      tried.push(endpoint);
      rec.endpoint = endpoint;
      rec.peers.destinationWorkload = endpoint.workload;
      rec.peers.destinationNamespace = endpoint.namespace;
      const guard = target.direction === "outbound" ? backend!.policy : DEFAULT_POLICY;
      const cb = guard.circuitBreaker;
      if (!px.shared.tryStartRequest(endpoint.slot, cb?.maxRequests ?? UNLIMITED)) {
        px.metrics.breakerTrips.labels(service).inc();
        throw new AgentError(AgentErrors.CIRCUIT_OPEN, `${endpoint.ip}:${endpoint.port}: max requests`);
      }
      const limits: ConnectionLimits = {
        maxConnections: cb?.maxConnections ?? UNLIMITED,
        maxPending: cb?.maxPending ?? UNLIMITED,
        connectTimeoutMs: guard.connectTimeoutMs ?? px.connectTimeoutMs,
        idleTimeoutMs: guard.idleTimeoutMs,
      };
      const started = performance.now();
      let outcome: Outcome;
      try {
        // Only a per-try timeout shorter than what is left of the request arms the attempt's own
        // timer; otherwise the request's deadline ends the attempt (and answers NM_TIMEOUT).
        const attemptMs =
          perTryMs !== undefined && perTryMs < deadline - Date.now() ? perTryMs : Number.POSITIVE_INFINITY;
        const attempt = startAttempt(px, down.protocol, from, endpoint, limits, down, headers, body, attemptMs, sentTo);
        attemptAbort = attempt.abort;
        outcome = await attempt.outcome;
        const idempotent = IDEMPOTENT_METHODS.has(req.method);
        const stale = outcome.kind === "failure" && outcome.stale && outcome.class === "reset";
        // (Not a reset we caused ourselves: the deadline or the client leaving aborts the attempt.)
        if (stale && body.replayable && idempotent && !timedOut && !down.gone) {
          // The pool handed out a connection the server had just closed: resend once, uncounted.
          const again = startAttempt(px, down.protocol, from, endpoint, limits, down, headers, body, attemptMs, sentTo);
          attemptAbort = again.abort;
          outcome = await again.outcome;
        }
      } catch (err) {
        outcome = { kind: "failure", error: err, class: "connect-failure", stale: false };
      } finally {
        attemptAbort = undefined;
      }
      if (down.gone) {
        // The client left: nothing to answer, nothing to learn about the endpoint.
        if (outcome.kind === "response") outcome.abort();
        px.shared.requestEnded(endpoint.slot);
        return;
      }
      if (
        outcome.kind === "response" &&
        endpoint.meshed &&
        NEVER_DELIVERED.has(String(outcome.headers["x-nodemesh-error"]))
      ) {
        // The endpoint's agent could not reach its workload: the app never saw the request.
        outcome.abort();
        outcome = {
          kind: "failure",
          error: new AgentError(AgentErrors.TUNNEL_REFUSED, `${endpoint.ip}:${endpoint.port}`),
          class: "connect-failure",
          stale: false,
        };
      }
      if (outcome.kind === "failure" && outcome.class === "connect-failure") {
        px.metrics.connectFailures.labels(target.direction, errorCode(outcome.error)).inc();
      }
      if (inRetry) {
        px.shared.retryEnded(routeSlot);
        inRetry = false;
      }
      if (timedOut) {
        if (outcome.kind === "response") outcome.abort();
        px.shared.requestEnded(endpoint.slot);
        throw new AgentError(AgentErrors.TIMEOUT, `after ${requestTimeoutMs} ms`);
      }
      if (outcome.kind === "failure" && errorCode(outcome.error) === AgentErrors.CIRCUIT_OPEN.code) {
        px.shared.requestEnded(endpoint.slot);
        px.metrics.breakerTrips.labels(service).inc();
        throw outcome.error;
      }
      const grpcStatus = outcome.kind === "response" ? trailersOnlyGrpcStatus(outcome) : undefined;
      const names = retryNames(outcome, grpcStatus);
      if (target.direction === "outbound") {
        observe(px, backend!, endpoint, outcome, performance.now() - started);
      }

      if (
        outcome.kind === "failure" &&
        outcome.class === "connect-failure" &&
        target.direction === "outbound" &&
        body.replayable
      ) {
        // The request never reached an app: fail over to another endpoint, as a TCP connection
        // would, whatever the retry policy (not a retry, no budget). Needs the body kept.
        px.shared.requestEnded(endpoint.slot);
        lastConnectError = outcome.error;
        continue;
      }
      const failed = outcome.kind === "failure" || names.length > 0;
      const canRetry =
        failed &&
        retry !== undefined &&
        retriableMethod &&
        retries < retry.attempts &&
        body.replayable &&
        names.some((n) => retry.on.has(n as never));
      if (!canRetry) return await finish(outcome, endpoint);
      // Retry: wait (Retry-After, else jittered backoff) unless that is not allowed, in which case
      // the answer goes to the client as it is.
      const hinted = retryAfterMs(outcome);
      const backoff = hinted ?? Math.random() * Math.min(retry.maxMs, retry.baseMs * 2 ** retries);
      let refused = (hinted !== undefined && hinted > MAX_RETRY_AFTER_MS) || Date.now() + backoff >= deadline;
      if (!refused && !px.shared.tryStartRetry(routeSlot, retry.budgetPercent, retry.budgetMin)) {
        px.metrics.retriesRefused.labels(service).inc();
        refused = true;
      }
      if (refused) return await finish(outcome, endpoint);
      if (outcome.kind === "response") outcome.abort();
      px.shared.requestEnded(endpoint.slot);
      inRetry = true;
      retries++;
      rec.retries = retries;
      px.metrics.retries.labels(service).inc();
      // Another endpoint is preferred; with a single endpoint the retry goes to it again.
      if (backend && tried.length >= backend.route.endpoints.length) tried.length = 0;
      await sleep(backoff);
      if (down.gone || timedOut) throw new AgentError(AgentErrors.TIMEOUT, `after ${requestTimeoutMs} ms`);
    }
  } catch (err) {
    if (
      !down.gone &&
      (errorCode(err) === AgentErrors.TIMEOUT.code || errorCode(err) === AgentErrors.PER_TRY_TIMEOUT.code)
    ) {
      px.metrics.timeouts.labels(service).inc();
    }
    reply(px, down, rec, err);
  } finally {
    if (inRetry) px.shared.retryEnded(routeSlot);
    px.shared.routeRequestEnded(routeSlot);
    if (deadlineTimer) clearTimeout(deadlineTimer);
    rec.requestBytes = body.bytes;
  }
}

/**
 * Fault injection (on the source side, as Istio does): a delay, then maybe an abort. Returns the
 * abort's status when one was drawn.
 */
async function injectFault(
  px: ProxyContext,
  fault: NonNullable<CompiledPolicy["fault"]>,
  req: RequestFacts,
  service: string,
): Promise<{ status: number; grpcStatus?: number } | undefined> {
  for (const h of fault.headers) {
    const v = req.header(h.name);
    if (v === undefined || !h.test(v)) return undefined;
  }
  if (fault.delayRatio > 0 && Math.random() < fault.delayRatio) {
    px.metrics.faults.labels(service, "delay").inc();
    await sleep(fault.delayMs);
  }
  if (fault.abortRatio > 0 && Math.random() < fault.abortRatio) {
    px.metrics.faults.labels(service, "abort").inc();
    return { status: fault.abortHttpStatus ?? 503, grpcStatus: fault.abortGrpcStatus };
  }
  return undefined;
}

/**
 * Local rate limit (on the destination side, like Envoy's local rate limit on the server
 * sidecar): 0 when admitted, else the seconds to wait for Retry-After.
 */
function rateLimitWait(
  px: ProxyContext,
  limit: NonNullable<CompiledPolicy["rateLimit"]>,
  service: string,
  pod: string,
  source: string,
): number {
  // One bucket per destination pod (several pods of a Service may share this agent).
  const key = `${service}|${pod}`;
  const bucket = hash32(limit.perSource ? `${key}|${source}` : key) % RATE_BUCKETS;
  const nowUs = (performance.timeOrigin + performance.now()) * 1000;
  const waitUs = px.shared.rateLimit(bucket, nowUs, limit.intervalUs, limit.burst);
  if (waitUs === 0) return 0;
  px.metrics.rateLimited.labels(service).inc();
  return Math.max(1, Math.ceil(waitUs / 1_000_000));
}

/** The agent's own answer: errors.ts decides its shape; the record gets its status. */
function reply(
  px: ProxyContext,
  down: Downstream,
  rec: RequestRecord,
  err: unknown,
  override?: { status?: number; grpcStatus?: number; retryAfterS?: number },
): void {
  const e = clientError(err, override);
  rec.error = e.code;
  if (down.gone) return; // no answer was sent: the record keeps status 0
  rec.status = rec.grpc ? 200 : e.status;
  rec.grpcStatus = rec.grpc ? String(e.grpcStatus) : "";
  px.metrics.localReplies.labels(rec.peers.reporter === "source" ? "outbound" : "inbound", e.code).inc();
  down.fail(e);
}

/** Delivers an upstream answer: head (with the rule's header changes), body, trailers. */
async function commit(
  down: Downstream,
  res: UpstreamResponse,
  rule: Rule | undefined,
  rec: RequestRecord,
): Promise<void> {
  rec.status = res.status;
  if (down.gone) {
    res.abort();
    return;
  }
  // The destination side drops x-nodemesh-* from the app's answer: an app cannot speak for an agent.
  const headers = endToEnd(res.headers, rec.peers.reporter === "destination");
  applyHeaderOps(headers, rule?.responseHeaders);
  if (res.trailersOnly) {
    rec.grpcStatus = grpcStatusLabel(res.headers["grpc-status"]);
    down.respond(res.status, headers, true);
    return;
  }
  down.respond(res.status, headers, false);
  res.body.on("data", (chunk: Buffer) => {
    rec.responseBytes += chunk.length;
  });
  await down.sendBody(res.body, res.trailers);
  if (rec.grpc) rec.grpcStatus = grpcStatusLabel(res.trailers()?.["grpc-status"] ?? res.headers["grpc-status"]);
}

/** Outlier detection and least-request's latency estimate, fed by every attempt. */
function observe(px: ProxyContext, backend: Backend, ep: Endpoint, outcome: Outcome, ms: number): void {
  const now = Date.now();
  if (backend.policy.lb.type === "LeastRequest" && outcome.kind === "response") px.picker.observeLatency(ep, ms, now);
  const od = backend.policy.outlier;
  if (!od) return;
  const status = outcome.kind === "response" ? outcome.status : 503;
  const gateway = outcome.kind === "failure" || status === 502 || status === 503 || status === 504;
  if (status < 500) {
    px.shared.recordSuccess(ep.slot);
    return;
  }
  const run = px.shared.recordFailure(ep.slot);
  if (run < od.consecutive5xx && !(gateway && run >= od.consecutiveGatewayErrors)) return;
  const eps = backend.route.endpoints;
  const allowed = od.maxEjectionRatio > 0 ? Math.max(1, Math.floor(eps.length * od.maxEjectionRatio)) : 0;
  const ejected = eps.filter((e) => px.shared.isEjected(e.slot, now)).length;
  if (ejected >= allowed) return;
  if (px.shared.eject(ep.slot, now, od.baseMs, od.maxMs)) px.metrics.ejections.labels(backend.route.id).inc();
}

function localEndpoint(to: PodContext, port: number, route: ServiceRoute | undefined): Endpoint {
  // Delivered directly inside the pod (never through a tunnel: that would be this agent again).
  const slot = route?.endpoints.find((e) => e.ip === to.pod.ip && e.port === port)?.slot ?? 0;
  return {
    ip: to.pod.ip,
    port,
    meshed: false,
    pod: to.key,
    node: "",
    workload: to.workload.name,
    namespace: to.workload.namespace,
    slot,
  };
}

interface Attempt {
  readonly outcome: Promise<Outcome>;
  readonly abort: () => void;
}

function startAttempt(
  px: ProxyContext,
  protocol: "http1" | "h2",
  from: PodContext,
  ep: Endpoint,
  limits: ConnectionLimits,
  down: Downstream,
  headers: OutgoingHttpHeaders,
  body: BodySource,
  timeoutMs: number,
  service: string | undefined,
): Attempt {
  // A meshed endpoint's agent is told which Service the request was sent to (SERVICE_HEADER). Set
  // in place (an attempt copies the headers as it starts): the next attempt may go elsewhere.
  if (ep.meshed && service) headers[SERVICE_HEADER] = service;
  else delete headers[SERVICE_HEADER];
  return protocol === "http1"
    ? attemptHttp1(px, from, ep, limits, down.method, down.target, headers, body, timeoutMs)
    : attemptHttp2(px, from, ep, limits, down, headers, body, timeoutMs);
}

/** Errors with which no connection to the endpoint was made: the request never left. */
const CONNECT_ERRORS = new Set<string>([
  AgentErrors.CONNECT_FAILED.code,
  AgentErrors.CONNECT_TIMEOUT.code,
  AgentErrors.TUNNEL_REFUSED.code,
  AgentErrors.TUNNEL_PROTOCOL.code,
  AgentErrors.CIRCUIT_OPEN.code,
]);

function classify(err: unknown): FailureClass {
  const code = errorCode(err);
  if (code === AgentErrors.PER_TRY_TIMEOUT.code) return "timeout";
  if (CONNECT_ERRORS.has(code)) return "connect-failure";
  return "reset";
}

function attemptHttp1(
  px: ProxyContext,
  from: PodContext,
  ep: Endpoint,
  limits: ConnectionLimits,
  method: string,
  path: string,
  headers: OutgoingHttpHeaders,
  body: BodySource,
  timeoutMs: number,
): Attempt {
  const pool = px.pools.http1(from, ep, limits);
  const releasePending = px.pools.enterPending(ep, pool);
  let req: http.ClientRequest | undefined;
  const outcome = new Promise<Outcome>((resolve) => {
    let settled = false;
    const settle = (o: Outcome) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      releasePending();
      if (o.kind === "failure") body.detach();
      resolve(o);
    };
    const r = http.request({ agent: pool, host: ep.ip, port: ep.port, method, path, headers, setHost: false });
    req = r;
    r.once("socket", (socket) => {
      // Only a socket from our pool leaves from the pod's namespace; never send on another.
      if (!isPooledSocket(socket)) {
        r.destroy(new AgentError(AgentErrors.CONNECT_FAILED, "socket not from the pod's pool"));
        return;
      }
      releasePending();
    });
    r.once("response", (res) => {
      settle({
        kind: "response",
        status: res.statusCode ?? 502,
        headers: res.headers,
        body: res,
        trailersOnly: false,
        trailers: () => (Object.keys(res.trailers).length > 0 ? res.trailers : undefined),
        abort: () => r.destroy(),
      });
    });
    r.once("error", (err) => settle({ kind: "failure", error: err, class: classify(err), stale: r.reusedSocket }));
    const timer = Number.isFinite(timeoutMs)
      ? setTimeout(() => r.destroy(new AgentError(AgentErrors.PER_TRY_TIMEOUT)), Math.max(1, timeoutMs))
      : undefined;
    body.attach(r);
  });
  return { outcome, abort: () => req?.destroy(new AgentError(AgentErrors.TIMEOUT)) };
}

function attemptHttp2(
  px: ProxyContext,
  from: PodContext,
  ep: Endpoint,
  limits: ConnectionLimits,
  down: Downstream,
  headers: OutgoingHttpHeaders,
  body: BodySource,
  timeoutMs: number,
): Attempt {
  const pool = px.pools.http2(from, ep, limits);
  const releasePending = px.pools.enterPending(ep, pool);
  const requestHeaders = {
    ...headers,
    ":method": down.method,
    ":path": down.target,
    ":authority": down.authority,
    ":scheme": "http",
    ...(down.grpc ? { te: "trailers" } : {}),
  };
  let stream: http2.ClientHttp2Stream | undefined;
  let aborted = false;
  let settle: (o: Outcome) => void = () => {};
  const outcome = new Promise<Outcome>((resolve) => {
    let settled = false;
    settle = (o: Outcome) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      releasePending();
      if (o.kind === "failure") body.detach();
      resolve(o);
    };
    const timer = Number.isFinite(timeoutMs)
      ? setTimeout(
          () => {
            stream?.close(http2.constants.NGHTTP2_CANCEL);
            settle({
              kind: "failure",
              error: new AgentError(AgentErrors.PER_TRY_TIMEOUT),
              class: "timeout",
              stale: false,
            });
          },
          Math.max(1, timeoutMs),
        )
      : undefined;
    pool.get().then(
      (session) => {
        releasePending();
        if (settled || aborted) return;
        const s = session.request(requestHeaders, { endStream: false });
        stream = s;
        let trailers: OutgoingHttpHeaders | undefined;
        s.on("trailers", (t) => {
          trailers = t as OutgoingHttpHeaders;
        });
        s.once("response", (h, flags) => {
          settle({
            kind: "response",
            status: Number(h[":status"] ?? 502),
            headers: h as IncomingHttpHeaders,
            body: s,
            trailersOnly: (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0,
            trailers: () => trailers,
            abort: () => s.close(http2.constants.NGHTTP2_CANCEL),
          });
        });
        s.once("error", (err) => settle({ kind: "failure", error: err, class: "reset", stale: false }));
        s.once("close", () =>
          settle({
            kind: "failure",
            error: new AgentError(AgentErrors.UPSTREAM_RESET, `stream closed (${s.rstCode})`),
            class: "reset",
            stale: false,
          }),
        );
        body.attach(s);
      },
      (err: unknown) => settle({ kind: "failure", error: err, class: classify(err), stale: false }),
    );
  });
  return {
    outcome,
    abort: () => {
      aborted = true;
      stream?.close(http2.constants.NGHTTP2_CANCEL);
      // Also while the session is still connecting: the attempt must end now, not never.
      settle({
        kind: "failure",
        error: new AgentError(AgentErrors.UPSTREAM_RESET, "cancelled"),
        class: "reset",
        stale: false,
      });
    },
  };
}

/** Mirrors the request to another backend once its body has arrived; the answer is dropped. */
async function sendMirror(
  px: ProxyContext,
  from: PodContext,
  backend: Backend,
  down: Downstream,
  headers: OutgoingHttpHeaders,
  body: RequestBody,
): Promise<void> {
  await body.whenEnded();
  if (!body.complete) return;
  const ep = px.picker.pick(backend, { tried: [], nowMs: Date.now() });
  if (!ep) return;
  const limits: ConnectionLimits = {
    maxConnections: UNLIMITED,
    maxPending: UNLIMITED,
    connectTimeoutMs: px.connectTimeoutMs,
    idleTimeoutMs: backend.policy.idleTimeoutMs,
  };
  try {
    const attempt = startAttempt(
      px,
      down.protocol,
      from,
      ep,
      limits,
      down,
      { ...headers },
      new FixedBody([...body.kept]),
      30_000,
      backend.route.id,
    );
    const outcome = await attempt.outcome;
    px.metrics.mirrored.labels(backend.route.id).inc();
    if (outcome.kind === "response") outcome.body.resume();
  } catch {
    // A mirror never affects the client.
  }
}

/**
 * An HTTP/1.1 Upgrade (WebSocket): the request goes to one endpoint over a fresh connection and,
 * from then on, bytes flow both ways untouched (the 101 comes back through the pipe).
 */
export async function upgradeRequest(
  px: ProxyContext,
  req: http.IncomingMessage,
  socket: Socket,
  head: Buffer,
  bound: ProxyTarget,
): Promise<void> {
  const target = resolve(px, bound, req.headers);
  if (!target) {
    socket.end("HTTP/1.1 503 Service Unavailable\r\nx-nodemesh-error: NM_NO_ENDPOINT\r\ncontent-length: 0\r\n\r\n");
    return;
  }
  const from = target.direction === "outbound" ? target.from : target.to;
  const ep =
    target.direction === "outbound"
      ? px.picker.pick(target.route.self, { tried: [], nowMs: Date.now() })
      : localEndpoint(target.to, target.port, target.route);
  if (!ep) {
    socket.end(
      "HTTP/1.1 503 Service Unavailable\r\nx-nodemesh-error: NM_NO_HEALTHY_ENDPOINT\r\ncontent-length: 0\r\n\r\n",
    );
    return;
  }
  let upstream: Socket;
  try {
    upstream = await px.connect(from, ep, "http1", px.connectTimeoutMs);
  } catch (err) {
    const e = clientError(err);
    socket.end(
      `HTTP/1.1 ${e.status} ${http.STATUS_CODES[e.status]}\r\nx-nodemesh-error: ${e.code}\r\ncontent-length: 0\r\n\r\n`,
    );
    return;
  }
  // The raw head again, minus forged internal headers; Connection and Upgrade stay (they are the point).
  const lines = [`${req.method} ${req.url} HTTP/1.1`];
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    if (!req.rawHeaders[i]!.toLowerCase().startsWith("x-nodemesh-"))
      lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
  }
  upstream.write(`${lines.join("\r\n")}\r\n\r\n`);
  if (head.length) upstream.write(head);
  await pipeBoth(socket, upstream);
}

export { GrpcStatus };
