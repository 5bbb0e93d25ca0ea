// The controller's OTLP/HTTP trace receiver (`--otlp-address`): `POST /v1/traces` with an
// ExportTraceServiceRequest in protobuf (application/x-protobuf) or OTLP JSON (application/json),
// gzip or not, answered as the OTLP spec says: 200 with an ExportTraceServiceResponse (its
// partialSuccess counts the spans not kept), or an error status with a google.rpc.Status body.
//
// Like the OTLP ports of Jaeger or the OpenTelemetry Collector it asks for no credentials (agents,
// or any exporter the user points at it, speak plain OTLP). What that leaves open is bounded:
// a body of at most 4 MiB (also after gzip), 10,000 spans a request, 10,000 spans a second
// (a bucket of 20,000; beyond it 429 with Retry-After, which exporters honour), each span trimmed
// (otlp-decode.ts), and the window's own bounds (trace-store.ts). Anyone who reaches the port can
// add traces to the dashboard's window, and nothing else: listen where only nodes reach it.

import type { IncomingMessage, Server, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { promisify } from "node:util";
import { gunzip } from "node:zlib";
import type { Logger } from "pino";
import protobuf from "protobufjs";
import { BodyTooLarge, JSON_TYPE, readBody } from "../../api/http-json.ts";
import { httpOrigin } from "../../api/http-origin.ts";
import { http } from "../../api/node-http.ts";
import { ExportTraceServiceResponse, OTLP_PROTOBUF, OTLP_TRACES_PATH } from "../../api/otlp.ts";
import type { TraceMetrics } from "../metrics.ts";
import { type Decoded, decodeJson, decodeProtobuf, OtlpDecodeError } from "./otlp-decode.ts";
import type { TraceWindow } from "./trace-store.ts";

/** The port OTLP/HTTP uses by convention. */
export const OTLP_HTTP_PORT = 4318;

export interface OtlpLimits {
  maxBodyBytes: number;
  maxSpansPerRequest: number;
  spansPerSecond: number;
  burstSpans: number;
}

export const DEFAULT_OTLP_LIMITS: OtlpLimits = {
  maxBodyBytes: 4 * 1024 * 1024,
  maxSpansPerRequest: 10_000,
  spansPerSecond: 10_000,
  burstSpans: 20_000,
};

export interface OtlpServerOptions {
  host: string;
  port: number;
  window: TraceWindow;
  metrics: TraceMetrics;
  limits?: Partial<OtlpLimits>;
  log?: Logger;
}

export interface OtlpServer {
  server: Server;
  port: number;
  /** e.g. http://10.0.0.1:4318/v1/traces */
  url: string;
  close(): Promise<void>;
}

// google.rpc.Status, the body of OTLP/HTTP's error responses (details left out).
const RpcStatus = new protobuf.Root()
  .define("google.rpc")
  .add(
    new protobuf.Type("Status")
      .add(new protobuf.Field("code", 1, "int32"))
      .add(new protobuf.Field("message", 2, "string")),
  )
  .lookupType("Status");

const gunzipAsync = promisify(gunzip);

/** gRPC codes carried in the error body, matching the HTTP status. */
const RPC_CODES: Record<number, number> = { 400: 3, 404: 5, 405: 12, 413: 8, 415: 3, 429: 8, 500: 13 };

class OtlpRefusal extends Error {
  readonly status: number;
  readonly headers: Record<string, string>;

  constructor(status: number, message: string, headers: Record<string, string> = {}) {
    super(message);
    this.status = status;
    this.headers = headers;
  }
}

export async function startOtlpServer(options: OtlpServerOptions): Promise<OtlpServer> {
  const limits = { ...DEFAULT_OTLP_LIMITS, ...options.limits };
  const bucket = new TokenBucket(limits.spansPerSecond, limits.burstSpans);
  const server = http.createServer((req, res) => void handle(req, res));
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const json = mediaType(req) === JSON_TYPE;
    try {
      const path = (req.url ?? "/").split("?")[0];
      if (path !== OTLP_TRACES_PATH) throw new OtlpRefusal(404, `only ${OTLP_TRACES_PATH} is served here`);
      if (req.method !== "POST") throw new OtlpRefusal(405, `only POST on ${OTLP_TRACES_PATH}`, { allow: "POST" });
      if (!json && mediaType(req) !== OTLP_PROTOBUF) {
        throw new OtlpRefusal(
          415,
          `content-type must be ${OTLP_PROTOBUF} or ${JSON_TYPE}, not ${mediaType(req) || "(none)"}`,
        );
      }
      const body = await readBounded(req, limits.maxBodyBytes);
      let decoded: Decoded;
      try {
        decoded = json ? decodeJson(body) : decodeProtobuf(body);
      } catch (err) {
        if (err instanceof OtlpDecodeError) throw new OtlpRefusal(400, err.message);
        throw err;
      }
      const spans = decoded.spans.slice(0, limits.maxSpansPerRequest);
      const overRequest = decoded.spans.length - spans.length;
      if (!bucket.take(spans.length)) {
        options.metrics.rejected("rate", decoded.spans.length + decoded.invalid);
        throw new OtlpRefusal(429, `over ${limits.spansPerSecond} spans a second`, { "retry-after": "1" });
      }
      const { accepted, traceFull } = options.window.add(spans);
      options.metrics.received(accepted);
      options.metrics.rejected("invalid", decoded.invalid);
      options.metrics.rejected("request_limit", overRequest);
      options.metrics.rejected("trace_full", traceFull);
      const rejected = decoded.invalid + overRequest + traceFull;
      const reasons = [
        decoded.invalid && `${decoded.invalid} malformed (ids or times)`,
        overRequest && `${overRequest} over ${limits.maxSpansPerRequest} spans a request`,
        traceFull && `${traceFull} over ${options.window.limits.maxSpansPerTrace} spans a trace`,
      ].filter(Boolean);
      const answer = rejected ? { partialSuccess: { rejectedSpans: rejected, errorMessage: reasons.join("; ") } } : {};
      send(
        res,
        200,
        json,
        json ? answer : ExportTraceServiceResponse.encode(ExportTraceServiceResponse.fromObject(answer)).finish(),
      );
      options.metrics.request(200);
    } catch (err) {
      const refusal = err instanceof OtlpRefusal ? err : new OtlpRefusal(500, "internal error");
      if (refusal.status === 500) options.log?.error({ err }, "OTLP request failed");
      if (refusal.status === 413) refusal.headers.connection = "close";
      const status = { code: RPC_CODES[refusal.status] ?? 2, message: refusal.message };
      send(
        res,
        refusal.status,
        json,
        json ? status : RpcStatus.encode(RpcStatus.fromObject(status)).finish(),
        refusal.headers,
      );
      options.metrics.request(refusal.status);
    }
  }

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  return {
    server,
    port,
    url: `${httpOrigin(options.host, port)}${OTLP_TRACES_PATH}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      }),
  };
}

function mediaType(req: IncomingMessage): string {
  return (req.headers["content-type"] ?? "").split(";")[0]!.trim().toLowerCase();
}

/** The body, gunzipped if it says so; `limit` holds before and after decompression. */
async function readBounded(req: IncomingMessage, limit: number): Promise<Buffer> {
  let body: Buffer;
  try {
    body = await readBody(req, limit);
  } catch (err) {
    if (err instanceof BodyTooLarge) throw new OtlpRefusal(413, err.message);
    throw err;
  }
  const encoding = (req.headers["content-encoding"] ?? "identity").toLowerCase();
  if (encoding === "identity") return body;
  if (encoding !== "gzip") throw new OtlpRefusal(415, `content-encoding must be gzip or identity, not ${encoding}`);
  try {
    return await gunzipAsync(body, { maxOutputLength: limit });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ERR_BUFFER_TOO_LARGE" || err instanceof RangeError) {
      throw new OtlpRefusal(413, `the body exceeds ${limit} bytes once decompressed`);
    }
    throw new OtlpRefusal(400, `the body is not valid gzip: ${(err as Error).message}`);
  }
}

function send(
  res: ServerResponse,
  status: number,
  json: boolean,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const bytes = json ? Buffer.from(`${JSON.stringify(body)}\n`) : Buffer.from(body as Uint8Array);
  res.writeHead(status, {
    ...headers,
    "content-type": json ? JSON_TYPE : OTLP_PROTOBUF,
    "content-length": bytes.length,
  });
  res.end(bytes);
}

/** Spans a second, with a burst; refills continuously. */
class TokenBucket {
  readonly #rate: number;
  readonly #burst: number;
  #tokens: number;
  #at = performance.now();

  constructor(rate: number, burst: number) {
    this.#rate = rate;
    this.#burst = burst;
    this.#tokens = burst;
  }

  take(n: number): boolean {
    const now = performance.now();
    this.#tokens = Math.min(this.#burst, this.#tokens + ((now - this.#at) / 1000) * this.#rate);
    this.#at = now;
    if (n > this.#tokens) return false;
    this.#tokens -= n;
    return true;
  }
}
