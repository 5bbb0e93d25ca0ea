// Per-edge traffic since the last report, in each worker: source workload → destination service
// (served by a destination workload), as the caller's agent sees it. The control thread drains
// every worker at report time, sums them and sends the samples to the controller (service graph).
// One Map lookup and a few additions per request; no allocation once an edge exists.

import { type EdgeProtocol, type EdgeSample, LATENCY_BUCKETS_MS } from "../../api/service-graph.ts";
import type { Peers } from "./metrics.ts";

type EdgeEnds = Pick<
  EdgeSample,
  "sourceWorkload" | "sourceNamespace" | "destinationService" | "destinationWorkload" | "destinationNamespace"
>;

/** One edge: its two ends, the serving workload and the protocol. */
function edgeKey(e: EdgeEnds, protocol: EdgeProtocol): string {
  return `${e.sourceWorkload}|${e.sourceNamespace}|${e.destinationService}|${e.destinationWorkload}|${e.destinationNamespace}|${protocol}`;
}

export class EdgeAggregator {
  private edges = new Map<string, EdgeSample>();

  private edge(peers: Peers, protocol: EdgeProtocol): EdgeSample {
    const key = edgeKey(peers, protocol);
    let e = this.edges.get(key);
    if (!e) {
      e = {
        sourceWorkload: peers.sourceWorkload,
        sourceNamespace: peers.sourceNamespace,
        destinationService: peers.destinationService,
        destinationWorkload: peers.destinationWorkload,
        destinationNamespace: peers.destinationNamespace,
        protocol,
        requests: 0,
        mtlsRequests: 0,
        errors: 0,
        bytesSent: 0,
        bytesReceived: 0,
        latencyBuckets: protocol === "tcp" ? [] : LATENCY_BUCKETS_MS.map(() => 0),
      };
      this.edges.set(key, e);
    }
    return e;
  }

  request(peers: Peers, grpc: boolean, failed: boolean, ms: number, bytesSent: number, bytesReceived: number): void {
    const e = this.edge(peers, grpc ? "grpc" : "http");
    e.requests++;
    if (peers.security === "mutual_tls") e.mtlsRequests++;
    if (failed) e.errors++;
    e.bytesSent += bytesSent;
    e.bytesReceived += bytesReceived;
    let i = 0;
    while (ms > LATENCY_BUCKETS_MS[i]!) i++;
    e.latencyBuckets[i]!++;
  }

  connection(peers: Peers, failed: boolean, bytesSent: number, bytesReceived: number): void {
    const e = this.edge(peers, "tcp");
    e.requests++;
    if (peers.security === "mutual_tls") e.mtlsRequests++;
    if (failed) e.errors++;
    e.bytesSent += bytesSent;
    e.bytesReceived += bytesReceived;
  }

  /** The samples since the last drain; starts a new interval. */
  drain(): EdgeSample[] {
    const out = [...this.edges.values()];
    this.edges = new Map();
    return out;
  }
}

/** Sums samples of the same edge (from several workers). */
export function mergeEdges(lists: readonly (readonly EdgeSample[])[]): EdgeSample[] {
  const merged = new Map<string, EdgeSample>();
  for (const list of lists) {
    for (const e of list) {
      const key = edgeKey(e, e.protocol);
      const m = merged.get(key);
      if (!m) {
        merged.set(key, { ...e, latencyBuckets: [...e.latencyBuckets] });
        continue;
      }
      m.requests += e.requests;
      m.mtlsRequests += e.mtlsRequests;
      m.errors += e.errors;
      m.bytesSent += e.bytesSent;
      m.bytesReceived += e.bytesReceived;
      e.latencyBuckets.forEach((n, i) => {
        m.latencyBuckets[i] = (m.latencyBuckets[i] ?? 0) + n;
      });
    }
  }
  return [...merged.values()];
}
