// A data-plane worker's tracer: the sampling decision and the exporter its finished spans go to.
// Each worker queues, batches and encodes its own spans (the workers' counters are summed on
// /metrics like every other data-plane metric), so a collector sees up to one export stream per
// worker; the encoded batches are posted by the control thread (otlp-exporter.ts OtlpTransport).

import type { DataplaneMetrics } from "./metrics.ts";
import { EXPORTER_DEFAULTS, type FinishedSpan, OtlpExporter, type OtlpTransport } from "./otlp-exporter.ts";
import type { IncomingTrace } from "./trace-context.ts";

export interface TracingSettings {
  /** Share (0–100) of requests sampled where a trace starts, unless a TrafficPolicy says otherwise: --trace-sampling. */
  readonly samplingPercent: number;
  /** --otlp-endpoint. Without it the agent makes no spans: trace headers pass through untouched. */
  readonly otlpEndpoint?: string;
  /** The agent's node name: service.instance.id, k8s.node.name and nodemesh.node. */
  readonly node: string;
  /** The agent's version: service.version. */
  readonly version: string;
}

/** Istio's default sampling rate (meshConfig.defaultConfig.tracing.sampling). */
export const DEFAULT_SAMPLING_PERCENT = 1;

export class Tracer {
  readonly settings: TracingSettings;
  private readonly exporter: OtlpExporter | undefined;
  private readonly random: () => number;

  /** `transport`: how encoded batches leave (default: an HTTP client in this thread). */
  constructor(
    settings: TracingSettings,
    metrics: DataplaneMetrics,
    transport?: OtlpTransport,
    random: () => number = Math.random,
  ) {
    this.settings = settings;
    this.random = random;
    this.exporter = settings.otlpEndpoint
      ? new OtlpExporter(
          {
            ...EXPORTER_DEFAULTS,
            endpoint: settings.otlpEndpoint,
            resource: [
              ["service.name", "nodemesh-agent"],
              ["service.instance.id", settings.node],
              ["service.version", settings.version],
              ["k8s.node.name", settings.node],
            ],
            exported: metrics.spansExported,
            dropped: metrics.spansDropped,
            transport,
          },
          settings.version,
        )
      : undefined;
  }

  /** Spans are made only with somewhere to send them. */
  get enabled(): boolean {
    return this.exporter !== undefined;
  }

  /**
   * Whether a request is sampled. Decided once, where the trace starts: a caller's sampled flag is
   * honoured, else `percent` of requests are (the Service's TrafficPolicy rate, else the agent's).
   * A request from another agent (`fromPeerAgent`: through the tunnel) follows the flag that agent
   * sent; only when it sent none is the decision made here.
   */
  decide(incoming: IncomingTrace | undefined, fromPeerAgent: boolean, percent: number | undefined): boolean {
    if (incoming?.sampled === true) return true;
    if (fromPeerAgent && incoming?.sampled === false) return false;
    const p = percent ?? this.settings.samplingPercent;
    return p >= 100 || (p > 0 && this.random() * 100 < p);
  }

  export(span: FinishedSpan): void {
    this.exporter?.add(span);
  }

  /** Sends what is queued (one batch, within the export timeout); no spans are taken after. */
  async stop(): Promise<void> {
    await this.exporter?.stop();
  }
}
