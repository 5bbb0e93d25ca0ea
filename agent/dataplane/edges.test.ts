import { describe, expect, it } from "vitest";
import { type EdgeSample, LATENCY_BUCKETS_MS } from "../../api/service-graph.ts";
import { EdgeAggregator, mergeEdges } from "./edges.ts";
import type { Peers } from "./metrics.ts";

const peers = (over: Partial<Peers> = {}): Peers => ({
  reporter: "source",
  sourceWorkload: "frontend",
  sourceNamespace: "shop",
  destinationService: "cart.shop",
  destinationWorkload: "cart",
  destinationNamespace: "shop",
  security: "none",
  ...over,
});

const zeros = () => LATENCY_BUCKETS_MS.map(() => 0);

/** Bucket counts with the given indexes incremented. */
function counts(...indexes: number[]): number[] {
  const b = zeros();
  for (const i of indexes) b[i]!++;
  return b;
}

function sample(over: Partial<EdgeSample> = {}): EdgeSample {
  return {
    sourceWorkload: "frontend",
    sourceNamespace: "shop",
    destinationService: "cart.shop",
    destinationWorkload: "cart",
    destinationNamespace: "shop",
    protocol: "http",
    requests: 0,
    mtlsRequests: 0,
    errors: 0,
    bytesSent: 0,
    bytesReceived: 0,
    latencyBuckets: zeros(),
    ...over,
  };
}

describe("EdgeAggregator", () => {
  it("counts requests, errors, bytes and latency buckets of one edge", () => {
    const agg = new EdgeAggregator();
    agg.request(peers(), false, false, 0.2, 100, 1000); // ≤ 0.5
    agg.request(peers(), false, true, 3, 50, 20); // (2.5, 5]
    agg.request(peers({ security: "mutual_tls" }), false, false, 3.5, 10, 30); // (2.5, 5], in mTLS
    const [e, ...rest] = agg.drain();
    expect(rest).toEqual([]);
    expect(e).toEqual({
      sourceWorkload: "frontend",
      sourceNamespace: "shop",
      destinationService: "cart.shop",
      destinationWorkload: "cart",
      destinationNamespace: "shop",
      protocol: "http",
      requests: 3,
      mtlsRequests: 1,
      errors: 1,
      bytesSent: 160,
      bytesReceived: 1050,
      latencyBuckets: counts(0, 3, 3),
    });
  });

  it("puts a latency on a bucket's upper bound in that bucket, and anything beyond 10 s in the last", () => {
    const agg = new EdgeAggregator();
    for (const ms of [0, 0.5, 1, 2.5, 10000, 10000.1, 60_000]) agg.request(peers(), false, false, ms, 0, 0);
    expect(agg.drain()[0]!.latencyBuckets).toEqual(counts(0, 0, 1, 2, 13, 14, 14));
  });

  it("places every bound exactly once", () => {
    const agg = new EdgeAggregator();
    for (const bound of LATENCY_BUCKETS_MS.slice(0, -1)) agg.request(peers(), false, false, bound, 0, 0);
    agg.request(peers(), false, false, Number.POSITIVE_INFINITY, 0, 0);
    expect(agg.drain()[0]!.latencyBuckets).toEqual(LATENCY_BUCKETS_MS.map(() => 1));
  });

  it("keeps gRPC, HTTP and TCP of the same peers apart, TCP without buckets", () => {
    const agg = new EdgeAggregator();
    agg.request(peers(), true, false, 1, 1, 2);
    agg.request(peers(), false, false, 1, 1, 2);
    agg.connection(peers(), false, 500, 700);
    agg.connection(peers(), true, 0, 0);
    const byProtocol = Object.fromEntries(agg.drain().map((e) => [e.protocol, e]));
    expect(Object.keys(byProtocol).sort()).toEqual(["grpc", "http", "tcp"]);
    expect(byProtocol.grpc).toMatchObject({ requests: 1, errors: 0, latencyBuckets: counts(1) });
    expect(byProtocol.http).toMatchObject({ requests: 1, errors: 0, latencyBuckets: counts(1) });
    expect(byProtocol.tcp).toMatchObject({
      requests: 2,
      errors: 1,
      bytesSent: 500,
      bytesReceived: 700,
      latencyBuckets: [],
    });
  });

  it("keys an edge by source, destination service, destination workload and namespaces", () => {
    const agg = new EdgeAggregator();
    agg.request(peers(), false, false, 1, 0, 0);
    agg.request(peers({ destinationWorkload: "cart-v2" }), false, false, 1, 0, 0);
    agg.request(peers({ sourceWorkload: "checkout" }), false, false, 1, 0, 0);
    agg.request(peers({ sourceNamespace: "other" }), false, false, 1, 0, 0);
    agg.request(peers({ destinationNamespace: "other" }), false, false, 1, 0, 0);
    agg.request(peers({ destinationService: "passthrough", destinationWorkload: "unknown" }), false, false, 1, 0, 0);
    // The reporter side is not part of the edge.
    agg.request(peers({ reporter: "destination" }), false, false, 1, 0, 0);
    const edges = agg.drain();
    expect(edges).toHaveLength(6);
    expect(edges.map((e) => e.requests)).toEqual([2, 1, 1, 1, 1, 1]);
  });

  it("starts a new interval on drain", () => {
    const agg = new EdgeAggregator();
    agg.request(peers(), false, true, 7, 10, 10);
    const first = agg.drain();
    expect(first[0]).toMatchObject({ requests: 1, errors: 1 });
    expect(agg.drain()).toEqual([]);

    agg.request(peers(), false, false, 7, 1, 2);
    const second = agg.drain();
    expect(second).toEqual([sample({ requests: 1, bytesSent: 1, bytesReceived: 2, latencyBuckets: counts(4) })]);
    // What was drained before is not touched by later traffic.
    expect(first[0]).toMatchObject({ requests: 1, errors: 1, bytesSent: 10, latencyBuckets: counts(4) });
  });
});

