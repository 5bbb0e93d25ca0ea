// The recent traffic of the mesh, from the agents' reports: every report brings each edge's
// counts over the agent's last interval; this keeps them for `retentionMs` (15 minutes) in memory
// and answers the service graph and per-service questions over any window within that. Pure apart
// from the clock it is given.

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

interface StoredReport {
  readonly node: string;
  /** The interval the report covers: [start, end], ms since the epoch. */
  readonly start: number;
  readonly end: number;
  readonly edges: readonly EdgeSample[];
}

interface Totals {
  requests: number;
  errors: number;
  bytes: number;
  buckets: number[];
}

function emptyTotals(): Totals {
  return { requests: 0, errors: 0, bytes: 0, buckets: LATENCY_BUCKETS_MS.map(() => 0) };
}

/** Adds `share` (0..1) of a sample: a report spread over several series steps adds a part to each. */
function add(t: Totals, e: EdgeSample, share = 1): void {
  t.requests += e.requests * share;
  t.errors += e.errors * share;
  t.bytes += (e.bytesSent + e.bytesReceived) * share;
  e.latencyBuckets.forEach((n, i) => {
    if (i < t.buckets.length) t.buckets[i]! += n * share;
  });
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

export class TrafficWindow {
  private reports: StoredReport[] = [];
  private readonly retentionMs: number;

  constructor(retentionMs = RETENTION_MS) {
    this.retentionMs = retentionMs;
  }

  add(node: string, end: number, intervalSeconds: number, edges: readonly EdgeSample[]): void {
    this.reports.push({ node, start: end - intervalSeconds * 1000, end, edges });
    this.expire(end);
  }

  private expire(now: number): void {
    const cutoff = now - this.retentionMs;
    if (this.reports.length > 0 && this.reports[0]!.end < cutoff) {
      this.reports = this.reports.filter((r) => r.end >= cutoff);
    }
  }

  /** Reports ending within the window, and the seconds they actually cover (≤ the window). */
  private within(now: number, windowSeconds: number): { reports: StoredReport[]; seconds: number } {
    const from = now - windowSeconds * 1000;
    const reports = this.reports.filter((r) => r.end > from && r.end <= now);
    if (reports.length === 0) return { reports, seconds: windowSeconds };
    let start = Number.POSITIVE_INFINITY;
    for (const r of reports) if (r.start < start) start = r.start; // a loop: spreading 100k+ values overflows
    const earliest = Math.max(from, start);
    return { reports, seconds: Math.max(1, (now - earliest) / 1000) };
  }

  graph(now: number, windowSeconds: number): ServiceGraph {
    const { reports, seconds } = this.within(now, windowSeconds);
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
    for (const r of reports) {
      for (const s of r.edges) {
        const src = workloadId(s.sourceWorkload, s.sourceNamespace);
        const svc = serviceId(s.destinationService);
        nodes.set(src, { id: src, kind: "workload", name: s.sourceWorkload, namespace: s.sourceNamespace });
        const [svcName, svcNamespace] = splitService(s.destinationService);
        nodes.set(svc, { id: svc, kind: "service", name: svcName, namespace: svcNamespace });
        add(edge(src, svc, s.protocol).totals, s);
        const perService = services.get(svc) ?? { protocol: s.protocol, totals: emptyTotals() };
        add(perService.totals, s);
        services.set(svc, perService);
        if (s.destinationWorkload !== "unknown") {
          const dst = workloadId(s.destinationWorkload, s.destinationNamespace);
          nodes.set(dst, {
            id: dst,
            kind: "workload",
            name: s.destinationWorkload,
            namespace: s.destinationNamespace,
          });
          add(edge(svc, dst, s.protocol).totals, s);
        }
      }
    }
    const graphEdges: GraphEdge[] = [...edges.values()].map((e) => ({
      source: e.source,
      target: e.target,
      protocol: e.protocol,
      mtls: false,
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
    const { reports, seconds } = this.within(now, windowSeconds);
    const total = emptyTotals();
    const stepMs = stepSeconds * 1000;
    const steps = new Map<number, Totals>();
    const callers = new Map<string, Totals>();
    for (const r of reports) {
      for (const s of r.edges) {
        if (s.destinationService !== service) continue;
        add(total, s);
        // A report covers [start, end]: each step it overlaps gets its share of the counts, so a
        // step finer than the report interval still shows the steady rate.
        const length = Math.max(1, r.end - r.start);
        for (let step = Math.floor(r.start / stepMs) * stepMs; step < r.end; step += stepMs) {
          const overlap = Math.min(r.end, step + stepMs) - Math.max(r.start, step);
          if (overlap <= 0) continue;
          const t = steps.get(step) ?? emptyTotals();
          add(t, s, overlap / length);
          steps.set(step, t);
        }
        const caller = `${s.sourceWorkload}.${s.sourceNamespace}`;
        const c = callers.get(caller) ?? emptyTotals();
        add(c, s);
        callers.set(caller, c);
      }
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
