// Data-plane metrics (docs/metrics.md), one registry per worker thread; the admin endpoint merges
// the workers' registries at scrape time (off the data path). Label children are bound once per
// label set and reused, so a request or connection costs a Map lookup and a few increments.
// The per-request families keep their own counts (prom-client's children hash their labels on
// every observation) and hand them to prom-client only when scraped.

import { getHeapStatistics } from "node:v8";
import { Counter, type Metric, Registry } from "../../api/prom.ts";

export type Direction = "outbound" | "inbound";

/** Who is talking to whom: the label values of a request or a connection (docs/metrics.md). */
export interface Peers {
  readonly reporter: "source" | "destination";
  readonly sourceWorkload: string;
  readonly sourceNamespace: string;
  readonly destinationService: string;
  readonly destinationWorkload: string;
  readonly destinationNamespace: string;
  /**
   * Istio's connection_security_policy: the hop between the agents was mutual TLS, or not
   * ("none": plaintext tunnel, a caller or endpoint outside the mesh). A tunnel between two pods of
   * one node is "mutual_tls" too: it carries the same proven identity, from the agent that holds
   * both certificates, and never crosses a network to need the encryption (local-tunnel.ts).
   */
  readonly security: ConnectionSecurity;
}

export type ConnectionSecurity = "mutual_tls" | "none";

export const UNKNOWN = "unknown";

type CounterChild = ReturnType<Counter["labels"]>;

export interface ConnectionMetrics {
  opened: CounterChild;
  closed: CounterChild;
  bytesFromDownstream: CounterChild;
  bytesFromUpstream: CounterChild;
}

const PEER_LABELS = [
  "reporter",
  "source_workload",
  "source_namespace",
  "destination_service",
  "destination_workload",
  "destination_namespace",
  "connection_security_policy",
] as const;

/** The label set of `p` as one string (a Map key). */
function peerKey(p: Peers): string {
  return `${p.reporter}|${p.sourceWorkload}|${p.sourceNamespace}|${p.destinationService}|${p.destinationWorkload}|${p.destinationNamespace}|${p.security}`;
}

function peerValues(p: Peers): string[] {
  return [
    p.reporter,
    p.sourceWorkload,
    p.sourceNamespace,
    p.destinationService,
    p.destinationWorkload,
    p.destinationNamespace,
    p.security,
  ];
}

/** Sub-millisecond to 10 s. */
const DURATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const SIZE_BUCKETS = [100, 1000, 10_000, 100_000, 1_000_000, 10_000_000];

/** Observations per bucket (not cumulative; past the last bound only `count` has them), sum, count. */
class Buckets {
  readonly bounds: readonly number[];
  readonly counts: number[];
  sum = 0;
  count = 0;
  constructor(bounds: readonly number[]) {
    this.bounds = bounds;
    this.counts = bounds.map(() => 0);
  }
  observe(value: number): void {
    this.sum += value;
    this.count++;
    let i = 0;
    while (i < this.bounds.length && value > this.bounds[i]!) i++;
    if (i < this.bounds.length) this.counts[i]!++;
  }
}

type Labels = Record<string, string | number>;

/** One sample as prom-client's registry reads it (getMetricsAsJSON, then the admin's merge). */
interface Sample {
  labels: Labels;
  value: number;
  metricName?: string;
}

function histogramSamples(name: string, labels: Labels, b: Buckets, out: Sample[]): void {
  let cumulative = 0;
  for (let i = 0; i < b.bounds.length; i++) {
    cumulative += b.counts[i]!;
    out.push({ labels: { le: b.bounds[i]!, ...labels }, value: cumulative, metricName: `${name}_bucket` });
  }
  out.push({ labels: { le: "+Inf", ...labels }, value: b.count, metricName: `${name}_bucket` });
  out.push({ labels, value: b.sum, metricName: `${name}_sum` });
  out.push({ labels, value: b.count, metricName: `${name}_count` });
}

/** The request metrics of one label set (peers and response code), bound when first seen. */
class RequestSeries {
  readonly labels: Labels;
  /** Requests by grpc_status ("" for plain HTTP). */
  readonly requests = new Map<string, number>();
  readonly duration = new Buckets(DURATION_BUCKETS);
  readonly requestSize = new Buckets(SIZE_BUCKETS);
  readonly responseSize = new Buckets(SIZE_BUCKETS);
  constructor(peers: Peers, code: string) {
    const labels: Labels = {};
    const values = peerValues(peers);
    for (let i = 0; i < PEER_LABELS.length; i++) labels[PEER_LABELS[i]!] = values[i]!;
    labels.response_code = code;
    this.labels = labels;
  }
}

/**
 * Registers a family whose samples are computed when the registry is read (a scrape). prom-client
 * reads any registered object through get(), as its own AggregatorRegistry does.
 */
