// The tracing link of the request chain. As a request arrives its trace is decided: continued from
// the caller's traceparent or B3 headers, or started here. A sampled request gets this agent's
// SERVER span (the request as received) and one CLIENT span per upstream attempt, child of the
// server span; the traceparent each attempt carries names the attempt's span, so the next agent's
// server span is its child. A retry's backoff is an event on the server span. The spans are built
// (names, attributes) only when the request is reported (record.ts), and only when sampled: an
// unsampled request costs the header parse and, where the trace starts, one traceparent written.
//
// Sampling is decided once, where the trace starts: a caller's sampled flag is always honoured,
// else the Service's TrafficPolicy rate (tracing.randomSamplingPercentage) or --trace-sampling
// decides. A request from another agent (through the tunnel) follows the flag that agent sent.

import type { OutgoingHttpHeaders } from "node:http";
import { errorCode } from "../../errors.ts";
import type { DataplaneContext } from "../context.ts";
import type { Endpoint } from "../endpoint.ts";
import { type Peers, UNKNOWN } from "../metrics.ts";
import {
  type Attributes,
  SPAN_KIND_CLIENT,
  SPAN_KIND_SERVER,
  type SpanEvent,
  STATUS_ERROR,
  STATUS_UNSET,
} from "../otlp-exporter.ts";
import { type B3Form, b3FormOf, incomingTrace, newSpanId, newTraceId, writeTraceHeaders } from "../trace-context.ts";
import type { Outcome } from "./attempt.ts";
import type { Downstream } from "./downstream.ts";
import { headerValue } from "./headers.ts";
import type { Resolved } from "./resolve.ts";

/** One upstream attempt of a sampled request (times: performance.now()). */
export interface AttemptSpan {
  readonly spanId: string;
  readonly startMs: number;
  endMs: number;
  readonly endpoint: Endpoint;
  /** 1 for the first attempt. */
  readonly attempt: number;
  readonly mtls: boolean;
  status: number;
  /** A trailers-only answer's grpc-status. */
  grpcStatus?: string;
  /** Why the attempt failed: the nodemesh error code, or the failure's class. */
  error?: string;
}

/** A sampled request's trace: this agent's server span and its attempts, finished when the request is reported. */
export class RequestTrace {
  readonly traceId: string;
  /** This agent's server span. */
  readonly spanId: string;
  /** The caller's span, if it sent one. */
  readonly parentId: string | undefined;
  readonly traceState: string | undefined;
  readonly b3: B3Form;
  readonly events: SpanEvent[] = [];
  readonly attempts: AttemptSpan[] = [];

  constructor(traceId: string, parentId: string | undefined, traceState: string | undefined, b3: B3Form) {
    this.traceId = traceId;
    this.spanId = newSpanId();
    this.parentId = parentId;
    this.traceState = traceState;
    this.b3 = b3;
  }
}

/**
 * What the spans read and write of a request's record: record.ts's RequestRecord has all of it
 * (declared here so that this module, which record.ts calls, needs nothing from it).
 */
export interface TracedRequest {
  readonly started: number;
  readonly peers: Peers;
  readonly grpc: boolean;
  status: number;
  grpcStatus: string;
  route?: string;
  retries: number;
  requestId?: string;
  error?: string;
  /** A sampled request's spans. */
  trace?: RequestTrace;
  /** An unsampled request's traceparent for the next hop, where this agent started the trace. */
  unsampledTraceparent?: string;
}

/** The trace decision, taken as the request arrives (before anything can refuse it). */
export function startTrace(ctx: DataplaneContext, down: Downstream, target: Resolved, rec: TracedRequest): void {
  if (!ctx.tracer.enabled) return;
  const incoming = incomingTrace(down.headers);
  const fromPeerAgent = target.direction === "inbound" && target.caller.viaTunnel;
  const sampled = ctx.tracer.decide(incoming, fromPeerAgent, target.route?.policy?.tracingPercent);
  const traceId = incoming?.traceId ?? newTraceId();
  if (sampled) {
    const state = incoming?.spanId ? headerValue(down.headers, "tracestate") : undefined;
    rec.trace = new RequestTrace(traceId, incoming?.spanId, state, b3FormOf(down.headers));
  } else {
    // The decision travels: the next agent reads "not sampled" instead of deciding again.
    rec.unsampledTraceparent = `00-${traceId}-${incoming?.spanId ?? newSpanId()}-00`;
  }
}

