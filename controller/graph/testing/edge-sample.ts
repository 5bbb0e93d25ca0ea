// An edge sample for tests: frontend.default → web.default (workload web), HTTP, 10 requests, all
// in the latency bucket `bucket` (index into LATENCY_BUCKETS_MS; default 4, i.e. (5, 10] ms).

import { type EdgeSample, LATENCY_BUCKETS_MS } from "../../../api/service-graph.ts";

export function edgeSample(over: Partial<EdgeSample> & { bucket?: number } = {}): EdgeSample {
  const { bucket = 4, ...rest } = over;
  const requests = rest.requests ?? 10;
  return {
    sourceWorkload: "frontend",
    sourceNamespace: "default",
    destinationService: "web.default",
    destinationWorkload: "web",
    destinationNamespace: "default",
    protocol: "http",
    requests,
    mtlsRequests: 0,
    errors: 0,
    bytesSent: 0,
    bytesReceived: 0,
    latencyBuckets: LATENCY_BUCKETS_MS.map((_, i) => (i === bucket ? requests : 0)),
    ...rest,
  };
}
