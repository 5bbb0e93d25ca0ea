// The controller's window of recent traces: spans from every agent joined by trace id, bounded by
// trace count, total spans, spans per trace and age. The spans of one request arrive from several
// agents at different times (each exports in its own batches), so a trace is kept by when it was
// first seen and grows as its spans come in; the oldest traces go first when a bound is reached.

import type { Attributes, SpanKind, Trace, TraceSpan, TraceSummary } from "../../api/traces.ts";
import type { IngestSpan } from "./otlp-decode.ts";

export interface TraceWindowLimits {
  /** Traces kept at once (default 2000). */
  maxTraces: number;
  /** Spans kept at once in all traces (default 50,000: about 650 bytes each in memory, so some 33 MB). */
  maxSpans: number;
  /** Spans kept of one trace; further ones are rejected (default 1000). */
  maxSpansPerTrace: number;
  /** A trace is forgotten this long after its first span arrived (default 15 min). */
  maxAgeMs: number;
}

export const DEFAULT_TRACE_WINDOW: TraceWindowLimits = {
  maxTraces: 2000,
  maxSpans: 50_000,
  maxSpansPerTrace: 1000,
  maxAgeMs: 15 * 60_000,
};

export type EvictionReason = "age" | "traces" | "spans";

export interface TraceFilter {
  /** `nodemesh.destination.service` ("namespace/name") of at least one span. */
  service?: string;
  errorsOnly?: boolean;
  minDurationMs?: number;
  /** recent: newest first (the default); duration: slowest first. */
  sort?: "recent" | "duration";
  limit: number;
}

export interface AddResult {
  accepted: number;
  /** Spans refused because their trace holds maxSpansPerTrace already. */
  traceFull: number;
}

interface StoredTrace {
  id: string;
  firstSeenMs: number;
  /** By span id: an exporter's retry of a span replaces it. */
  spans: Map<string, IngestSpan>;
  summary?: TraceSummary;
}

const DESTINATION_SERVICE = "nodemesh.destination.service";

export class TraceWindow {
  readonly limits: TraceWindowLimits;
  /** In first-seen order (Map insertion order): the head is the oldest. */
  readonly #traces = new Map<string, StoredTrace>();
  #spans = 0;
  readonly #onEvict: (reason: EvictionReason, traces: number) => void;

  constructor(
    limits: Partial<TraceWindowLimits> = {},
    onEvict: (reason: EvictionReason, traces: number) => void = () => {},
  ) {
    this.limits = { ...DEFAULT_TRACE_WINDOW, ...limits };
    this.#onEvict = onEvict;
  }

  get traceCount(): number {
    return this.#traces.size;
  }

  get spanCount(): number {
    return this.#spans;
  }

  add(spans: readonly IngestSpan[], nowMs = Date.now()): AddResult {
    this.#expire(nowMs);
    let accepted = 0;
    let traceFull = 0;
    for (const span of spans) {
      let trace = this.#traces.get(span.traceId);
      if (!trace) {
        trace = { id: span.traceId, firstSeenMs: nowMs, spans: new Map() };
        this.#traces.set(trace.id, trace);
      }
      const replaces = trace.spans.has(span.spanId);
      if (!replaces && trace.spans.size >= this.limits.maxSpansPerTrace) {
        traceFull++;
        continue;
      }
      trace.spans.set(span.spanId, span);
      trace.summary = undefined;
      if (!replaces) this.#spans++;
      accepted++;
    }
    this.#evictOverLimits();
    return { accepted, traceFull };
  }

  /** Newest first (by first seen) or slowest first, filtered. */
  list(filter: TraceFilter, nowMs = Date.now()): TraceSummary[] {
    this.#expire(nowMs);
    const slowest = filter.sort === "duration";
    const out: TraceSummary[] = [];
    for (const trace of [...this.#traces.values()].reverse()) {
      if (!slowest && out.length >= filter.limit) break;
      const s = this.#summary(trace);
      if (filter.service !== undefined && !s.services.includes(filter.service)) continue;
      if (filter.errorsOnly && !s.error) continue;
      if (filter.minDurationMs !== undefined && s.durationMs < filter.minDurationMs) continue;
      out.push(s);
    }
    return slowest ? out.sort((a, b) => b.durationMs - a.durationMs).slice(0, filter.limit) : out;
  }

  get(traceId: string, nowMs = Date.now()): Trace | undefined {
    this.#expire(nowMs);
    const trace = this.#traces.get(traceId.toLowerCase());
    if (!trace) return undefined;
    const summary = this.#summary(trace);
    const start = minStart(trace);
    return { ...summary, spans: treeOrder([...trace.spans.values()]).map(([s, depth]) => present(s, depth, start)) };
  }

  #expire(nowMs: number): void {
    let evicted = 0;
    for (const trace of this.#traces.values()) {
      if (nowMs - trace.firstSeenMs < this.limits.maxAgeMs) break;
      this.#remove(trace);
      evicted++;
    }
    if (evicted) this.#onEvict("age", evicted);
  }