describe("mergeEdges", () => {
  it("sums the same edge from several workers, bucket by bucket", () => {
    const a = sample({ requests: 2, errors: 1, bytesSent: 10, bytesReceived: 20, latencyBuckets: counts(0, 3) });
    const b = sample({ requests: 3, errors: 0, bytesSent: 5, bytesReceived: 7, latencyBuckets: counts(3, 3, 14) });
    const c = sample({ requests: 1, errors: 1, bytesSent: 1, bytesReceived: 1, latencyBuckets: counts(14) });
    expect(mergeEdges([[a], [b], [c]])).toEqual([
      sample({
        requests: 6,
        errors: 2,
        bytesSent: 16,
        bytesReceived: 28,
        latencyBuckets: counts(0, 3, 3, 3, 14, 14),
      }),
    ]);
  });

  it("keeps different edges apart, in first-seen order", () => {
    const http = sample({ requests: 1, latencyBuckets: counts(1) });
    const grpc = sample({ protocol: "grpc", requests: 2, latencyBuckets: counts(2, 2) });
    const tcp = sample({ protocol: "tcp", requests: 4, errors: 1, bytesSent: 9, latencyBuckets: [] });
    const other = sample({ destinationWorkload: "cart-v2", requests: 5, latencyBuckets: counts(5) });
    const tcp2 = sample({ protocol: "tcp", requests: 1, bytesReceived: 3, latencyBuckets: [] });
    const merged = mergeEdges([[http, grpc], [tcp, other], [tcp2]]);
    expect(merged.map((e) => [e.protocol, e.destinationWorkload, e.requests])).toEqual([
      ["http", "cart", 1],
      ["grpc", "cart", 2],
      ["tcp", "cart", 5],
      ["http", "cart-v2", 5],
    ]);
    expect(merged[2]).toMatchObject({ errors: 1, bytesSent: 9, bytesReceived: 3, latencyBuckets: [] });
  });

  it("does not modify its inputs", () => {
    const a = sample({ requests: 1, latencyBuckets: counts(0) });
    const b = sample({ requests: 1, latencyBuckets: counts(1) });
    const before = structuredClone([a, b]);
    const merged = mergeEdges([[a], [b]]);
    expect([a, b]).toEqual(before);
    merged[0]!.latencyBuckets[0]!++;
    expect(a.latencyBuckets).toEqual(counts(0));
  });

  it("merges nothing into nothing", () => {
    expect(mergeEdges([])).toEqual([]);
    expect(mergeEdges([[], []])).toEqual([]);
  });

  it("merges what aggregators drained", () => {
    const w1 = new EdgeAggregator();
    const w2 = new EdgeAggregator();
    w1.request(peers(), false, false, 20, 1, 1);
    w2.request(peers(), false, true, 20, 2, 2);
    w2.connection(peers({ destinationService: "passthrough", destinationWorkload: "unknown" }), false, 3, 4);
    const merged = mergeEdges([w1.drain(), w2.drain()]);
    expect(merged).toEqual([
      sample({ requests: 2, errors: 1, bytesSent: 3, bytesReceived: 3, latencyBuckets: counts(5, 5) }),
      sample({
        destinationService: "passthrough",
        destinationWorkload: "unknown",
        protocol: "tcp",
        requests: 1,
        bytesSent: 3,
        bytesReceived: 4,
        latencyBuckets: [],
      }),
    ]);
  });
});
