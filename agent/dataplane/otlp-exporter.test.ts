import http from "node:http";
import type { AddressInfo } from "node:net";
import { Counter, Registry } from "prom-client";
import { afterEach, describe, expect, it } from "vitest";
import {
  ExportTraceServiceRequest,
  ExportTraceServiceResponse,
  OTLP_PROTOBUF,
  OTLP_TRACES_PATH,
} from "../../api/otlp.ts";
import {
  encodeSpans,
  type FinishedSpan,
  OtlpExporter,
  type OtlpTransport,
  PROTOBUF,
  SPAN_KIND_CLIENT,
  SPAN_KIND_SERVER,
  STATUS_ERROR,
  TRACES_PATH,
  tracesUrl,
  unixNanos,
} from "./otlp-exporter.ts";

const TRACE = "4bf92f3577b34da6a3ce929d0e0e4736";

function span(i: number, extra: Partial<FinishedSpan> = {}): FinishedSpan {
  return {
    traceId: TRACE,
    spanId: (0x1000 + i).toString(16).padStart(16, "0"),
    parentSpanId: "00f067aa0ba902b7",
    name: `GET /${i}`,
    kind: SPAN_KIND_SERVER,
    startMs: 1_764_838_800_123.25,
    endMs: 1_764_838_800_125.5,
    attributes: [
      ["http.request.method", "GET"],
      ["http.response.status_code", 200],
      ["nodemesh.mtls", true],
      ["ratio", 0.5],
    ],
    events: [],
    status: 0,
    ...extra,
  };
}

interface Received {
  contentType: string | undefined;
  url: string | undefined;
  spans: Record<string, unknown>[];
}