  #evictOverLimits(): void {
    let byCount = 0;
    let bySpans = 0;
    for (const trace of this.#traces.values()) {
      if (this.#traces.size > this.limits.maxTraces) byCount++;
      else if (this.#spans > this.limits.maxSpans) bySpans++;
      else break;
      this.#remove(trace);
    }
    if (byCount) this.#onEvict("traces", byCount);
    if (bySpans) this.#onEvict("spans", bySpans);
  }

  #remove(trace: StoredTrace): void {
    this.#traces.delete(trace.id);
    this.#spans -= trace.spans.size;
  }

  #summary(trace: StoredTrace): TraceSummary {
    if (trace.summary) return trace.summary;
    const spans = [...trace.spans.values()];
    const start = minStart(trace);
    const end = spans.reduce((max, s) => (s.endNs > max ? s.endNs : max), 0n);
    const roots = spans.filter((s) => !s.parentSpanId || !trace.spans.has(s.parentSpanId));
    // Parents that only point at each other (no root): the earliest span stands for the root.
    const root = (roots.length ? roots : spans).sort(
      (a, b) => Number(a.startNs - b.startNs) || (a.parentSpanId ? 1 : 0) - (b.parentSpanId ? 1 : 0),
    )[0]!;
    const services = new Set<string>();
    const nodes = new Set<string>();
    for (const s of spans) {
      const svc = s.attributes[DESTINATION_SERVICE];
      if (typeof svc === "string" && svc) services.add(svc);
      const node = nodeOf(s);
      if (node) nodes.add(node);
    }
    const errors = spans.filter((s) => s.status === "error").length;
    const status = root.attributes["http.response.status_code"];
    trace.summary = {
      traceId: trace.id,
      rootName: root.name,
      rootKind: root.kind,
      rootNode: nodeOf(root),
      startTime: isoOf(start),
      durationMs: nsToMs(end - start),
      spanCount: spans.length,
      errorCount: errors,
      error: errors > 0,
      httpStatus: typeof status === "number" ? status : null,
      services: [...services].sort(),
      nodes: [...nodes].sort(),
      partial: spans.some((s) => s.parentSpanId !== "" && !trace.spans.has(s.parentSpanId)),
    };
    return trace.summary;
  }
}

function minStart(trace: StoredTrace): bigint {
  let min: bigint | undefined;
  for (const s of trace.spans.values()) if (min === undefined || s.startNs < min) min = s.startNs;
  return min ?? 0n;
}

const nsToMs = (ns: bigint): number => Number(ns / 1000n) / 1000;
const isoOf = (ns: bigint): string => new Date(Number(ns / 1_000_000n)).toISOString();

function nodeOf(s: IngestSpan): string {
  for (const v of [s.resource["k8s.node.name"], s.attributes["nodemesh.node"], s.resource["service.instance.id"]]) {
    if (typeof v === "string" && v) return v;
  }
  return "";
}

/** Each span after its parent, siblings by start; spans whose parent is missing are roots. */
function treeOrder(spans: IngestSpan[]): [IngestSpan, number][] {
  const ids = new Set(spans.map((s) => s.spanId));
  const children = new Map<string, IngestSpan[]>();
  for (const s of spans) {
    const parent = s.parentSpanId && ids.has(s.parentSpanId) ? s.parentSpanId : "";
    const siblings = children.get(parent) ?? [];
    siblings.push(s);
    children.set(parent, siblings);
  }
  for (const siblings of children.values())
    siblings.sort((a, b) => (a.startNs < b.startNs ? -1 : a.startNs > b.startNs ? 1 : 0));
  const out: [IngestSpan, number][] = [];
  // Iterative, so that a deep (or hostile) chain of parents cannot exhaust the stack.
  const stack: [IngestSpan, number][] = [...(children.get("") ?? [])].reverse().map((s) => [s, 0]);
  const seen = new Set<string>();
  while (stack.length) {
    const [span, depth] = stack.pop()!;
    if (seen.has(span.spanId)) continue;
    seen.add(span.spanId);
    out.push([span, depth]);
    for (const child of [...(children.get(span.spanId) ?? [])].reverse()) stack.push([child, depth + 1]);
  }
  // A cycle of parents (no root among them) is shown flat rather than lost.
  for (const s of spans) if (!seen.has(s.spanId)) out.push([s, 0]);
  return out;
}

function present(s: IngestSpan, depth: number, traceStart: bigint): TraceSpan {
  const serviceName = s.resource["service.name"];
  return {
    spanId: s.spanId,
    parentSpanId: s.parentSpanId,
    depth,
    name: s.name,
    kind: s.kind as SpanKind,
    startTime: isoOf(s.startNs),
    startUnixNano: String(s.startNs),
    offsetMs: nsToMs(s.startNs - traceStart),
    durationMs: nsToMs(s.endNs - s.startNs),
    status: s.status,
    statusMessage: s.statusMessage,
    serviceName: typeof serviceName === "string" ? serviceName : "",
    node: nodeOf(s),
    attributes: s.attributes as Attributes,
    resource: s.resource,
    events: s.events.map((e) => ({ name: e.name, offsetMs: nsToMs(e.timeNs - traceStart), attributes: e.attributes })),
  };
}
