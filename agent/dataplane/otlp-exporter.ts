// Finished spans to an OTLP/HTTP collector (protobuf, `POST {endpoint}/v1/traces`), off the request
// path: requests only push onto a bounded queue; a timer (or a full batch) sends one batch at a
// time with a short timeout. A slow or absent collector costs dropped spans, counted, never a
// wait for traffic: when the queue is full new spans are dropped, and a batch that fails is not
// sent again (a retry would hold memory the queue's bound is there to cap).

import https from "node:https";
import type { Counter } from "prom-client";
import { http } from "../../api/node-http.ts";

// The protos (api/otlp.ts) are loaded only once an exporter exists: loading protobufjs and the
// schema costs a worker about 100 ms, which an agent without --otlp-endpoint never pays.
type Otlp = typeof import("../../api/otlp.ts");
let otlp: Promise<Otlp> | undefined;
const loadOtlp = () => {
  otlp ??= import("../../api/otlp.ts");
  return otlp;
};
/** api/otlp.ts's OTLP_TRACES_PATH and OTLP_PROTOBUF, known before it is loaded (a unit test checks they agree). */
export const TRACES_PATH = "/v1/traces";
export const PROTOBUF = "application/x-protobuf";

export type AttributeValue = string | number | boolean;
/** Attributes as [key, value] pairs; a whole number is an int, any other number a double. */
export type Attributes = [string, AttributeValue][];

export const SPAN_KIND_SERVER = 2;
export const SPAN_KIND_CLIENT = 3;
export const STATUS_UNSET = 0;
export const STATUS_ERROR = 2;

export interface SpanEvent {
  readonly name: string;
  /** Epoch milliseconds (fractional). */
  readonly timeMs: number;
  readonly attributes: Attributes;
}

/** One finished span, as the request path hands it over (OTLP's Span without its encoding). */
export interface FinishedSpan {
  readonly traceId: string;
  readonly spanId: string;
  readonly parentSpanId?: string;
  readonly traceState?: string;
  readonly name: string;
  readonly kind: typeof SPAN_KIND_SERVER | typeof SPAN_KIND_CLIENT;
  /** Epoch milliseconds (fractional: performance.timeOrigin + performance.now()). */
  readonly startMs: number;
  readonly endMs: number;
  readonly attributes: Attributes;
  readonly events: readonly SpanEvent[];
  readonly status: typeof STATUS_UNSET | typeof STATUS_ERROR;
}

export interface ExporterOptions {
  /** The collector's base URL; `/v1/traces` is appended when it has no path (OTLP exporter spec). */
  readonly endpoint: string;
  readonly resource: Attributes;
  /** Spans held at most; more are dropped (reason queue_full). */
  readonly maxQueue: number;
  /** Spans per request; a full batch is sent without waiting for the timer. */
  readonly maxBatch: number;
  readonly intervalMs: number;
  /** A request not answered in this time is abandoned and its spans dropped (export_timeout). */
  readonly timeoutMs: number;
  readonly exported: Counter<never>;
  readonly dropped: Counter<"reason">;
  /** How an encoded batch reaches the collector (default: an HTTP client in this thread, httpTransport). */
  readonly transport?: OtlpTransport;
}

/** The collector's answer to one export: its status and (up to 64 kB of) its body. */
export interface OtlpAnswer {
  readonly status: number;
  readonly body: Uint8Array;
}

/**
 * Posts an encoded batch; resolves with the collector's answer, or rejects with the reason the
 * batch is dropped as (`export_failed`, `export_timeout`). A data-plane worker's is a request to
 * the control thread (agent/control/workers.ts), which posts it: an HTTP client running in the
 * worker made Node's stream and HTTP functions, which every proxied request runs too, lose their
 * compiled fast paths (docs/benchmarks.md, twenty-eighth session).
 */
export type OtlpTransport = (body: Uint8Array) => Promise<OtlpAnswer>;

/** How much longer than its timeout an exporter waits for its transport's own answer. */
const TRANSPORT_ANSWER_MARGIN_MS = 250;

/**
 * Every 5 s, as the OpenTelemetry SDK's batch processor (OTEL_BSP_SCHEDULE_DELAY): each export is a
 * batch from every worker, a cost per interval whatever the spans. (At 1 s, 1 % sampling once
 * measured 16–26 % more agent CPU per request than tracing off. The cost was the HTTP client the
 * workers then posted with, not the spans: see OtlpTransport.)
 */
export const EXPORTER_DEFAULTS = { maxQueue: 2048, maxBatch: 512, intervalMs: 5000, timeoutMs: 2000 } as const;

