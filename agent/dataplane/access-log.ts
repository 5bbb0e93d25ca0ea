// Access logs: one JSON line per request or TCP connection, written by pino through an
// asynchronous buffered destination (SonicBoom, straight to the file descriptor from the worker
// thread), so writing never waits on the disk or the main thread and adds nothing to a request's
// latency: the line is formatted after the response has gone.
//
// Which traffic is logged: `--access-log all` (everything), `--access-log NS1,NS2` (traffic whose
// source or destination namespace is listed), else nothing; a TrafficPolicy's `accessLog` turns it
// on for its Service, with its sampling share.

import pino, { type Logger } from "pino";
import type { Peers } from "./metrics.ts";
import type { CompiledPolicy } from "./policy.ts";

const FLUSH_INTERVAL_MS = 1000;

export interface AccessLogOptions {
  /** "all", "none", or namespaces separated by commas. */
  scope: string;
  /** File to append to; default stdout. */
  file?: string;
}

/** The fields of one line (docs/traffic.md lists them). */
export interface AccessEntry {
  type: "http" | "grpc" | "tcp";
  reporter: "source" | "destination";
  sourceWorkload: string;
  sourceNamespace: string;
  sourceIp?: string;
  destinationService: string;
  destinationWorkload: string;
  destinationNamespace: string;
  route?: string;
  upstream?: string;
  method?: string;
  path?: string;
  status?: number;
  grpcStatus?: string;
  durationMs: number;
  bytesReceived: number;
  bytesSent: number;
  retries?: number;
  requestId?: string;
  traceId?: string;
  error?: string;
  /** The AuthorizationPolicy that denied (or, AUDIT, matched) the request or connection. */
  authorizationPolicy?: string;
}

export class AccessLog {
  private readonly all: boolean;
  private readonly namespaces: ReadonlySet<string>;
  private logger: Logger | undefined;
  private readonly file: string | undefined;

  constructor(opts: AccessLogOptions) {
    this.all = opts.scope === "all";
    this.namespaces = new Set(
      opts.scope === "all" || opts.scope === "none" ? [] : opts.scope.split(",").map((s) => s.trim()),
    );
    this.file = opts.file;
  }

  /** Decides, per request, from the agent-wide scope and the Service's policy. */
  wants(policy: CompiledPolicy | undefined, sourceNamespace: string, destinationNamespace: string): boolean {
    const ratio = policy?.accessLogRatio;
    if (ratio !== undefined) return ratio >= 1 || Math.random() < ratio;
    return this.all || this.namespaces.has(sourceNamespace) || this.namespaces.has(destinationNamespace);
  }

  write(entry: AccessEntry): void {
    if (!this.logger) {
      this.logger = pino(
        { base: undefined, messageKey: "msg", timestamp: pino.stdTimeFunctions.isoTime },
        pino.destination({ dest: this.file ?? 1, sync: false, minLength: 4096, append: true, mkdir: true }),
      );
      // Lines are written in 4 KiB batches; a quiet agent still gets its lines out within a second.
      setInterval(() => this.logger?.flush(), FLUSH_INTERVAL_MS).unref();
    }
    this.logger.info(entry, "access");
  }

  /** Writes out what is buffered (on stop). */
  flush(): void {
    this.logger?.flush();
  }
}

/** The peer fields of a TCP connection's line. */
export function tcpEntryPeers(
  p: Peers,
): Pick<
  AccessEntry,
  | "type"
  | "reporter"
  | "sourceWorkload"
  | "sourceNamespace"
  | "destinationService"
  | "destinationWorkload"
  | "destinationNamespace"
> {
  return {
    type: "tcp",
    reporter: p.reporter,
    sourceWorkload: p.sourceWorkload,
    sourceNamespace: p.sourceNamespace,
    destinationService: p.destinationService,
    destinationWorkload: p.destinationWorkload,
    destinationNamespace: p.destinationNamespace,
  };
}

/** The trace id of a request: W3C traceparent, else B3. */
export function traceIdOf(traceparent: string | undefined, b3TraceId: string | undefined): string | undefined {
  if (traceparent) {
    const parts = traceparent.split("-");
    if (parts.length >= 4 && parts[1]!.length === 32) return parts[1];
  }
  return b3TraceId;
}
