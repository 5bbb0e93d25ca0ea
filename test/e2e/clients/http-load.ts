// An HTTP load client for the end-to-end tests, run inside a pod's network namespace so that its
// connections go through the pod's interception rules:
//
//   world.exec(client, process.execPath, [HTTP_LOAD, JSON.stringify({ url: "http://10.96.0.10/", requests: 100 })])
//
// Closed loop (default): `concurrency` workers, each sends its next request when the previous one
// answered. Open loop (`rate`): request i is sent at start + i / rate whatever the answers, so a
// slow or refusing server cannot slow the offered load down. Prints one JSON line (LoadReport).

import http2 from "node:http2";
import { performance } from "node:perf_hooks";
import { buildConnector, Pool } from "undici";

export interface LoadArgs {
  url: string;
  /** Number of requests. */
  requests: number;
  /** Requests in flight at once (closed loop). Default 1. */
  concurrency?: number;
  /** Requests per second, open loop; `concurrency` is then ignored. */
  rate?: number;
  method?: string;
  headers?: Record<string, string>;
  body?: string;
  /** Per request, headers and body. Default 10 000. */
  timeoutMs?: number;
  /**
   * "h1" (default); "h2": cleartext HTTP/2 with prior knowledge (undici's useH2c); "h2-node": the
   * same with node:http2, which honours GOAWAY (later requests go on a new connection; undici 7
   * fails one request per GOAWAY).
   */
  protocol?: "h1" | "h2" | "h2-node";
  /** Include `results`, one entry per request in sending order. */
  details?: boolean;
}

export interface RequestResult {
  /** HTTP status, or 0 for a connection error. */
  status: number;
  /** Milliseconds from sending to the end of the body (or to the error). */
  ms: number;
  /** From the JSON body, when it has one. */
  pod?: string;
  version?: string;
  protocol?: string;
  /** The x-nodemesh-error header. */
  nmError?: string;
  retryAfter?: string;
  /** The start of a body that is not the workload's JSON (an agent's error text). */
  text?: string;
  /** Connection error message. */
  error?: string;
  /** Milliseconds from the run's start to the send. */
  sentAt: number;
}

export interface LoadReport {
  requests: number;
  /** Wall-clock time (epoch ms) of the run's start, which `sentAt` counts from. */
  startedAt: number;
  durationMs: number;
  statuses: Record<string, number>;
  versions: Record<string, number>;
  pods: Record<string, number>;
  /** x-nodemesh-error header values. */
  nmErrors: Record<string, number>;
  /** Responses carrying a retry-after header, by status. */
  retryAfter: Record<string, number>;
  /** Protocol the workload saw ("http/1.1", "h2"), from the JSON body. */
  protocols: Record<string, number>;
  /** Connection errors, by message. */
  errors: Record<string, number>;
  latency: { min: number; p50: number; p90: number; p99: number; max: number; mean: number };
  /** Every request's latency in ms, in sending order. */
  latencies: number[];
  results?: RequestResult[];
}

function bump(map: Record<string, number>, key: string | undefined): void {
  if (key === undefined) return;
  map[key] = (map[key] ?? 0) + 1;
}

function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

const round = (ms: number) => Math.round(ms * 100) / 100;

interface Answer {
  statusCode: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
}

/**
 * An HTTP/2 client as browsers, Go or grpc-js behave: on GOAWAY the streams in flight finish on
 * the old connection and later requests open a new one; a request the server refused unprocessed
 * (REFUSED_STREAM, RFC 9113 §8.7) is sent again once, on a new connection.
 */
class Unprocessed extends Error {
  constructor() {
    super("refused unprocessed (REFUSED_STREAM)");
  }
}

class GoawayAwareH2 {
  private session: http2.ClientHttp2Session | undefined;
  private readonly origin: string;
  private readonly timeoutMs: number;

  constructor(origin: string, timeoutMs: number) {
    this.origin = origin;
    this.timeoutMs = timeoutMs;
  }

  private current(): http2.ClientHttp2Session {
    if (!this.session) {
      const session = http2.connect(this.origin);
      const forget = () => {
        if (this.session === session) this.session = undefined;
      };
      session.on("error", forget);
      session.on("goaway", forget);
      session.on("close", forget);
      this.session = session;
    }
    return this.session;
  }

  async request(path: string, method: string, headers: Record<string, string> = {}, body?: string): Promise<Answer> {
    try {
      return await this.once(path, method, headers, body);
    } catch (err) {
      if (!(err instanceof Unprocessed)) throw err;
      return this.once(path, method, headers, body);
    }
  }

  private once(path: string, method: string, headers: Record<string, string>, body?: string): Promise<Answer> {
    return new Promise((resolve, reject) => {
      const req = this.current().request({ ":method": method, ":path": path, ...headers });
      const chunks: Buffer[] = [];
      let answer: Omit<Answer, "text"> | undefined;
      req.setTimeout(this.timeoutMs, () => req.close(http2.constants.NGHTTP2_CANCEL));
      req.on("response", (h) => {
        answer = { statusCode: Number(h[":status"]), headers: h };
      });
      req.on("data", (chunk: Buffer) => chunks.push(chunk));
      req.on("end", () =>
        answer ? resolve({ ...answer, text: Buffer.concat(chunks).toString() }) : reject(new Error("no response")),
      );
      req.on("error", (err) =>
        reject(req.rstCode === http2.constants.NGHTTP2_REFUSED_STREAM ? new Unprocessed() : err),
      );
      req.on("close", () => {
        if (answer) return;
        reject(
          req.rstCode === http2.constants.NGHTTP2_REFUSED_STREAM
            ? new Unprocessed()
            : new Error(`stream closed (code ${req.rstCode})`),
        );
      });
      req.end(body);
    });
  }