/** The URL spans are posted to: the endpoint itself when it names a path, else `{endpoint}/v1/traces`. */
export function tracesUrl(endpoint: string): URL {
  const url = new URL(endpoint);
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new Error(`the OTLP endpoint must be an http:// or https:// URL, got "${endpoint}"`);
  }
  if (url.pathname === "/" || url.pathname === "") url.pathname = TRACES_PATH;
  return url;
}

/** A fixed64 as protobufjs writes it from its two 32-bit halves (its LongBits). */
export interface Uint64Bits {
  readonly low: number;
  readonly high: number;
}

const TWO_32 = 2 ** 32;

/**
 * Epoch milliseconds (fractional) as OTLP's fixed64 nanoseconds. Nanoseconds since 1970 pass
 * 2^53, so they are built from 32-bit halves, every step exact in a double: handing protobufjs
 * the halves encodes a span five times faster than a decimal string or a Long would.
 */
export function unixNanos(ms: number): Uint64Bits {
  const whole = Math.floor(ms);
  const fraction = Math.round((ms - whole) * 1e6);
  const wholeHigh = Math.floor(whole / TWO_32);
  const lowPart = (whole - wholeHigh * TWO_32) * 1e6 + fraction; // < 2^53
  const carry = Math.floor(lowPart / TWO_32);
  return { low: (lowPart - carry * TWO_32) | 0, high: (wholeHigh * 1e6 + carry) | 0 };
}

function anyValue(v: AttributeValue): Record<string, unknown> {
  if (typeof v === "string") return { stringValue: v };
  if (typeof v === "boolean") return { boolValue: v };
  return Number.isInteger(v) ? { intValue: v } : { doubleValue: v };
}

function keyValues(attributes: Attributes): Record<string, unknown>[] {
  return attributes.map(([key, value]) => ({ key, value: anyValue(value) }));
}

/** The protobuf body of one export: every span under the agent's resource and nodemesh's scope. */
export async function encodeSpans(
  resource: Attributes,
  spans: readonly FinishedSpan[],
  scopeVersion: string,
): Promise<Uint8Array> {
  const { ExportTraceServiceRequest } = await loadOtlp();
  // encode() of the message's plain shape, without fromObject's conversions (three times the cost):
  // every value below already has the type its field wants (a unit test decodes it back).
  const message = {
    resourceSpans: [
      {
        resource: { attributes: keyValues(resource) },
        scopeSpans: [
          {
            scope: { name: "nodemesh-agent", version: scopeVersion },
            spans: spans.map((s) => ({
              traceId: Buffer.from(s.traceId, "hex"),
              spanId: Buffer.from(s.spanId, "hex"),
              parentSpanId: s.parentSpanId ? Buffer.from(s.parentSpanId, "hex") : undefined,
              traceState: s.traceState,
              // W3C flags: these spans are all sampled (bit 0); bits 8–9 say whether the parent is remote.
              flags: 0x1 | 0x100 | (s.kind === SPAN_KIND_SERVER && s.parentSpanId ? 0x200 : 0),
              name: s.name,
              kind: s.kind,
              startTimeUnixNano: unixNanos(s.startMs),
              endTimeUnixNano: unixNanos(s.endMs),
              attributes: keyValues(s.attributes),
              events: s.events.map((e) => ({
                timeUnixNano: unixNanos(e.timeMs),
                name: e.name,
                attributes: keyValues(e.attributes),
              })),
              status: { code: s.status },
            })),
          },
        ],
      },
    ],
  };
  return ExportTraceServiceRequest.encode(message).finish();
}

export class OtlpExporter {
  private queue: FinishedSpan[] = [];
  /** The batch being sent: one at a time. */
  private inFlight: Promise<void> | undefined;
  private readonly transport: OtlpTransport;
  private readonly closeTransport: () => void;
  private readonly timer: NodeJS.Timeout;
  private readonly opts: ExporterOptions;
  private readonly scopeVersion: string;
  private stopped = false;

  constructor(opts: ExporterOptions, scopeVersion: string) {
    this.opts = opts;
    this.scopeVersion = scopeVersion;
    // Now, while the agent starts, rather than during the first export (a failure is counted then).
    loadOtlp().catch(() => {});
    if (opts.transport) {
      this.transport = opts.transport;
      this.closeTransport = () => {};
    } else {
      const own = httpTransport(tracesUrl(opts.endpoint), opts.timeoutMs);
      this.transport = own.send;
      this.closeTransport = own.close;
    }
    this.timer = setInterval(() => this.flush(), opts.intervalMs);
    this.timer.unref();
  }

