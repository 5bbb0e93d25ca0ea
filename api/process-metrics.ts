// Process metrics for the agent's and the controller's /metrics: prom-client's defaults (CPU,
// memory, event-loop lag, GC, handles) under our prefix, minus the three gauges prom-client names
// `*_total` (a counter suffix; `promtool check metrics` rejects them). Their per-type
// breakdowns (`nodejs_active_handles` etc.) carry the same numbers.

import { collectDefaultMetrics, type Registry } from "./prom.ts";

const MISNAMED_GAUGES = [
  "nodejs_active_handles_total",
  "nodejs_active_requests_total",
  "nodejs_active_resources_total",
];

export function collectProcessMetrics(registry: Registry, prefix: string): void {
  collectDefaultMetrics({ register: registry, prefix });
  for (const name of MISNAMED_GAUGES) registry.removeSingleMetric(`${prefix}${name}`);
}