  close(): void {
    this.session?.close();
  }
}

export async function runLoad(args: LoadArgs): Promise<LoadReport> {
  const url = new URL(args.url);
  const concurrency = Math.max(1, args.concurrency ?? 1);
  const timeoutMs = args.timeoutMs ?? 10_000;
  const h2 = args.protocol === "h2";
  const nodeH2 = args.protocol === "h2-node" ? new GoawayAwareH2(url.origin, timeoutMs) : undefined;
  // Open loop: as many connections as requests may be outstanding; closed loop: one per worker.
  // A Pool drops `useH2c` (not in the typings) when it builds its connector: h2 gets its own.
  const pool = new Pool(url.origin, {
    connections: args.rate ? null : concurrency,
    pipelining: 1,
    headersTimeout: timeoutMs,
    bodyTimeout: timeoutMs,
    ...(h2
      ? {
          allowH2: true,
          connect: buildConnector({ allowH2: true, useH2c: true, timeout: timeoutMs } as buildConnector.BuildOptions),
        }
      : { connect: { timeout: timeoutMs } }),
  });
  const path = `${url.pathname}${url.search}`;
  const results: RequestResult[] = new Array(args.requests);
  const startedAt = Date.now();
  const start = performance.now();

  const one = async (i: number): Promise<void> => {
    const sent = performance.now();
    const result: RequestResult = { status: 0, ms: 0, sentAt: round(sent - start) };
    results[i] = result;
    try {
      const method = args.method ?? "GET";
      const res: Answer = nodeH2
        ? await nodeH2.request(path, method, args.headers, args.body)
        : await pool
            .request({ path, method: method as "GET", headers: args.headers, body: args.body })
            .then(async (r) => ({ statusCode: r.statusCode, headers: r.headers, text: await r.body.text() }));
      const text = res.text;
      result.status = res.statusCode;
      const nm = res.headers["x-nodemesh-error"];
      if (nm !== undefined) result.nmError = String(nm);
      const ra = res.headers["retry-after"];
      if (ra !== undefined) result.retryAfter = String(ra);
      let json: { pod?: string; version?: string; protocol?: string } | undefined;
      if (String(res.headers["content-type"] ?? "").startsWith("application/json")) {
        try {
          json = JSON.parse(text);
        } catch {
          // not the workload's JSON
        }
      }
      if (json) {
        result.pod = json.pod;
        result.version = json.version;
        result.protocol = json.protocol;
      } else if (text) {
        result.text = text.slice(0, 200);
      }
    } catch (err) {
      result.error = (err as Error).message || String(err);
    }
    result.ms = round(performance.now() - sent);
  };

  if (args.rate) {
    const rate = args.rate;
    const pending: Promise<void>[] = [];
    for (let i = 0; i < args.requests; i++) {
      const due = start + (i * 1000) / rate;
      const wait = due - performance.now();
      if (wait > 1) await new Promise((resolve) => setTimeout(resolve, wait));
      pending.push(one(i));
    }
    await Promise.all(pending);
  } else {
    let next = 0;
    const worker = async () => {
      while (next < args.requests) await one(next++);
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, args.requests) }, worker));
  }
  const durationMs = round(performance.now() - start);
  await pool.close().catch(() => {});
  nodeH2?.close();

  const report: LoadReport = {
    requests: args.requests,
    startedAt,
    durationMs,
    statuses: {},
    versions: {},
    pods: {},
    nmErrors: {},
    retryAfter: {},
    protocols: {},
    errors: {},
    latency: { min: 0, p50: 0, p90: 0, p99: 0, max: 0, mean: 0 },
    latencies: results.map((r) => r.ms),
  };
  for (const r of results) {
    if (r.error !== undefined) bump(report.errors, r.error);
    else bump(report.statuses, String(r.status));
    bump(report.versions, r.version);
    bump(report.pods, r.pod);
    bump(report.nmErrors, r.nmError);
    bump(report.protocols, r.protocol);
    if (r.retryAfter !== undefined) bump(report.retryAfter, String(r.status));
  }
  const sorted = [...report.latencies].sort((a, b) => a - b);
  report.latency = {
    min: sorted[0] ?? 0,
    p50: quantile(sorted, 0.5),
    p90: quantile(sorted, 0.9),
    p99: quantile(sorted, 0.99),
    max: sorted.at(-1) ?? 0,
    mean: round(sorted.reduce((a, b) => a + b, 0) / Math.max(1, sorted.length)),
  };
  if (args.details) report.results = results;
  return report;
}

if (import.meta.main) {
  const raw = process.argv[2];
  if (!raw) {
    process.stderr.write('usage: node http-load.ts \'{"url":"http://10.96.0.10/","requests":100,"concurrency":4}\'\n');
    process.exit(2);
  }
  const report = await runLoad(JSON.parse(raw) as LoadArgs);
  process.stdout.write(`${JSON.stringify(report)}\n`);
}
