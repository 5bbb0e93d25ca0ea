// The last link: what one request did, filled in along the way and reported once at its end —
// metrics, the service-graph edge sample and the access-log line, all from here.

import { type AccessEntry, traceIdOf } from "../access-log.ts";
import type { DataplaneContext } from "../context.ts";
import type { Endpoint } from "../endpoint.ts";
import { type ConnectionSecurity, type Peers, UNKNOWN } from "../metrics.ts";
import type { Downstream } from "./downstream.ts";
import { headerValue } from "./headers.ts";
import { destinationService, type Resolved } from "./resolve.ts";
import { finishTrace, type RequestTrace } from "./trace.ts";

export interface RequestRecord {
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
  /** The AuthorizationPolicy that denied the request. */
  authorizationPolicy?: string;
  /** A sampled request's spans (trace.ts). */
  trace?: RequestTrace;
  /** An unsampled request's traceparent for the next hop, where this agent started the trace. */
  unsampledTraceparent?: string;
}

export function newRecord(down: Downstream, target: Resolved): RequestRecord {
  const service = destinationService(target);
  const peers =
    target.direction === "outbound"
      ? {
          reporter: "source" as const,
          sourceWorkload: target.from.workload.name,
          sourceNamespace: target.from.workload.namespace,
          destinationService: service,
          destinationWorkload: UNKNOWN,
          destinationNamespace: UNKNOWN,
          security: "none" as ConnectionSecurity, // known once an endpoint is picked
        }
      : {
          reporter: "destination" as const,
          sourceWorkload: target.caller.workload.name,
          sourceNamespace: target.caller.workload.namespace,
          destinationService: service,
          destinationWorkload: target.to.workload.name,
          destinationNamespace: target.to.workload.namespace,
          security: (target.caller.principal ? "mutual_tls" : "none") as ConnectionSecurity,
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
    // Present from the start, sampled or not: every record keeps one shape, so the request
    // path's property accesses stay monomorphic when a few requests are sampled.
    trace: undefined,
    unsampledTraceparent: undefined,
  };
}

/** The endpoint an attempt went to: the record names it, its workload and how the hop is secured. */
export function recordEndpoint(rec: RequestRecord, endpoint: Endpoint, security?: ConnectionSecurity): void {
  rec.endpoint = endpoint;
  rec.peers.destinationWorkload = endpoint.workload;
  rec.peers.destinationNamespace = endpoint.namespace;
  // The destination's record keeps how its caller came (the endpoint is the pod itself).
  if (security) rec.peers.security = security;
}

/** A gRPC status as a metric label: "0"–"16", else "unknown" (an app cannot grow the label set). */
export function grpcStatusLabel(value: unknown): string {
  const n = Number(value);
  return Number.isInteger(n) && n >= 0 && n <= 16 ? String(n) : "unknown";
}

/** A finished request whose metrics, edge sample and access-log line are still to be written. */
interface Finished {
  readonly ctx: DataplaneContext;
  readonly down: Downstream;
  readonly target: Resolved;
  readonly rec: RequestRecord;
  readonly seconds: number;
  /** performance.now() at the end. */
  readonly ended: number;
}

/**
 * Requests that finished during this turn of the event loop. They are reported once the loop has
 * handled all the I/O that was ready (setImmediate): when requests arrive together (a client's
 * burst, many connections at once), every answer goes out before any bookkeeping is done.
 */
let finished: Finished[] = [];

export function reportLater(ctx: DataplaneContext, down: Downstream, target: Resolved, rec: RequestRecord): void {
  if (finished.length === 0) setImmediate(reportFinished);
  const ended = performance.now();
  finished.push({ ctx, down, target, rec, seconds: (ended - rec.started) / 1000, ended });
}

function reportFinished(): void {
  const batch = finished;
  finished = [];
  for (const f of batch) report(f);
}

function report({ ctx, down, target, rec, seconds, ended }: Finished): void {
  if (rec.trace) finishTrace(ctx, down, target, rec, ended);
  if (ctx.settings.requestMetrics) {
    ctx.metrics.recordRequest(rec.peers, rec.status, rec.grpcStatus, seconds, rec.requestBytes, rec.responseBytes);
    if (rec.peers.reporter === "source") {
      const failed = rec.status === 0 || rec.status >= 500 || (rec.grpc && rec.grpcStatus !== "0");
      ctx.edges.request(rec.peers, rec.grpc, failed, seconds * 1000, rec.requestBytes, rec.responseBytes);
    }
  }
  if (ctx.accessLog.wants(target.route?.policy, rec.peers.sourceNamespace, rec.peers.destinationNamespace)) {
    ctx.accessLog.write(accessEntry(down, target, rec, seconds));
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
    // The trace this agent continued or started, when tracing is on; else the caller's.
    traceId:
      rec.trace?.traceId ??
      traceIdOf(
        rec.unsampledTraceparent ?? headerValue(down.headers, "traceparent"),
        headerValue(down.headers, "x-b3-traceid"),
      ),
    error: rec.error,
    authorizationPolicy: rec.authorizationPolicy,
  };
}
