// The data plane's settings: parsed once by the CLI (agent/cli.ts) and carried whole, as this one
// type, through the control thread to every worker (agent/dataplane/messages.ts).

import type { AccessLogOptions } from "./access-log.ts";
import type { FloodLimits } from "./limits.ts";
import type { TracingSettings } from "./tracing.ts";

export interface DataplaneSettings {
  /** Budget for one upstream attempt: TCP connect plus, through the tunnel, its handshake. */
  readonly connectTimeoutMs: number;
  /** How long an undeclared port waits for the client's first bytes before it is opaque TCP. */
  readonly detectTimeoutMs: number;
  /** Time a client has to send a complete HTTP request head (slowloris). */
  readonly headersTimeoutMs: number;
  /** Which traffic gets access-log lines, and where they go. */
  readonly accessLog: AccessLogOptions;
  /** Per-request metrics and service-graph samples; off only to measure what they cost. */
  readonly requestMetrics: boolean;
  /**
   * The mesh's tunnel key (hex): tunnel handshakes are signed with it and unsigned ones refused.
   * Undefined: handshakes are neither signed nor checked (tunnel.ts).
   */
  readonly tunnelKey?: string;
  /**
   * How long a stopping agent lets its connections finish after it stopped accepting (HTTP ends
   * them between requests at once; opaque TCP streams are cut at the end): --drain-timeout-s.
   */
  readonly drainMs: number;
  /** Per pod and per connection bounds against floods (--max-connections-per-pod, --http2-max-streams). */
  readonly limits: FloodLimits;
  /** Spans and where they go (--otlp-endpoint, --trace-sampling). */
  readonly tracing: TracingSettings;
}
