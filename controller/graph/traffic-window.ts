// The recent traffic of the mesh, from the agents' reports: every report brings each edge's
// counts over the agent's last interval; this keeps them for `retentionMs` (15 minutes) in memory
// and answers the service graph and per-service questions over any window within that. Pure apart
// from the clock it is given. Agents are not trusted to keep it small: edges are kept by key in
// LRU order, within a cap on edges and one on samples (DEFAULT_MAX_EDGES, DEFAULT_MAX_SAMPLES).

import {
  type EdgeProtocol,
  type EdgeSample,
  type EdgeStats,
  type GraphEdge,
  type GraphNode,
  LATENCY_BUCKETS_MS,
  quantileMs,
  type ServiceGraph,
} from "../../api/service-graph.ts";

export const RETENTION_MS = 15 * 60_000;
/** Distinct edges kept; past it the edge reported least recently is forgotten (LRU by edge). */
export const DEFAULT_MAX_EDGES = 10_000;
/** Samples kept over all edges; past it whole edges are forgotten, least recently reported first. */
export const DEFAULT_MAX_SAMPLES = 200_000;
/** Samples kept per edge; past it the two oldest are merged (totals kept, old data coarser). */
const MAX_SAMPLES_PER_EDGE = 1_000;
/** Report coverage is kept per 100 ms of report end: at most retention / 100 ms entries. */
const COVERAGE_RESOLUTION_MS = 100;
const SWEEP_EVERY_MS = 10_000;

/** One edge's counts over one report interval [start, end] (ms since the epoch). */
interface Sample {
  start: number;
  end: number;
  requests: number;
  mtlsRequests: number;
  errors: number;
  bytes: number;
  buckets: readonly number[];
}

/** An edge as agents report it (node aside: the graph adds up every node's view of an edge). */
interface EdgeRecord {
  readonly sourceWorkload: string;
  readonly sourceNamespace: string;
  readonly destinationService: string;
  readonly destinationWorkload: string;
  readonly destinationNamespace: string;
  readonly protocol: EdgeProtocol;
  /** Oldest first. */
  samples: Sample[];
}

export interface TrafficWindowOptions {
  retentionMs?: number;
  maxEdges?: number;
  maxSamples?: number;
  /** Called with how many edges were forgotten to stay within the limits. */
  onEvicted?: (edges: number) => void;
}

interface Totals {
  requests: number;
  mtlsRequests: number;
  errors: number;
  bytes: number;
  buckets: number[];
}

function emptyTotals(): Totals {
  return { requests: 0, mtlsRequests: 0, errors: 0, bytes: 0, buckets: LATENCY_BUCKETS_MS.map(() => 0) };
}

/** Adds `share` (0..1) of a sample: a report spread over several series steps adds a part to each. */
function add(t: Totals, e: Sample, share = 1): void {
  t.requests += e.requests * share;
  t.mtlsRequests += e.mtlsRequests * share;
  t.errors += e.errors * share;
  t.bytes += e.bytes * share;
  e.buckets.forEach((n, i) => {
    if (i < t.buckets.length) t.buckets[i]! += n * share;
  });
}

function merge(a: Sample, b: Sample): Sample {
  const buckets = LATENCY_BUCKETS_MS.map((_, i) => (a.buckets[i] ?? 0) + (b.buckets[i] ?? 0));
  return {
    start: Math.min(a.start, b.start),
    end: Math.max(a.end, b.end),
    requests: a.requests + b.requests,
    mtlsRequests: a.mtlsRequests + b.mtlsRequests,
    errors: a.errors + b.errors,
    bytes: a.bytes + b.bytes,
    buckets,
  };
}

function stats(t: Totals, seconds: number): EdgeStats {
  return {
    requestsPerSecond: seconds > 0 ? t.requests / seconds : 0,
    errorRate: t.requests > 0 ? t.errors / t.requests : 0,
    p50Ms: quantileMs(t.buckets, 0.5),
    p99Ms: quantileMs(t.buckets, 0.99),
    bytesPerSecond: seconds > 0 ? t.bytes / seconds : 0,
  };
}

const serviceId = (service: string) => `svc:${service}`;
const workloadId = (name: string, namespace: string) => `wl:${name}.${namespace}`;

function edgeKey(e: EdgeSample): string {
  return JSON.stringify([
    e.sourceWorkload,
    e.sourceNamespace,
    e.destinationService,
    e.destinationWorkload,
    e.destinationNamespace,
    e.protocol,
  ]);
}

/**
 * Memory is bounded whatever agents send: at most `maxEdges` edges and `maxSamples` samples
 * (least recently reported edges go first), and report coverage per 100 ms.
 */
