// Sums the data-plane workers' connection counters (their prom-client registries as JSON) into
// the totals an agent reports to the controller. Pure; runs at report time, off the data path.

import type { TrafficCounters } from "../../api/agent-service.ts";

interface MetricJson {
  name: string;
  values: { value: number }[];
}

const COUNTERS: Record<keyof TrafficCounters, string> = {
  connectionsOpened: "nodemesh_tcp_connections_opened_total",
  connectionsClosed: "nodemesh_tcp_connections_closed_total",
  bytesReceived: "nodemesh_tcp_received_bytes_total",
  bytesSent: "nodemesh_tcp_sent_bytes_total",
};

export function trafficTotals(perWorker: readonly unknown[]): TrafficCounters {
  const sums = new Map<string, number>();
  for (const metrics of perWorker as MetricJson[][]) {
    for (const metric of metrics) {
      const total = metric.values.reduce((sum, v) => sum + v.value, 0);
      sums.set(metric.name, (sums.get(metric.name) ?? 0) + total);
    }
  }
  const field = (name: string) => sums.get(name) ?? 0;
  return {
    connectionsOpened: field(COUNTERS.connectionsOpened),
    connectionsClosed: field(COUNTERS.connectionsClosed),
    bytesReceived: field(COUNTERS.bytesReceived),
    bytesSent: field(COUNTERS.bytesSent),
  };
}
