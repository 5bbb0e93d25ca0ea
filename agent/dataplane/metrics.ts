// Data-plane metrics, one registry per worker thread; the admin endpoint merges the workers'
// registries at scrape time (off the data path). Label children are bound once per
// (direction, service) and reused, so a connection costs a Map lookup and a few increments.

import { Counter, Registry } from "prom-client";

export type Direction = "outbound" | "inbound";

export interface ConnectionMetrics {
  opened: Counter.Internal;
  closed: Counter.Internal;
  bytesFromDownstream: Counter.Internal;
  bytesFromUpstream: Counter.Internal;
}

export class DataplaneMetrics {
  readonly registry = new Registry();
  private readonly bound = new Map<string, ConnectionMetrics>();

  private readonly opened = new Counter({
    name: "nodemesh_tcp_connections_opened_total",
    help: "TCP connections accepted by the agent and forwarded, by direction and destination service",
    labelNames: ["direction", "destination_service"],
    registers: [this.registry],
  });
  private readonly closed = new Counter({
    name: "nodemesh_tcp_connections_closed_total",
    help: "Forwarded TCP connections that have closed",
    labelNames: ["direction", "destination_service"],
    registers: [this.registry],
  });
  private readonly received = new Counter({
    name: "nodemesh_tcp_received_bytes_total",
    help: "Bytes received from the connecting side (the request direction)",
    labelNames: ["direction", "destination_service"],
    registers: [this.registry],
  });
  private readonly sent = new Counter({
    name: "nodemesh_tcp_sent_bytes_total",
    help: "Bytes sent back to the connecting side (the response direction)",
    labelNames: ["direction", "destination_service"],
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

  // ---- L7 (issue 5 extends these with workload labels and histograms)
  readonly requests = new Counter({
    name: "nodemesh_requests_total",
    help: "HTTP and gRPC requests answered, by direction, destination service and response code",
    labelNames: ["direction", "destination_service", "response_code"],
    registers: [this.registry],
  });
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

  forConnection(direction: Direction, service: string): ConnectionMetrics {
    const key = `${direction}|${service}`;
    let m = this.bound.get(key);
    if (!m) {
      m = {
        opened: this.opened.labels(direction, service),
        closed: this.closed.labels(direction, service),
        bytesFromDownstream: this.received.labels(direction, service),
        bytesFromUpstream: this.sent.labels(direction, service),
      };
      this.bound.set(key, m);
    }
    return m;
  }
}