export class TrafficWindow {
  /** By edgeKey; Map order is the LRU order (an edge moves to the end when reported). */
  private readonly edges = new Map<string, EdgeRecord>();
  /**
   * Report end (rounded up to COVERAGE_RESOLUTION_MS) → the earliest start of the reports ending
   * then, edges or not: how many seconds of the window the agents' reports cover.
   */
  private readonly coverage = new Map<number, number>();
  private sampleCount = 0;
  private lastSweep = Number.NEGATIVE_INFINITY;
  private readonly retentionMs: number;
  private readonly maxEdges: number;
  private readonly maxSamples: number;
  private readonly onEvicted: (edges: number) => void;

  constructor(opts: TrafficWindowOptions = {}) {
    this.retentionMs = opts.retentionMs ?? RETENTION_MS;
    this.maxEdges = opts.maxEdges ?? DEFAULT_MAX_EDGES;
    this.maxSamples = opts.maxSamples ?? DEFAULT_MAX_SAMPLES;
    this.onEvicted = opts.onEvicted ?? (() => {});
  }

  /** Edges and samples held now (for tests and metrics). */
  size(): { edges: number; samples: number } {
    return { edges: this.edges.size, samples: this.sampleCount };
  }

  add(_node: string, end: number, intervalSeconds: number, edges: readonly EdgeSample[]): void {
    const start = end - intervalSeconds * 1000;
    const slot = Math.ceil(end / COVERAGE_RESOLUTION_MS) * COVERAGE_RESOLUTION_MS;
    this.coverage.set(slot, Math.min(start, this.coverage.get(slot) ?? start));
    for (const e of edges) this.addSample(e, start, end);
    this.evict();
    if (end - this.lastSweep >= SWEEP_EVERY_MS) this.sweep(end);
  }

  private addSample(e: EdgeSample, start: number, end: number): void {
    const key = edgeKey(e);
    let record = this.edges.get(key);
    if (record)
      this.edges.delete(key); // re-inserted below: the most recently reported edge
    else {
      record = {
        sourceWorkload: e.sourceWorkload,
        sourceNamespace: e.sourceNamespace,
        destinationService: e.destinationService,
        destinationWorkload: e.destinationWorkload,
        destinationNamespace: e.destinationNamespace,
        protocol: e.protocol,
        samples: [],
      };
    }
    this.edges.set(key, record);
    record.samples.push({
      start,
      end,
      requests: e.requests,
      // Agents older than the field send none: their hops count as plaintext.
      mtlsRequests: Math.min(e.mtlsRequests ?? 0, e.requests),
      errors: e.errors,
      bytes: e.bytesSent + e.bytesReceived,
      buckets: e.latencyBuckets.slice(0, LATENCY_BUCKETS_MS.length),
    });
    this.sampleCount++;
    if (record.samples.length > MAX_SAMPLES_PER_EDGE) {
      const [oldest, next] = record.samples.splice(0, 2) as [Sample, Sample];
      record.samples.unshift(merge(oldest, next));
      this.sampleCount--;
    }
  }

  /** Forgets the least recently reported edges until both limits hold. */
  private evict(): void {
    let evicted = 0;
    for (const [key, record] of this.edges) {
      if (this.edges.size <= this.maxEdges && this.sampleCount <= this.maxSamples) break;
      this.edges.delete(key);
      this.sampleCount -= record.samples.length;
      evicted++;
    }
    if (evicted > 0) this.onEvicted(evicted);
  }

  /** Drops what retention expired (queries skip it anyway: this only frees memory). */
  private sweep(now: number): void {
    this.lastSweep = now;
    const cutoff = now - this.retentionMs;
    for (const [slot, _] of this.coverage) if (slot < cutoff) this.coverage.delete(slot);
    for (const [key, record] of this.edges) {
      const kept = record.samples.filter((s) => s.end >= cutoff);
      this.sampleCount -= record.samples.length - kept.length;
      if (kept.length === 0) this.edges.delete(key);
      else record.samples = kept;
    }
  }

  /** Where the window starts (exclusive), retention included. */
  private from(now: number, windowSeconds: number): number {
    return Math.max(now - windowSeconds * 1000, now - this.retentionMs - 1);
  }

  /** The seconds the reports ending within the window actually cover (≤ the window). */
  private coveredSeconds(now: number, windowSeconds: number): number {
    const from = this.from(now, windowSeconds);
    let start = Number.POSITIVE_INFINITY;
    for (const [slot, earliest] of this.coverage) {
      if (slot > from && slot <= now && earliest < start) start = earliest;
    }
    if (start === Number.POSITIVE_INFINITY) return windowSeconds;
    return Math.max(1, (now - Math.max(now - windowSeconds * 1000, start)) / 1000);
  }

  /** Each edge with its samples ending within the window. */
  private *within(now: number, windowSeconds: number): Generator<[EdgeRecord, Sample]> {
    const from = this.from(now, windowSeconds);
    for (const record of this.edges.values()) {
      for (const sample of record.samples) if (sample.end > from && sample.end <= now) yield [record, sample];
    }
  }