function registerFamily(
  registry: Registry,
  name: string,
  help: string,
  type: "counter" | "gauge" | "histogram",
  samples: () => Sample[],
): void {
  const family = {
    name,
    help,
    type,
    aggregator: "sum",
    get: async () => ({ name, help, type, aggregator: "sum", values: samples() }),
    reset: () => {},
  };
  registry.registerMetric(family as unknown as Metric);
}

/**
 * This worker thread's memory, by kind: its V8 heap used and committed, and the memory outside the
 * heap that its objects hold (Buffers). The agent's process metrics (`nodemesh_agent_nodejs_*`)
 * see only the control thread's isolate; each worker has its own.
 */
export function registerWorkerMemory(registry: Registry, worker: number): void {
  registerFamily(
    registry,
    "nodemesh_agent_worker_memory_bytes",
    "A data-plane worker thread's memory: V8 heap used and committed, and memory outside the heap its objects hold",
    "gauge",
    () => {
      const heap = getHeapStatistics();
      const labels = (kind: string) => ({ worker: String(worker), kind });
      return [
        { labels: labels("heap_used"), value: heap.used_heap_size },
        { labels: labels("heap_committed"), value: heap.total_heap_size },
        { labels: labels("external"), value: heap.external_memory },
      ];
    },
  );
}

export class DataplaneMetrics {
  readonly registry = new Registry();
  private readonly boundConnections = new Map<string, ConnectionMetrics>();

  private readonly opened = new Counter({
    name: "nodemesh_tcp_connections_opened_total",
    help: "TCP connections forwarded as bytes",
    labelNames: PEER_LABELS,
    registers: [this.registry],
  });
  private readonly closed = new Counter({
    name: "nodemesh_tcp_connections_closed_total",
    help: "Forwarded TCP connections that have closed",
    labelNames: PEER_LABELS,
    registers: [this.registry],
  });
  private readonly received = new Counter({
    name: "nodemesh_tcp_received_bytes_total",
    help: "Bytes received from the connecting side (the request direction)",
    labelNames: PEER_LABELS,
    registers: [this.registry],
  });
  private readonly sent = new Counter({
    name: "nodemesh_tcp_sent_bytes_total",
    help: "Bytes sent back to the connecting side (the response direction)",
    labelNames: PEER_LABELS,
    registers: [this.registry],
  });
  readonly connectFailures = new Counter({
    name: "nodemesh_tcp_connect_failures_total",
    help: "Upstream connection attempts that failed, by reason; a failed attempt may be followed by failover",
    labelNames: ["direction", "reason"],
    registers: [this.registry],
  });
  readonly tunnels = new Counter({
    name: "nodemesh_tunnel_connections_total",
    help: "Tunnels to this node's pods, by security: mutual_tls (from another node's agent, the caller proved a mesh identity; many share one TLS connection), plaintext (one connection each) or same_node (from a pod of this node, served in the agent without a network hop; HTTP/2 requests between two pods of one node take none)",
    labelNames: ["security"],
    registers: [this.registry],
  });
  readonly tunnelTlsConnections = new Counter({
    name: "nodemesh_tunnel_tls_connections_total",
    help: "Mutual-TLS connections between agents opened (outbound) or accepted (inbound), each a handshake carrying many tunnels",
    labelNames: ["direction"],
    registers: [this.registry],
  });
  readonly refused = new Counter({
    name: "nodemesh_tcp_connections_refused_total",
    help: "Accepted connections the agent closed without forwarding, by reason",
    labelNames: ["direction", "reason"],
    registers: [this.registry],
  });

  private readonly requestSeries = new Map<string, RequestSeries>();

  constructor() {
    const series = () => this.requestSeries.values();
    registerFamily(this.registry, "nodemesh_requests_total", "HTTP and gRPC requests answered", "counter", () => {
      const out: Sample[] = [];
      for (const s of series()) {
        for (const [grpcStatus, value] of s.requests)
          out.push({ labels: { ...s.labels, grpc_status: grpcStatus }, value });
      }
      return out;
    });
    const histogram = (name: string, help: string, pick: (s: RequestSeries) => Buckets) =>
      registerFamily(this.registry, name, help, "histogram", () => {
        const out: Sample[] = [];
        for (const s of series()) histogramSamples(name, s.labels, pick(s), out);
        return out;
      });
    histogram(
      "nodemesh_request_duration_seconds",
      "From the request head to the end of the response",
      (s) => s.duration,
    );
    histogram("nodemesh_request_size_bytes", "Request body bytes", (s) => s.requestSize);
    histogram("nodemesh_response_size_bytes", "Response body bytes", (s) => s.responseSize);
  }

