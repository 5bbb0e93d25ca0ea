// Traces as the controller serves them from its window of recent spans (controller/traces/), which
// agents fill over OTLP (api/otlp.ts). The dashboard's trace list and waterfall read these shapes.
//
//   GET /apis/nodemesh.io/v1alpha1/traces?service=ns/name&errors=true&minDurationMs=100&sort=duration&limit=50
//                                                             → { kind: "TraceList", items: TraceSummary[] }
//   GET /apis/nodemesh.io/v1alpha1/traces/{traceId}          → { kind: "Trace", ...Trace }
//
// `service` matches the spans' `nodemesh.destination.service` ("namespace/name"); the list is
// newest first, or slowest first with sort=duration. Trace and span ids are lower-case hex, as in W3C traceparent.

export type SpanKind = "unspecified" | "internal" | "server" | "client" | "producer" | "consumer";
export type SpanStatus = "unset" | "ok" | "error";

/** An OTLP AnyValue as JSON: key-value lists become objects, bytes hex strings. */
export type AttributeValue = string | number | boolean | null | AttributeValue[] | { [key: string]: AttributeValue };
export type Attributes = Record<string, AttributeValue>;

export interface SpanEvent {
  name: string;
  /** From the trace's start, ms. */
  offsetMs: number;
  attributes: Attributes;
}

export interface TraceSpan {
  spanId: string;
  /** "" for a span that starts the trace. */
  parentSpanId: string;
  /** Depth in the tree (0: a root, or a span whose parent has not arrived). */
  depth: number;
  name: string;
  kind: SpanKind;
  /** ISO 8601, ms precision; `startUnixNano` is exact. */
  startTime: string;
  startUnixNano: string;
  /** From the trace's start, ms (µs precision). */
  offsetMs: number;
  durationMs: number;
  status: SpanStatus;
  statusMessage: string;
  /** The resource's `service.name` (agents: nodemesh-agent). */
  serviceName: string;
  /** The node that recorded it: resource `k8s.node.name`, else `nodemesh.node`, else `service.instance.id`. */
  node: string;
  attributes: Attributes;
  resource: Attributes;
  events: SpanEvent[];
}

export interface TraceSummary {
  traceId: string;
  /** The root span: the earliest span without a parent in the trace. */
  rootName: string;
  rootKind: SpanKind;
  rootNode: string;
  startTime: string;
  /** From the earliest start to the latest end among the spans received. */
  durationMs: number;
  spanCount: number;
  errorCount: number;
  /** Any span with status error. */
  error: boolean;
  /** The root span's `http.response.status_code`, if it has one. */
  httpStatus: number | null;
  /** `nodemesh.destination.service` values of its spans, sorted. */
  services: string[];
  nodes: string[];
  /** Some span's parent has not arrived (yet): the tree is incomplete. */
  partial: boolean;
}

export interface Trace extends TraceSummary {
  /** In tree order: each span after its parent, siblings by start time. */
  spans: TraceSpan[];
}

export const DEFAULT_TRACE_LIST_LIMIT = 50;
export const MAX_TRACE_LIST_LIMIT = 500;