  graph(now: number, windowSeconds: number): ServiceGraph {
    const seconds = this.coveredSeconds(now, windowSeconds);
    const nodes = new Map<string, GraphNode>();
    const edges = new Map<string, { source: string; target: string; protocol: EdgeProtocol; totals: Totals }>();
    const services = new Map<string, { protocol: EdgeProtocol; totals: Totals }>();
    const edge = (source: string, target: string, protocol: EdgeProtocol) => {
      const key = `${source}>${target}`;
      let e = edges.get(key);
      if (!e) {
        e = { source, target, protocol, totals: emptyTotals() };
        edges.set(key, e);
      }
      return e;
    };
    for (const [s, sample] of this.within(now, windowSeconds)) {
      const src = workloadId(s.sourceWorkload, s.sourceNamespace);
      const svc = serviceId(s.destinationService);
      nodes.set(src, { id: src, kind: "workload", name: s.sourceWorkload, namespace: s.sourceNamespace });
      const [svcName, svcNamespace] = splitService(s.destinationService);
      nodes.set(svc, { id: svc, kind: "service", name: svcName, namespace: svcNamespace });
      add(edge(src, svc, s.protocol).totals, sample);
      const perService = services.get(svc) ?? { protocol: s.protocol, totals: emptyTotals() };
      add(perService.totals, sample);
      services.set(svc, perService);
      if (s.destinationWorkload !== "unknown") {
        const dst = workloadId(s.destinationWorkload, s.destinationNamespace);
        nodes.set(dst, {
          id: dst,
          kind: "workload",
          name: s.destinationWorkload,
          namespace: s.destinationNamespace,
        });
        add(edge(svc, dst, s.protocol).totals, sample);
      }
    }
    const graphEdges: GraphEdge[] = [...edges.values()].map((e) => ({
      source: e.source,
      target: e.target,
      protocol: e.protocol,
      mtls: e.totals.requests > 0 && e.totals.mtlsRequests >= e.totals.requests - 1e-9,
      ...stats(e.totals, seconds),
    }));
    return {
      windowSeconds,
      generatedAt: new Date(now).toISOString(),
      nodes: [...nodes.values()].sort((a, b) => a.id.localeCompare(b.id)),
      edges: graphEdges.sort((a, b) => `${a.source}>${a.target}`.localeCompare(`${b.source}>${b.target}`)),
      services: [...services.entries()]
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([id, v]) => {
          const node = nodes.get(id)!;
          return { id, name: node.name, namespace: node.namespace, protocol: v.protocol, ...stats(v.totals, seconds) };
        }),
    };
  }

  /**
   * One service's traffic: totals, a time series in `stepSeconds` steps (oldest first) and its
   * callers, over the window.
   */
  service(
    now: number,
    windowSeconds: number,
    service: string,
    stepSeconds: number,
  ): { totals: EdgeStats; series: ({ t: number } & EdgeStats)[]; callers: ({ source: string } & EdgeStats)[] } {
    const seconds = this.coveredSeconds(now, windowSeconds);
    const total = emptyTotals();
    const stepMs = stepSeconds * 1000;
    const steps = new Map<number, Totals>();
    const callers = new Map<string, Totals>();
    for (const [s, r] of this.within(now, windowSeconds)) {
      if (s.destinationService !== service) continue;
      add(total, r);
      // A report covers [start, end]: each step it overlaps gets its share of the counts, so a
      // step finer than the report interval still shows the steady rate.
      const length = Math.max(1, r.end - r.start);
      for (let step = Math.floor(r.start / stepMs) * stepMs; step < r.end; step += stepMs) {
        const overlap = Math.min(r.end, step + stepMs) - Math.max(r.start, step);
        if (overlap <= 0) continue;
        const t = steps.get(step) ?? emptyTotals();
        add(t, r, overlap / length);
        steps.set(step, t);
      }
      const caller = `${s.sourceWorkload}.${s.sourceNamespace}`;
      const c = callers.get(caller) ?? emptyTotals();
      add(c, r);
      callers.set(caller, c);
    }
    return {
      totals: stats(total, seconds),
      series: fillSeries(steps, stepMs).map(([t, v]) => ({ t: t / 1000, ...stats(v, stepSeconds) })),
      callers: [...callers.entries()]
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([source, v]) => ({ source, ...stats(v, seconds) })),
    };
  }
}

/** The steps oldest first, with empty steps between the first and the last filled in as zeros. */
function fillSeries(steps: Map<number, Totals>, stepMs: number): [number, Totals][] {
  const keys = [...steps.keys()].sort((a, b) => a - b);
  if (keys.length === 0) return [];
  const out: [number, Totals][] = [];
  for (let t = keys[0]!; t <= keys[keys.length - 1]!; t += stepMs) out.push([t, steps.get(t) ?? emptyTotals()]);
  return out;
}

/** "name.namespace" → [name, namespace]; "passthrough" has no namespace. */
export function splitService(id: string): [string, string] {
  const dot = id.lastIndexOf(".");
  return dot < 0 ? [id, ""] : [id.slice(0, dot), id.slice(dot + 1)];
}