/** A loopback OTLP/HTTP receiver decoding with the official protos; `delayMs` holds each answer. */
async function receiver(opts: { delayMs?: number; status?: number; reject?: number } = {}) {
  const received: Received[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = ExportTraceServiceRequest.toObject(ExportTraceServiceRequest.decode(Buffer.concat(chunks)), {
        longs: String,
        bytes: String,
        enums: Number,
      }) as { resourceSpans: { scopeSpans: { spans: Record<string, unknown>[] }[] }[] };
      received.push({
        contentType: req.headers["content-type"],
        url: req.url,
        spans: body.resourceSpans.flatMap((r) => r.scopeSpans.flatMap((s) => s.spans)),
      });
      const answer = ExportTraceServiceResponse.encode(
        ExportTraceServiceResponse.fromObject(opts.reject ? { partialSuccess: { rejectedSpans: opts.reject } } : {}),
      ).finish();
      const send = () => {
        res.writeHead(opts.status ?? 200, { "content-type": OTLP_PROTOBUF });
        res.end(answer);
      };
      if (opts.delayMs) setTimeout(send, opts.delayMs).unref();
      else send();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  return { received, port, server };
}

function counters() {
  const registry = new Registry();
  const exported = new Counter({ name: "exported", help: "x", registers: [registry] });
  const dropped = new Counter({ name: "dropped", help: "x", labelNames: ["reason"], registers: [registry] });
  const value = async (c: Counter<string>, reason?: string) =>
    (await c.get()).values.find((v) => reason === undefined || v.labels.reason === reason)?.value ?? 0;
  return { exported, dropped, value };
}

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function exporter(
  port: number,
  c: ReturnType<typeof counters>,
  opts: Partial<{ maxQueue: number; maxBatch: number; timeoutMs: number; transport: OtlpTransport }> = {},
) {
  const e = new OtlpExporter(
    {
      endpoint: `http://127.0.0.1:${port}`,
      resource: [["service.name", "nodemesh-agent"]],
      maxQueue: opts.maxQueue ?? 100,
      maxBatch: opts.maxBatch ?? 10,
      intervalMs: 60_000, // the tests flush by hand
      timeoutMs: opts.timeoutMs ?? 2000,
      exported: c.exported,
      dropped: c.dropped,
      transport: opts.transport,
    },
    "0.1.0",
  );
  cleanups.push(() => e.stop());
  return e;
}

describe("tracesUrl", () => {
  it("uses api/otlp.ts's path and content type", () => {
    expect(TRACES_PATH).toBe(OTLP_TRACES_PATH);
    expect(PROTOBUF).toBe(OTLP_PROTOBUF);
  });

  it("appends /v1/traces to an endpoint without a path, keeps one that has a path", () => {
    expect(tracesUrl("http://collector:4318").href).toBe("http://collector:4318/v1/traces");
    expect(tracesUrl("http://collector:4318/").href).toBe("http://collector:4318/v1/traces");
    expect(tracesUrl("https://tempo.example/otlp/v1/traces").href).toBe("https://tempo.example/otlp/v1/traces");
  });

  it("refuses what is not an http(s) URL", () => {
    expect(() => tracesUrl("collector:4318")).toThrow(/http:\/\/ or https:\/\//);
    expect(() => tracesUrl("not a url")).toThrow();
  });
});

describe("encodeSpans", () => {
  it("is what the official protos decode back, nanoseconds exact", async () => {
    const nanos = (ms: number) => {
      const { low, high } = unixNanos(ms);
      return (BigInt(high >>> 0) << 32n) | BigInt(low >>> 0);
    };
    // Exact for what a double holds (performance.now()'s microseconds on today's epoch: 1/4096 ms steps).
    expect(nanos(1_764_838_800_123.25)).toBe(1764838800123250000n);
    const off = nanos(1_764_838_800_123.4568) - 1764838800123456800n;
    expect(off >= -250n && off <= 250n).toBe(true);
    expect(nanos(1000)).toBe(1000000000n);
    expect(nanos(0)).toBe(0n);
    // Past 2^63 ns (year 2262) the high half's sign bit is set; fixed64 reads it unsigned.
    expect(nanos(9_300_000_000_000)).toBe(9_300_000_000_000_000_000n);
    for (let i = 0; i < 1000; i++) {
      const ms = Math.floor(Math.random() * 4e12);
      expect(nanos(ms)).toBe(BigInt(ms) * 1_000_000n);
    }
    const body = await encodeSpans(
      [["service.name", "nodemesh-agent"]],
      [
        span(1, {
          events: [{ name: "nodemesh.backoff", timeMs: 1_764_838_800_124, attributes: [["nodemesh.backoff_ms", 25]] }],
          status: STATUS_ERROR,
          traceState: "congo=t61rcWkgMzE",
        }),
        span(2, { kind: SPAN_KIND_CLIENT, parentSpanId: undefined }),
      ],
      "0.1.0",
    );
    const decoded = ExportTraceServiceRequest.toObject(ExportTraceServiceRequest.decode(body), {
      longs: String,
      enums: Number,
    });
    const rs = decoded.resourceSpans[0];
    expect(rs.resource.attributes).toEqual([{ key: "service.name", value: { stringValue: "nodemesh-agent" } }]);
    expect(rs.scopeSpans[0].scope).toEqual({ name: "nodemesh-agent", version: "0.1.0" });
    const [a, b] = rs.scopeSpans[0].spans;
    expect(Buffer.from(a.traceId).toString("hex")).toBe(TRACE);
    expect(Buffer.from(a.spanId).toString("hex")).toBe("0000000000001001");
    expect(Buffer.from(a.parentSpanId).toString("hex")).toBe("00f067aa0ba902b7");
    expect(a).toMatchObject({
      name: "GET /1",
      kind: SPAN_KIND_SERVER,
      traceState: "congo=t61rcWkgMzE",
      startTimeUnixNano: "1764838800123250000",
      endTimeUnixNano: "1764838800125500000",
      status: { code: STATUS_ERROR },
      flags: 0x301, // sampled, parent known to be remote
    });
    expect(a.attributes).toEqual([
      { key: "http.request.method", value: { stringValue: "GET" } },
      { key: "http.response.status_code", value: { intValue: "200" } },
      { key: "nodemesh.mtls", value: { boolValue: true } },
      { key: "ratio", value: { doubleValue: 0.5 } },
    ]);
    expect(a.events).toEqual([
      {
        name: "nodemesh.backoff",
        timeUnixNano: "1764838800124000000",
        attributes: [{ key: "nodemesh.backoff_ms", value: { intValue: "25" } }],
      },
    ]);
    expect(b.kind).toBe(SPAN_KIND_CLIENT);
    expect(b.parentSpanId?.length ?? 0).toBe(0);
    expect(b.flags).toBe(0x101);
  });
});

describe("OtlpExporter", () => {
  it("posts batches of protobuf to /v1/traces and counts what was exported", async () => {
    const r = await receiver();
    cleanups.push(() => void r.server.close());
    const c = counters();
    const e = exporter(r.port, c);
    for (let i = 0; i < 25; i++) e.add(span(i));
    // 10 went at once (a full batch); the rest wait for the timer, here flushed by hand.
    for (let i = 0; i < 10 && (e.queued > 0 || r.received.length < 3); i++) await e.flush();
    expect(r.received.map((x) => x.spans.length)).toEqual([10, 10, 5]);
    expect(r.received[0]!.url).toBe("/v1/traces");
    expect(r.received[0]!.contentType).toBe(OTLP_PROTOBUF);
    expect(r.received.flatMap((x) => x.spans.map((s) => s.name))).toEqual(
      Array.from({ length: 25 }, (_, i) => `GET /${i}`),
    );
    expect(await c.value(c.exported)).toBe(25);
    expect(await c.value(c.dropped)).toBe(0);
  });

  it("bounds its queue: spans past maxQueue are dropped and counted while a batch is in flight", async () => {
    const r = await receiver({ delayMs: 300 });
    cleanups.push(() => void r.server.close());
    const c = counters();
    const e = exporter(r.port, c, { maxQueue: 20, maxBatch: 10 });
    for (let i = 0; i < 10; i++) e.add(span(i)); // a full batch: sent, its answer 300 ms away
    expect(e.queued).toBe(0);
    for (let i = 10; i < 50; i++) e.add(span(i)); // 20 fit, 20 do not
    expect(e.queued).toBe(20);
    expect(await c.value(c.dropped, "queue_full")).toBe(20);
    await e.stop(); // waits for the batch in flight, then sends one more
    expect(r.received.map((x) => x.spans.length)).toEqual([10, 10]);
    expect(await c.value(c.exported)).toBe(20);
    expect(await c.value(c.dropped, "shutdown")).toBe(10);
  });

  it("drops a batch, counted, when nothing listens", async () => {
    const r = await receiver();
    await new Promise((resolve) => r.server.close(resolve)); // the port is free again: connections are refused
    const c = counters();
    const e = exporter(r.port, c);
    for (let i = 0; i < 3; i++) e.add(span(i));
    const started = performance.now();
    await e.flush();
    expect(performance.now() - started).toBeLessThan(1000);
    expect(await c.value(c.dropped, "export_failed")).toBe(3);
    expect(await c.value(c.exported)).toBe(0);
  });

  it("abandons an export the collector does not answer within the timeout", async () => {
    const r = await receiver({ delayMs: 5000 });
    cleanups.push(() => {
      r.server.closeAllConnections();
      r.server.close();
    });
    const c = counters();
    const e = exporter(r.port, c, { timeoutMs: 200 });
    for (let i = 0; i < 4; i++) e.add(span(i));
    const started = performance.now();
    await e.flush();
    const took = performance.now() - started;
    expect(took).toBeGreaterThanOrEqual(190);
    expect(took).toBeLessThan(2000);
    expect(await c.value(c.dropped, "export_timeout")).toBe(4);
  });

  it("sends through the transport it is given (a worker's: the control thread), which may fail or never answer", async () => {
    const c = counters();
    const bodies: Uint8Array[] = [];
    const relayed = exporter(0, c, {
      transport: async (body) => {
        bodies.push(body);
        return { status: 200, body: new Uint8Array() };
      },
    });
    for (let i = 0; i < 3; i++) relayed.add(span(i));
    await relayed.flush();
    const decoded = ExportTraceServiceRequest.decode(bodies[0]!) as unknown as {
      resourceSpans: { scopeSpans: { spans: unknown[] }[] }[];
    };
    expect(decoded.resourceSpans[0]!.scopeSpans[0]!.spans).toHaveLength(3);
    expect(await c.value(c.exported)).toBe(3);

    const refused = exporter(0, c, { transport: () => Promise.reject(new Error("export_failed")) });
    refused.add(span(3));
    await refused.flush();
    expect(await c.value(c.dropped, "export_failed")).toBe(1);

    // A control thread that never answers: the exporter's own timeout drops the batch.
    const silent = exporter(0, c, { timeoutMs: 100, transport: () => new Promise(() => {}) });
    silent.add(span(4));
    silent.add(span(5));
    await silent.flush();
    expect(await c.value(c.dropped, "export_timeout")).toBe(2);
  });

  it("counts spans the collector rejected (partial success) and refused answers", async () => {
    const partial = await receiver({ reject: 2 });
    const refusing = await receiver({ status: 503 });
    cleanups.push(() => void partial.server.close());
    cleanups.push(() => void refusing.server.close());
    const c = counters();
    const a = exporter(partial.port, c);
    for (let i = 0; i < 5; i++) a.add(span(i));
    await a.flush();
    expect(await c.value(c.exported)).toBe(3);
    expect(await c.value(c.dropped, "rejected")).toBe(2);
    const b = exporter(refusing.port, c);
    b.add(span(9));
    await b.flush();
    expect(await c.value(c.dropped, "export_failed")).toBe(1);
  });
});
