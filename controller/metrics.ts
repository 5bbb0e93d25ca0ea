// The controller's Prometheus registry. Every part of the controller registers its metrics in the
// one Registry that `/metrics` serves (prefix `nodemesh_controller_`).

import { Counter, Gauge, Histogram, Registry } from "prom-client";
import { collectProcessMetrics } from "../api/process-metrics.ts";
import { KINDS } from "../api/resources.ts";
import type { Store } from "./store/store.ts";

export const METRIC_PREFIX = "nodemesh_controller_";

/** A registry with the process metrics (CPU, memory, event loop lag) already in it. */
export function createControllerRegistry(): Registry {
  const registry = new Registry();
  collectProcessMetrics(registry, METRIC_PREFIX);
  return registry;
}

/** Metrics of the REST API; labels are bounded (verbs, plurals, status codes). */
export class RestMetrics {
  readonly #requests: Counter<"verb" | "resource" | "code">;
  readonly #duration: Histogram<"verb" | "resource">;
  readonly #watches: Gauge;
  readonly #watchesRefused: Counter<"reason">;
  readonly #watchesCutOff: Counter;

  constructor(registry: Registry) {
    this.#requests = new Counter({
      name: `${METRIC_PREFIX}rest_requests_total`,
      help: "REST requests by verb, resource and response code",
      labelNames: ["verb", "resource", "code"],
      registers: [registry],
    });
    this.#duration = new Histogram({
      name: `${METRIC_PREFIX}rest_request_duration_seconds`,
      help: "REST request latency (watches excluded)",
      labelNames: ["verb", "resource"],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    });
    this.#watches = new Gauge({
      name: `${METRIC_PREFIX}rest_watches`,
      help: "Open watch streams",
      registers: [registry],
    });
    this.#watchesRefused = new Counter({
      name: `${METRIC_PREFIX}rest_watches_refused_total`,
      help: "Watches refused with 429: too many open in all (total) or from one client address (per_client)",
      labelNames: ["reason"],
      registers: [registry],
    });
    this.#watchesCutOff = new Counter({
      name: `${METRIC_PREFIX}rest_watches_cut_off_total`,
      help: "Watch streams destroyed because their reader fell past the backlog limit",
      registers: [registry],
    });
  }

  watchRefused(reason: "total" | "per_client"): void {
    this.#watchesRefused.labels(reason).inc();
  }

  watchCutOff(): void {
    this.#watchesCutOff.inc();
  }

  request(verb: string, resource: string, code: number, seconds: number): void {
    this.#requests.inc({ verb, resource, code: String(code) });
    if (verb !== "watch") this.#duration.observe({ verb, resource }, seconds);
  }

  watchOpened(): void {
    this.#watches.inc();
  }

  watchClosed(): void {
    this.#watches.dec();
  }
}

/** Objects per kind and the store's resourceVersion, read from the store at scrape time. */
export function registerStoreMetrics(registry: Registry, store: Store): void {
  new Gauge({
    name: `${METRIC_PREFIX}store_objects`,
    help: "Objects in the store by kind",
    labelNames: ["kind"],
    registers: [registry],
    collect() {
      for (const kind of KINDS) this.set({ kind: kind.kind }, store.list(kind.plural).length);
    },
  });
  new Gauge({
    name: `${METRIC_PREFIX}store_resource_version`,
    help: "The store's current resourceVersion",
    registers: [registry],
    collect() {
      this.set(Number(store.resourceVersion()));
    },
  });
}

/** The OTLP receiver and the trace window (controller/traces/); labels are bounded (reasons, codes). */
export class TraceMetrics {
  readonly #requests: Counter<"code">;
  readonly #received: Counter;
  readonly #rejected: Counter<"reason">;
  readonly #evicted: Counter<"reason">;

  constructor(registry: Registry, window: { traceCount: number; spanCount: number }) {
    this.#requests = new Counter({
      name: `${METRIC_PREFIX}otlp_requests_total`,
      help: "OTLP/HTTP export requests received, by response code",
      labelNames: ["code"],
      registers: [registry],
    });
    this.#received = new Counter({
      name: `${METRIC_PREFIX}otlp_spans_received_total`,
      help: "Spans received over OTLP and kept in the trace window",
      registers: [registry],
    });
    this.#rejected = new Counter({
      name: `${METRIC_PREFIX}otlp_spans_rejected_total`,
      help: "Spans received over OTLP and not kept, by reason: invalid, request_limit, trace_full, rate",
      labelNames: ["reason"],
      registers: [registry],
    });
    this.#evicted = new Counter({
      name: `${METRIC_PREFIX}traces_evicted_total`,
      help: "Traces forgotten by the trace window, by reason: age, traces (count bound), spans (span bound)",
      labelNames: ["reason"],
      registers: [registry],
    });
    new Gauge({
      name: `${METRIC_PREFIX}traces`,
      help: "Traces in the trace window",
      registers: [registry],
      collect() {
        this.set(window.traceCount);
      },
    });
    new Gauge({
      name: `${METRIC_PREFIX}trace_spans`,
      help: "Spans in the trace window",
      registers: [registry],
      collect() {
        this.set(window.spanCount);
      },
    });
  }

  request(code: number): void {
    this.#requests.inc({ code: String(code) });
  }

  received(spans: number): void {
    if (spans) this.#received.inc(spans);
  }

  rejected(reason: "invalid" | "request_limit" | "trace_full" | "rate", spans: number): void {
    if (spans) this.#rejected.inc({ reason }, spans);
  }

  evicted(reason: string, traces: number): void {
    this.#evicted.inc({ reason }, traces);
  }
}