  /** Takes a finished span; never blocks: a full queue drops it. */
  add(span: FinishedSpan): void {
    if (this.stopped || this.queue.length >= this.opts.maxQueue) {
      this.opts.dropped.labels("queue_full").inc();
      return;
    }
    this.queue.push(span);
    if (this.queue.length >= this.opts.maxBatch && !this.inFlight) this.flush();
  }

  get queued(): number {
    return this.queue.length;
  }

  /** Sends the next batch, unless one is under way; resolves when the batch under way or sent is settled. */
  flush(): Promise<void> {
    if (this.inFlight) return this.inFlight;
    if (this.queue.length === 0) return Promise.resolve();
    const batch = this.queue.length <= this.opts.maxBatch ? this.queue : this.queue.slice(0, this.opts.maxBatch);
    this.queue = batch === this.queue ? [] : this.queue.slice(batch.length);
    this.inFlight = this.post(batch).finally(() => {
      this.inFlight = undefined;
    });
    return this.inFlight;
  }

  /** Stops the timer and sends what is queued, one batch, within the export timeout. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.stopped = true;
    await this.inFlight;
    await this.flush();
    const left = this.queue.length;
    if (left > 0) this.opts.dropped.labels("shutdown").inc(left);
    this.queue = [];
    this.closeTransport();
  }

  private async post(batch: FinishedSpan[]): Promise<void> {
    const { exported, dropped, resource, timeoutMs } = this.opts;
    let body: Uint8Array;
    let codec: Otlp;
    try {
      codec = await loadOtlp();
      body = await encodeSpans(resource, batch, this.scopeVersion);
    } catch {
      dropped.labels("encode_failed").inc(batch.length);
      return;
    }
    let timer: NodeJS.Timeout | undefined;
    // The transport gives up at timeoutMs; this covers a control thread that never answers, a little
    // later, so that an answer on time is not counted as a timeout.
    const timedOut = new Promise<"export_timeout">((resolve) => {
      timer = setTimeout(() => resolve("export_timeout"), timeoutMs + TRANSPORT_ANSWER_MARGIN_MS);
    });
    const answer = await Promise.race([
      this.transport(body).catch((err: Error) => (err.message === "export_timeout" ? err.message : "export_failed")),
      timedOut,
    ]);
    clearTimeout(timer);
    if (typeof answer === "string") {
      dropped.labels(answer).inc(batch.length);
      return;
    }
    if (answer.status < 200 || answer.status >= 300) {
      dropped.labels("export_failed").inc(batch.length);
      return;
    }
    const rejected = rejectedSpans(codec, Buffer.from(answer.body), batch.length);
    if (rejected > 0) dropped.labels("rejected").inc(rejected);
    exported.inc(batch.length - rejected);
  }
}

/**
 * One HTTP client for a collector, one connection kept alive (one batch is in flight at a time):
 * what the control thread posts every worker's batches with (and an exporter outside the agent).
 */
export function httpTransport(url: URL, timeoutMs: number): { send: OtlpTransport; close: () => void } {
  const transport = url.protocol === "https:" ? https : http;
  const agent = new transport.Agent({ keepAlive: true, maxSockets: 1 });
  const send: OtlpTransport = (body) =>
    new Promise((resolve, reject) => {
      const req = transport.request(url, {
        method: "POST",
        agent,
        headers: { "content-type": PROTOBUF, "content-length": body.byteLength },
      });
      const timer = setTimeout(() => {
        reject(new Error("export_timeout"));
        req.destroy();
      }, timeoutMs);
      const fail = () => {
        clearTimeout(timer);
        reject(new Error("export_failed"));
      };
      req.on("error", fail);
      req.on("response", (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on("data", (c: Buffer) => {
          size += c.length;
          if (size <= 65_536) chunks.push(c);
        });
        res.on("error", fail);
        res.on("end", () => {
          clearTimeout(timer);
          resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) });
        });
      });
      req.end(body);
    });
  return { send, close: () => agent.destroy() };
}

/** partial_success.rejected_spans of a protobuf answer (0 when empty or not protobuf). */
function rejectedSpans({ ExportTraceServiceResponse }: Otlp, body: Buffer, sent: number): number {
  if (body.length === 0) return 0;
  try {
    const answer = ExportTraceServiceResponse.toObject(ExportTraceServiceResponse.decode(body), { longs: Number }) as {
      partialSuccess?: { rejectedSpans?: number };
    };
    return Math.min(sent, Math.max(0, answer.partialSuccess?.rejectedSpans ?? 0));
  } catch {
    return 0;
  }
}