  /** Label children are bound once per label set and reused: a request costs a Map lookup. */
  forConnection(peers: Peers): ConnectionMetrics {
    const key = peerKey(peers);
    let m = this.boundConnections.get(key);
    if (!m) {
      const values = peerValues(peers);
      m = {
        opened: this.opened.labels(...values),
        closed: this.closed.labels(...values),
        bytesFromDownstream: this.received.labels(...values),
        bytesFromUpstream: this.sent.labels(...values),
      };
      this.boundConnections.set(key, m);
    }
    return m;
  }

  /** One answered request: counted, timed and sized. */
  recordRequest(
    peers: Peers,
    status: number,
    grpcStatus: string,
    seconds: number,
    requestBytes: number,
    responseBytes: number,
  ): void {
    const key = `${peerKey(peers)}|${status}`;
    let s = this.requestSeries.get(key);
    if (!s) {
      s = new RequestSeries(peers, String(status));
      this.requestSeries.set(key, s);
    }
    s.requests.set(grpcStatus, (s.requests.get(grpcStatus) ?? 0) + 1);
    s.duration.observe(seconds);
    s.requestSize.observe(requestBytes);
    s.responseSize.observe(responseBytes);
  }

  // ---- resilience events
  readonly localReplies = new Counter({
    name: "nodemesh_local_replies_total",
    help: "Requests the agent answered itself instead of the upstream, by error code",
    labelNames: ["direction", "reason"],
    registers: [this.registry],
  });
  readonly retries = new Counter({
    name: "nodemesh_retries_total",
    help: "Upstream retries made",
    labelNames: ["destination_service"],
    registers: [this.registry],
  });
  readonly timeouts = new Counter({
    name: "nodemesh_timeouts_total",
    help: "Requests answered 504 by the agent (request or per-try timeout)",
    labelNames: ["destination_service"],
    registers: [this.registry],
  });
  readonly retriesRefused = new Counter({
    name: "nodemesh_retries_budget_exhausted_total",
    help: "Retries not made because the retry budget was used up",
    labelNames: ["destination_service"],
    registers: [this.registry],
  });
  readonly breakerTrips = new Counter({
    name: "nodemesh_circuit_breaker_trips_total",
    help: "Requests refused by a circuit breaker limit",
    labelNames: ["destination_service"],
    registers: [this.registry],
  });
  readonly ejections = new Counter({
    name: "nodemesh_outlier_ejections_total",
    help: "Endpoints ejected by outlier detection",
    labelNames: ["destination_service"],
    registers: [this.registry],
  });
  readonly rateLimited = new Counter({
    name: "nodemesh_rate_limited_requests_total",
    help: "Requests refused with 429 by a local rate limit",
    labelNames: ["destination_service"],
    registers: [this.registry],
  });
  readonly authzDenied = new Counter({
    name: "nodemesh_authorization_denied_total",
    help: "Requests and connections denied at the destination by AuthorizationPolicy: policy is the DENY policy that matched, or empty when no ALLOW policy did; reason is deny_policy, no_allow_match, ambiguous_request, jwt_invalid or jwt_required",
    labelNames: ["destination_service", "policy", "reason"],
    registers: [this.registry],
  });
  readonly authzAudited = new Counter({
    name: "nodemesh_authorization_audited_total",
    help: "Requests and connections an AUDIT AuthorizationPolicy matched",
    labelNames: ["destination_service", "policy"],
    registers: [this.registry],
  });
  readonly faults = new Counter({
    name: "nodemesh_injected_faults_total",
    help: "Faults injected, by type (delay, abort)",
    labelNames: ["destination_service", "type"],
    registers: [this.registry],
  });
  readonly mirrored = new Counter({
    name: "nodemesh_mirrored_requests_total",
    help: "Requests copied to a mirror backend that answered",
    labelNames: ["destination_service"],
    registers: [this.registry],
  });
  readonly mirrorDropped = new Counter({
    name: "nodemesh_mirror_dropped_total",
    help: "Mirror copies decided on but not delivered, by reason",
    labelNames: ["destination_service", "reason"],
    registers: [this.registry],
  });
  readonly malformed = new Counter({
    name: "nodemesh_malformed_requests_total",
    help: "Client requests refused before reaching any app, by reason",
    labelNames: ["direction", "reason"],
    registers: [this.registry],
  });
  readonly spansExported = new Counter({
    name: "nodemesh_agent_spans_exported_total",
    help: "Trace spans the OTLP collector accepted",
    registers: [this.registry],
  });
  readonly spansDropped = new Counter({
    name: "nodemesh_agent_spans_dropped_total",
    help: "Trace spans dropped instead of exported, by reason: queue_full, export_failed, export_timeout, rejected (by the collector), encode_failed, shutdown",
    labelNames: ["reason"],
    registers: [this.registry],
  });
}
