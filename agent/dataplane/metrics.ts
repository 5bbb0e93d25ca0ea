// Data-plane metrics (docs/metrics.md), one registry per worker thread; the admin endpoint merges
// the workers' registries at scrape time (off the data path). Label children are bound once per
// label set and reused, so a request or connection costs a Map lookup and a few increments.

import { Counter, Histogram, Registry } from "prom-client";

export type Direction = "outbound" | "inbound";

/** Who is talking to whom: the label values of a request or a connection (docs/metrics.md). */
export interface Peers {
  readonly reporter: "source" | "destination";
  readonly sourceWorkload: string;
  readonly sourceNamespace: string;
  readonly destinationService: string;
  readonly destinationWorkload: string;
  readonly destinationNamespace: string;
}

export const UNKNOWN = "unknown";

export interface ConnectionMetrics {
  opened: Counter.Internal;
  closed: Counter.Internal;
  bytesFromDownstream: Counter.Internal;
  bytesFromUpstream: Counter.Internal;
}

type HistogramChild = Histogram.Internal<string>;

interface RequestMetrics {
  duration: HistogramChild;
  requestSize: HistogramChild;
  responseSize: HistogramChild;
}

const PEER_LABELS = [
  "reporter",
  "source_workload",
  "source_namespace",
  "destination_service",
  "destination_workload",
  "destination_namespace",
] as const;

function peerValues(p: Peers): string[] {
  return [
    p.reporter,
    p.sourceWorkload,
    p.sourceNamespace,
    p.destinationService,
    p.destinationWorkload,
    p.destinationNamespace,
  ];
}

/** Sub-millisecond to 10 s. */
const DURATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const SIZE_BUCKETS = [100, 1000, 10_000, 100_000, 1_000_000, 10_000_000];

export class DataplaneMetrics {
  readonly registry = new Registry();
  private readonly boundConnections = new Map<string, ConnectionMetrics>();
  private readonly boundRequests = new Map<string, RequestMetrics>();
  private readonly boundCounts = new Map<string, Counter.Internal>();

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
  readonly refused = new Counter({
    name: "nodemesh_tcp_connections_refused_total",
    help: "Accepted connections the agent closed without forwarding, by reason",
    labelNames: ["direction", "reason"],
    registers: [this.registry],
  });

  private readonly requests = new Counter({
    name: "nodemesh_requests_total",
    help: "HTTP and gRPC requests answered",
    labelNames: [...PEER_LABELS, "response_code", "grpc_status"],
    registers: [this.registry],
  });
  private readonly duration = new Histogram({
    name: "nodemesh_request_duration_seconds",
    help: "From the request head to the end of the response",
    labelNames: [...PEER_LABELS, "response_code"],
    buckets: DURATION_BUCKETS,
    registers: [this.registry],
  });
  private readonly requestSize = new Histogram({
    name: "nodemesh_request_size_bytes",
    help: "Request body bytes",
    labelNames: [...PEER_LABELS, "response_code"],
    buckets: SIZE_BUCKETS,
    registers: [this.registry],
  });
  private readonly responseSize = new Histogram({
    name: "nodemesh_response_size_bytes",
    help: "Response body bytes",
    labelNames: [...PEER_LABELS, "response_code"],
    buckets: SIZE_BUCKETS,
    registers: [this.registry],
  });

  /** Label children are bound once per label set and reused: a request costs a Map lookup. */
  forConnection(peers: Peers): ConnectionMetrics {
    const values = peerValues(peers);
    const key = values.join("|");
    let m = this.boundConnections.get(key);
    if (!m) {
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
    const values = peerValues(peers);
    const code = String(status);
    const key = `${values.join("|")}|${code}`;
    let m = this.boundRequests.get(key);
    if (!m) {
      m = {
        duration: this.duration.labels(...values, code),
        requestSize: this.requestSize.labels(...values, code),
        responseSize: this.responseSize.labels(...values, code),
      };
      this.boundRequests.set(key, m);
    }
    const countKey = `${key}|${grpcStatus}`;
    let count = this.boundCounts.get(countKey);
    if (!count) {
      count = this.requests.labels(...values, code, grpcStatus);
      this.boundCounts.set(countKey, count);
    }
    count.inc();
    m.duration.observe(seconds);
    m.requestSize.observe(requestBytes);
    m.responseSize.observe(responseBytes);
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
  readonly faults = new Counter({
    name: "nodemesh_injected_faults_total",
    help: "Faults injected, by type (delay, abort)",
    labelNames: ["destination_service", "type"],
    registers: [this.registry],
  });
  readonly mirrored = new Counter({
    name: "nodemesh_mirrored_requests_total",
    help: "Requests copied to a mirror backend",
    labelNames: ["destination_service"],
    registers: [this.registry],
  });
  readonly malformed = new Counter({
    name: "nodemesh_malformed_requests_total",
    help: "Client requests refused before reaching any app, by reason",
    labelNames: ["direction", "reason"],
    registers: [this.registry],
  });
}
