// The service graph: what agents report about the traffic they carry, and what the controller
// serves from the recent window of those reports (the dashboard and `nodemesh top`/`edges` read it).
//
//   GET /apis/nodemesh.io/v1alpha1/servicegraph?window=300                   → ServiceGraph
//   GET /apis/nodemesh.io/v1alpha1/servicegraph/services/{ns}/{name}?window=900 → ServiceDetail
//
// `window` is in seconds, 10 to 900 (default 300). Node facts and the RTT matrix are served by
// GET /apis/nodemesh.io/v1alpha1/agents.

/** Upper bounds (ms) of the latency buckets agents report; the last bucket is open-ended. */
export const LATENCY_BUCKETS_MS = [
  0.5,
  1,
  2.5,
  5,
  10,
  25,
  50,
  100,
  250,
  500,
  1000,
  2500,
  5000,
  10000,
  Number.POSITIVE_INFINITY,
] as const;

export type EdgeProtocol = "http" | "grpc" | "tcp";

/**
 * One edge's traffic over one report interval, as the caller's agent saw it (reporter source):
 * source workload → destination service, served by a destination workload.
 */
export interface EdgeSample {
  sourceWorkload: string;
  sourceNamespace: string;
  /** "name.namespace", or "passthrough". */
  destinationService: string;
  destinationWorkload: string;
  destinationNamespace: string;
  protocol: EdgeProtocol;
  /** Requests (HTTP, gRPC) or connections (TCP) completed in the interval. */
  requests: number;
  /** How many of them went over mutual TLS between the agents. */
  mtlsRequests: number;
  /** 5xx, gRPC statuses other than OK, agent-generated errors, failed TCP connections. */
  errors: number;
  bytesSent: number;
  bytesReceived: number;
  /** Counts per LATENCY_BUCKETS_MS bucket (requests only; empty for TCP). */
  latencyBuckets: number[];
}

export interface GraphNode {
  /** "svc:name.namespace" or "wl:name.namespace". */
  id: string;
  kind: "service" | "workload";
  name: string;
  namespace: string;
}

export interface EdgeStats {
  requestsPerSecond: number;
  /** 0..1 */
  errorRate: number;
  /** Estimated from the latency buckets; null without requests. */
  p50Ms: number | null;
  p99Ms: number | null;
  bytesPerSecond: number;
}

export interface GraphEdge extends EdgeStats {
  source: string;
  target: string;
  protocol: EdgeProtocol;
  /** Every request (or connection) of the window on this hop went over mutual TLS. */
  mtls: boolean;
}

export interface ServiceGraph {
  windowSeconds: number;
  generatedAt: string;
  nodes: GraphNode[];
  edges: GraphEdge[];
  /** Per destination service, all callers together (what `nodemesh top` shows). */
  services: ({ id: string; name: string; namespace: string; protocol: EdgeProtocol } & EdgeStats)[];
}

export interface ServiceDetail {
  service: {
    name: string;
    namespace: string;
    vip: string;
    ports: { name?: string; port: number; protocol?: string }[];
  };
  totals: EdgeStats;
  /** One point per report interval in the window, oldest first; `t` in seconds since the epoch. */
  series: ({ t: number } & EdgeStats)[];
  /** By source workload ("name.namespace"). */
  callers: ({ source: string } & EdgeStats)[];
  endpoints: { pod: string; ip: string; node: string }[];
  /** Routes and policies that name this Service (parentRefs, backendRefs or targetRefs). */
  policies: { kind: string; namespace: string; name: string; agentsApplied: number; agentsTotal: number }[];
}

/** The latency (ms) at quantile q (0..1) from bucket counts, interpolated within the bucket. */
export function quantileMs(buckets: readonly number[], q: number): number | null {
  const total = buckets.reduce((a, b) => a + b, 0);
  if (total === 0) return null;
  const rank = q * total;
  let seen = 0;
  for (let i = 0; i < buckets.length; i++) {
    const count = buckets[i]!;
    if (count > 0 && seen + count >= rank) {
      const lower = i === 0 ? 0 : LATENCY_BUCKETS_MS[i - 1]!;
      const upper = LATENCY_BUCKETS_MS[i]!;
      if (!Number.isFinite(upper)) return lower;
      return lower + ((upper - lower) * (rank - seen)) / count;
    }
    seen += count;
  }
  return LATENCY_BUCKETS_MS[LATENCY_BUCKETS_MS.length - 2]!;
}