/** The trace headers of the request sent on (a mirror's copy included); each attempt then names its own span. */
export function propagateTrace(rec: TracedRequest, headers: OutgoingHttpHeaders): void {
  const t = rec.trace;
  if (t) writeTraceHeaders(headers, t.traceId, t.spanId, true, t.b3, t.parentId);
  else if (rec.unsampledTraceparent) headers.traceparent = rec.unsampledTraceparent;
}

/** A CLIENT span for an attempt about to be sent; the headers then carry its id. */
export function startAttemptSpan(
  rec: TracedRequest,
  endpoint: Endpoint,
  mtls: boolean,
  headers: OutgoingHttpHeaders,
): AttemptSpan | undefined {
  const t = rec.trace;
  if (!t) return undefined;
  const span: AttemptSpan = {
    spanId: newSpanId(),
    startMs: performance.now(),
    endMs: 0,
    endpoint,
    attempt: t.attempts.length + 1,
    mtls,
    status: 0,
  };
  t.attempts.push(span);
  writeTraceHeaders(headers, t.traceId, span.spanId, true, t.b3, t.spanId);
  return span;
}

export function endAttemptSpan(span: AttemptSpan, outcome: Outcome): void {
  span.endMs = performance.now();
  if (outcome.kind === "response") {
    span.status = outcome.status;
    if (outcome.trailersOnly && outcome.headers["grpc-status"] !== undefined) {
      span.grpcStatus = String(outcome.headers["grpc-status"]);
    }
  } else {
    const code = errorCode(outcome.error);
    span.error = code === "UNKNOWN" ? outcome.class : code;
  }
}

/** A retry waits `delayMs` before its attempt: an event on the server span, with why it retries. */
export function traceBackoff(rec: TracedRequest, delayMs: number, reason: string): void {
  rec.trace?.events.push({
    name: "nodemesh.backoff",
    timeMs: performance.timeOrigin + performance.now(),
    attributes: [
      ["nodemesh.backoff_ms", Math.round(delayMs)],
      ["nodemesh.retry_reason", reason],
    ],
  });
}

/** What an attempt's outcome is called as a retry reason: its status, or the failure's class. */
export function retryReason(outcome: Outcome): string {
  if (outcome.kind === "failure") return outcome.class;
  const grpc = outcome.trailersOnly ? outcome.headers["grpc-status"] : undefined;
  return grpc !== undefined ? `grpc-status ${grpc}` : String(outcome.status);
}

/** `reviews.default` (a route id) as `default/reviews`. */
function serviceName(id: string): string {
  const dot = id.indexOf(".");
  return dot < 0 ? id : `${id.slice(dot + 1)}/${id.slice(0, dot)}`;
}

function hostAndPort(authority: string): [string, number | undefined] {
  const m = /^(.*):(\d{1,5})$/.exec(authority);
  if (!m) return [authority, undefined];
  return [m[1]!.replace(/^\[(.*)\]$/, "$1"), Number(m[2])];
}

function failedGrpc(grpcStatus: string | undefined): boolean {
  return grpcStatus !== undefined && grpcStatus !== "" && grpcStatus !== "0";
}

