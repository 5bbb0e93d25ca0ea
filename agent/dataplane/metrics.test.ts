import { describe, expect, it } from "vitest";
import { AggregatorRegistry } from "../../api/prom.ts";
import { DataplaneMetrics, type Peers } from "./metrics.ts";

const peers: Peers = {
  reporter: "source",
  sourceWorkload: "web",
  sourceNamespace: "default",
  destinationService: "api.default",
  destinationWorkload: "api",
  destinationNamespace: "default",
  security: "none",
};
const labels =
  'reporter="source",source_workload="web",source_namespace="default",destination_service="api.default",' +
  'destination_workload="api",destination_namespace="default",connection_security_policy="none",response_code="200"';

describe("DataplaneMetrics request families", () => {
  it("counts, times and sizes requests in the Prometheus text format", async () => {
    const m = new DataplaneMetrics();
    m.recordRequest(peers, 200, "", 0.0007, 10, 1024);
    m.recordRequest(peers, 200, "", 0.02, 0, 5000);
    m.recordRequest(peers, 503, "", 20, 0, 0);
    const text = await m.registry.metrics();
    expect(text).toContain(`nodemesh_requests_total{${labels},grpc_status=""} 2`);
    expect(text).toContain(`nodemesh_requests_total{${labels.replace('"200"', '"503"')},grpc_status=""} 1`);
    expect(text).toContain(`nodemesh_request_duration_seconds_bucket{le="0.0005",${labels}} 0`);
    expect(text).toContain(`nodemesh_request_duration_seconds_bucket{le="0.001",${labels}} 1`);
    expect(text).toContain(`nodemesh_request_duration_seconds_bucket{le="0.025",${labels}} 2`);
    expect(text).toContain(`nodemesh_request_duration_seconds_bucket{le="+Inf",${labels}} 2`);
    expect(text).toContain(`nodemesh_request_duration_seconds_sum{${labels}} 0.0207`);
    expect(text).toContain(`nodemesh_request_duration_seconds_count{${labels}} 2`);
    expect(text).toContain(`nodemesh_response_size_bytes_bucket{le="1000",${labels}} 0`);
    expect(text).toContain(`nodemesh_response_size_bytes_bucket{le="10000",${labels}} 2`);
    // Past the last bucket: only +Inf and the count have it.
    const slow = labels.replace('"200"', '"503"');
    expect(text).toContain(`nodemesh_request_duration_seconds_bucket{le="10",${slow}} 0`);
    expect(text).toContain(`nodemesh_request_duration_seconds_bucket{le="+Inf",${slow}} 1`);
  });

  it("keeps gRPC statuses apart in the counter only", async () => {
    const m = new DataplaneMetrics();
    m.recordRequest(peers, 200, "0", 0.001, 5, 5);
    m.recordRequest(peers, 200, "14", 0.001, 5, 5);
    const text = await m.registry.metrics();
    expect(text).toContain(`nodemesh_requests_total{${labels},grpc_status="0"} 1`);
    expect(text).toContain(`nodemesh_requests_total{${labels},grpc_status="14"} 1`);
    expect(text).toContain(`nodemesh_request_duration_seconds_count{${labels}} 2`);
  });

  it("merges across workers as the admin endpoint does", async () => {
    const workers = [new DataplaneMetrics(), new DataplaneMetrics()];
    workers[0]!.recordRequest(peers, 200, "", 0.001, 1, 2);
    workers[1]!.recordRequest(peers, 200, "", 0.003, 1, 2);
    const merged = AggregatorRegistry.aggregate(await Promise.all(workers.map((w) => w.registry.getMetricsAsJSON())));
    const text = await merged.metrics();
    expect(text).toContain(`nodemesh_requests_total{${labels},grpc_status=""} 2`);
    expect(text).toContain(`nodemesh_request_duration_seconds_bucket{le="0.001",${labels}} 1`);
    expect(text).toContain(`nodemesh_request_duration_seconds_bucket{le="0.005",${labels}} 2`);
    expect(text).toContain(`nodemesh_request_duration_seconds_count{${labels}} 2`);
  });
});