/** The request's spans, built and handed to the exporter (record.ts, once the request is reported). */
export function finishTrace(
  ctx: DataplaneContext,
  down: Downstream,
  target: Resolved,
  rec: TracedRequest,
  endedMs: number,
): void {
  const t = rec.trace;
  if (!t) return;
  const origin = performance.timeOrigin;
  const q = down.target.indexOf("?");
  const path = q < 0 ? down.target : down.target.slice(0, q);
  const slash = path.lastIndexOf("/");
  const grpc = rec.grpc && slash > 0;
  const name = grpc ? path.slice(1) : rec.route ? `${down.method} ${rec.route}` : down.method;
  const [host, port] = hostAndPort(down.authority);
  const p = rec.peers;

  // What both kinds of span say about the request.
  const common: Attributes = [
    ["http.request.method", down.method],
    ["url.path", path],
    ["url.scheme", "http"],
    ["server.address", host],
    ["network.protocol.version", down.protocol === "h2" ? "2" : "1.1"],
    ["nodemesh.node", ctx.tracer.settings.node],
    ["nodemesh.source.workload", `${p.sourceNamespace}/${p.sourceWorkload}`],
    ["nodemesh.destination.service", serviceName(p.destinationService)],
  ];
  if (port !== undefined) common.push(["server.port", port]);
  if (grpc) {
    common.push(["rpc.system", "grpc"], ["rpc.service", path.slice(1, slash)], ["rpc.method", path.slice(slash + 1)]);
  }
  if (rec.route) common.push(["nodemesh.route", rec.route]);
  if (rec.requestId) common.push(["nodemesh.request_id", rec.requestId]);

  const server: Attributes = [...common, ["nodemesh.retries", rec.retries]];
  if (p.destinationWorkload !== UNKNOWN) {
    server.push(["nodemesh.destination.workload", `${p.destinationNamespace}/${p.destinationWorkload}`]);
  }
  const callerIp = target.direction === "outbound" ? target.from.pod.ip : target.caller.address;
  if (callerIp) server.push(["client.address", callerIp]);
  if (p.security === "mutual_tls" && p.reporter === "destination") server.push(["nodemesh.mtls", true]);
  if (rec.status > 0) server.push(["http.response.status_code", rec.status]);
  if (grpc && rec.grpcStatus !== "" && rec.grpcStatus !== "unknown") {
    server.push(["rpc.grpc.status_code", Number(rec.grpcStatus)]);
  }
  const serverError =
    rec.error ?? (rec.status >= 500 ? String(rec.status) : failedGrpc(rec.grpcStatus) ? rec.grpcStatus : undefined);
  if (serverError) server.push(["error.type", serverError]);
  ctx.tracer.export({
    traceId: t.traceId,
    spanId: t.spanId,
    parentSpanId: t.parentId,
    traceState: t.traceState,
    name,
    kind: SPAN_KIND_SERVER,
    startMs: origin + rec.started,
    endMs: origin + endedMs,
    attributes: server,
    events: t.events,
    status: serverError ? STATUS_ERROR : STATUS_UNSET,
  });

  const last = t.attempts.length - 1;
  t.attempts.forEach((a, i) => {
    const ep = a.endpoint;
    const attrs: Attributes = [
      ...common,
      ["network.peer.address", ep.ip],
      ["network.peer.port", ep.port],
      ["nodemesh.attempt", a.attempt],
    ];
    if (ep.workload !== UNKNOWN) attrs.push(["nodemesh.destination.workload", `${ep.namespace}/${ep.workload}`]);
    if (a.mtls) attrs.push(["nodemesh.mtls", true]);
    if (a.status > 0) attrs.push(["http.response.status_code", a.status]);
    // The answer that reached the client is the last attempt's: its gRPC status came in its trailers.
    const grpcStatus = a.grpcStatus ?? (i === last && a.status > 0 ? rec.grpcStatus : undefined);
    if (grpc && grpcStatus && grpcStatus !== "unknown") attrs.push(["rpc.grpc.status_code", Number(grpcStatus)]);
    const error = a.error ?? (a.status >= 500 ? String(a.status) : failedGrpc(grpcStatus) ? grpcStatus : undefined);
    if (error) attrs.push(["error.type", error]);
    ctx.tracer.export({
      traceId: t.traceId,
      spanId: a.spanId,
      parentSpanId: t.spanId,
      traceState: t.traceState,
      name,
      kind: SPAN_KIND_CLIENT,
      startMs: origin + a.startMs,
      // The attempt whose answer was delivered lasts until the request's end; one that is still
      // unsettled (the client left, the deadline struck) ends there too.
      endMs: origin + ((i === last && a.status > 0) || a.endMs === 0 ? endedMs : a.endMs),
      attributes: attrs,
      events: [],
      status: error ? STATUS_ERROR : STATUS_UNSET,
    });
  });
}
