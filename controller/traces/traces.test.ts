// The OTLP receiver, the trace window and the REST API's traces and alerts, over real HTTP on
// loopback: requests encoded with the official OTLP protos (spans.fixture.ts), answers decoded
// with them, the window's bounds and the counters of what it evicted or refused.

import { gzipSync } from "node:zlib";
import { Registry } from "prom-client";
import { afterEach, describe, expect, it } from "vitest";
import { ExportTraceServiceResponse, OTLP_PROTOBUF } from "../../api/otlp.ts";
import type { Trace } from "../../api/traces.ts";
import { AlertmanagerClient, parseAlertmanagerUrl } from "../alerts/alertmanager.ts";
import { TraceMetrics } from "../metrics.ts";
import { type RestServer, startRestServer } from "../rest/server.ts";
import { MemoryStore } from "../store/memory-store.ts";
import { decodeProtobuf, OtlpDecodeError } from "./otlp-decode.ts";
import { type OtlpLimits, type OtlpServer, startOtlpServer } from "./otlp-server.ts";
import { meshTrace } from "./spans.fixture.ts";
import { TraceWindow, type TraceWindowLimits } from "./trace-store.ts";

const TRACES = "/apis/nodemesh.io/v1alpha1/traces";
const ALERTS = "/apis/nodemesh.io/v1alpha1/alerts";

let otlp: OtlpServer | undefined;
let rest: RestServer | undefined;
let registry: Registry;

afterEach(async () => {
  await otlp?.close();
  await rest?.close();
  otlp = rest = undefined;
});

async function start(
  window: Partial<TraceWindowLimits> = {},
  limits: Partial<OtlpLimits> = {},
  alertmanager?: string,
): Promise<TraceWindow> {
  registry = new Registry();
  let metrics: TraceMetrics | undefined;
  const traces = new TraceWindow(window, (reason, n) => metrics?.evicted(reason, n));
  metrics = new TraceMetrics(registry, traces);
  otlp = await startOtlpServer({ host: "127.0.0.1", port: 0, window: traces, metrics, limits });
  rest = await startRestServer({
    store: new MemoryStore(),
    registry,
    host: "127.0.0.1",
    port: 0,
    traces,
    ...(alertmanager ? { alerts: new AlertmanagerClient(parseAlertmanagerUrl(alertmanager)) } : {}),
  });
  return traces;
}

async function post(body: Uint8Array | string, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(otlp!.url, { method: "POST", headers: { "content-type": OTLP_PROTOBUF, ...headers }, body });
}

async function exported(body: Uint8Array, headers: Record<string, string> = {}) {
  const res = await post(body, headers);
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toBe(OTLP_PROTOBUF);
  const answer = ExportTraceServiceResponse.toObject(
    ExportTraceServiceResponse.decode(new Uint8Array(await res.arrayBuffer())),
    { longs: Number },
  ) as { partialSuccess?: { rejectedSpans?: number; errorMessage?: string } };
  return answer.partialSuccess ?? {};
}

// biome-ignore lint/suspicious/noExplicitAny: tests read arbitrary response shapes
async function get(path: string): Promise<{ status: number; body: any }> {
  const res = await fetch(`${rest!.url}${path}`);
  return { status: res.status, body: await res.json() };
}

const metric = async (name: string) => {
  const text = await registry.metrics();
  return text
    .split("\n")
    .filter((l) => l.startsWith(name))
    .join("\n");
};

describe("OTLP receiver and trace window", () => {
  it("joins the spans two agents export for one request into one tree", async () => {
    await start();
    const t = meshTrace({ startMs: Date.now() - 1000 });
    // node-2's spans arrive first: the trace is partial until node-1's arrive.
    expect(await exported(t.requests[1]!)).toEqual({});
    const early = (await get(`${TRACES}/${t.traceId}`)).body as Trace;
    expect(early.spanCount).toBe(4);
    expect(early.partial).toBe(true);
    expect(await exported(t.requests[0]!)).toEqual({});

    const { status, body } = await get(`${TRACES}/${t.traceId}`);
    expect(status).toBe(200);
    const trace = body as Trace & { kind: string };
    expect(trace.kind).toBe("Trace");
    expect(trace.spanCount).toBe(t.spanCount);
    expect(trace.partial).toBe(false);
    expect(trace.rootName).toBe("GET /api/checkout");
    expect(trace.rootKind).toBe("server");
    expect(trace.rootNode).toBe("node-1");
    expect(trace.nodes).toEqual(["node-1", "node-2"]);
    expect(trace.services).toEqual(["shop/checkout"]);
    expect(trace.httpStatus).toBe(200);
    // The first attempt failed on both agents (their CLIENT and node-2's SERVER and CLIENT spans).
    expect(trace.errorCount).toBe(3);
    expect(trace.error).toBe(true);
    expect(trace.durationMs).toBeCloseTo(42, 3);

    // Tree order: each span after its parent, with its depth; the retries are siblings.
    const rows = trace.spans.map((s) => `${"  ".repeat(s.depth)}${s.kind} ${s.node} ${s.status}`);
    expect(rows).toEqual([
      "server node-1 unset",
      "  client node-1 error",
      "    server node-2 error",
      "      client node-2 error",
      "  client node-1 unset",
      "    server node-2 unset",
      "      client node-2 unset",
    ]);
    for (const s of trace.spans.slice(1)) {
      expect(
        trace.spans.find((p) => p.spanId === s.parentSpanId),
        s.spanId,
      ).toBeDefined();
    }
    const [root, attempt1] = trace.spans;
    expect(root!.offsetMs).toBe(0);
    expect(attempt1!.offsetMs).toBeCloseTo(1, 3);
    expect(attempt1!.durationMs).toBeCloseTo(12.5, 3);
    expect(attempt1!.attributes).toMatchObject({
      "nodemesh.attempt": 1,
      "nodemesh.mtls": true,
      "network.peer.address": "10.0.2.10",
      "http.response.status_code": 503,
    });
    expect(attempt1!.statusMessage).toBe("upstream answered 503");
    expect(root!.events).toEqual([
      { name: "nodemesh.backoff", offsetMs: 14, attributes: { "nodemesh.attempt": 1, "nodemesh.backoff.ms": 5 } },
    ]);
    expect(root!.resource).toEqual({
      "service.name": "nodemesh-agent",
      "service.instance.id": "node-1",
      "k8s.node.name": "node-1",
    });
    expect(await metric("nodemesh_controller_otlp_spans_received_total")).toContain(" 7");
    expect(await metric("nodemesh_controller_traces ")).toBe("nodemesh_controller_traces 1");
  });

  it("lists newest first, filtered by service, errors and duration, with a limit", async () => {
    await start();
    const ok = meshTrace({ service: "shop/catalog" });
    const failed = meshTrace({ service: "shop/checkout", fail: true });
    const slow = meshTrace({ service: "shop/checkout", slow: 10 });
    for (const t of [ok, failed, slow]) for (const r of t.requests) await exported(r);

    const ids = async (query: string) =>
      ((await get(`${TRACES}${query}`)).body.items as { traceId: string }[]).map((i) => i.traceId);
    expect(await ids("")).toEqual([slow.traceId, failed.traceId, ok.traceId]);
    expect(await ids("?service=shop/checkout")).toEqual([slow.traceId, failed.traceId]);
    expect(await ids("?service=shop/catalog")).toEqual([ok.traceId]);
    expect(await ids("?service=shop/none")).toEqual([]);
    // Every trace has a failed first attempt; only `failed` answered 503 in the end, but errors=true
    // means "some span failed".
    expect(await ids("?errors=true&service=shop/checkout")).toEqual([slow.traceId, failed.traceId]);
    expect(await ids("?minDurationMs=100")).toEqual([slow.traceId]);
    expect(await ids("?limit=1")).toEqual([slow.traceId]);
    // Slowest first: the slow one, then the two of 42 ms.
    expect((await ids("?sort=duration"))[0]).toBe(slow.traceId);
    expect(await ids("?sort=duration&service=shop/catalog")).toEqual([ok.traceId]);
    const oldest = meshTrace({ service: "shop/catalog", slow: 20 });
    for (const r of oldest.requests) await exported(r);
    expect(await ids("?sort=duration&limit=2")).toEqual([oldest.traceId, slow.traceId]);
    expect(await ids("?sort=recent&limit=1")).toEqual([oldest.traceId]);
    const list = (await get(`${TRACES}?service=shop/checkout`)).body;
    expect(list.kind).toBe("TraceList");
    expect(list.items[1]).toMatchObject({ httpStatus: 503, rootName: "GET /api/checkout", spanCount: 7 });
  });

  it("refuses unusable queries and unknown traces with a Status", async () => {
    await start();
    for (const q of [
      "?limit=0",
      "?limit=501",
      "?errors=maybe",
      "?minDurationMs=-1",
      "?service=noslash",
      "?sort=name",
    ]) {
      const r = await get(`${TRACES}${q}`);
      expect(r.status, q).toBe(400);
      expect(r.body.kind).toBe("Status");
    }
    expect((await get(`${TRACES}/xyz`)).status).toBe(400);
    const missing = await get(`${TRACES}/${"ab".repeat(16)}`);
    expect(missing.status).toBe(404);
    expect(missing.body.message).toContain("not in the window");
    const del = await fetch(`${rest!.url}${TRACES}`, { method: "DELETE" });
    expect(del.status).toBe(405);
  });

  it("accepts gzip and OTLP JSON, and answers JSON to JSON", async () => {
    await start();
    const t = meshTrace();
    expect(await exported(gzipSync(t.requests[0]!), { "content-encoding": "gzip" })).toEqual({});
    const traceId = "5b8efff798038103d269b633813fc60c";
    const json = {
      resourceSpans: [
        {
          resource: { attributes: [{ key: "k8s.node.name", value: { stringValue: "node-9" } }] },
          scopeSpans: [
            {
              spans: [
                {
                  traceId,
                  spanId: "eee19b7ec3c1b174",
                  name: "GET /json",
                  kind: 2,
                  startTimeUnixNano: "1544712660000000000",
                  endTimeUnixNano: "1544712661000000000",
                  attributes: [{ key: "http.response.status_code", value: { intValue: "500" } }],
                  status: { code: 2 },
                },
              ],
            },
          ],
        },
      ],
    };
    const res = await post(JSON.stringify(json), { "content-type": "application/json" });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("application/json");
    expect(await res.json()).toEqual({});
    const trace = (await get(`${TRACES}/${traceId}`)).body as Trace;
    expect(trace).toMatchObject({ rootNode: "node-9", durationMs: 1000, httpStatus: 500, error: true });
    expect(trace.startTime).toBe("2018-12-13T14:51:00.000Z");
  });

  it("rejects malformed spans and spans over the bounds in partialSuccess, and counts them", async () => {
    await start({ maxSpansPerTrace: 5 }, { maxSpansPerRequest: 3 });
    const t = meshTrace();
    // node-1's request has 3 spans, node-2's 4: one over the request bound, and of the 3 left one
    // over the trace's 5.
    expect(await exported(t.requests[0]!)).toEqual({});
    expect(await exported(t.requests[1]!)).toEqual({
      rejectedSpans: 2,
      errorMessage: "1 over 3 spans a request; 1 over 5 spans a trace",
    });
    const again = await exported(meshTrace().requests[1]!);
    expect(again).toEqual({ rejectedSpans: 1, errorMessage: "1 over 3 spans a request" });
    const bad = {
      resourceSpans: [
        {
          scopeSpans: [
            {
              spans: [
                { traceId: "00".repeat(16), spanId: "01".repeat(8), startTimeUnixNano: "1", endTimeUnixNano: "2" },
                { traceId: "ab".repeat(16), spanId: "01".repeat(8), startTimeUnixNano: "5", endTimeUnixNano: "2" },
                { traceId: "ab".repeat(16), spanId: "short", startTimeUnixNano: "1", endTimeUnixNano: "2" },
              ],
            },
          ],
        },
      ],
    };
    const res = await post(JSON.stringify(bad), { "content-type": "application/json" });
    expect(await res.json()).toEqual({
      partialSuccess: { rejectedSpans: 3, errorMessage: "3 malformed (ids or times)" },
    });
    const rejected = await metric("nodemesh_controller_otlp_spans_rejected_total");
    expect(rejected).toContain('reason="request_limit"} 2');
    expect(rejected).toContain('reason="trace_full"} 1');
    expect(rejected).toContain('reason="invalid"} 3');
  });

  it("forgets the oldest traces past the count, span and age bounds, and counts them", async () => {
    const window = await start({ maxTraces: 3, maxSpans: 30, maxAgeMs: 60_000 });
    const traces = Array.from({ length: 5 }, () => meshTrace());
    for (const t of traces) for (const r of t.requests) await exported(r);
    expect(window.traceCount).toBe(3);
    expect((await get(`${TRACES}/${traces[0]!.traceId}`)).status).toBe(404);
    expect((await get(`${TRACES}/${traces[4]!.traceId}`)).status).toBe(200);
    expect(await metric("nodemesh_controller_traces_evicted_total")).toContain('reason="traces"} 2');
    // 3 traces of 7 spans fit in 30.
    expect(window.spanCount).toBe(21);
    // An hour later every trace is past its age.
    expect(window.list({ limit: 10 }, Date.now() + 3600_000)).toEqual([]);
    expect(await metric("nodemesh_controller_traces_evicted_total")).toContain('reason="age"} 3');
    expect(window.spanCount).toBe(0);
  });

  it("evicts by total spans when traces are large", async () => {
    const window = await start({ maxSpans: 15 });
    const traces = Array.from({ length: 3 }, () => meshTrace());
    for (const t of traces) for (const r of t.requests) await exported(r);
    // 3 × 7 = 21 spans over 15: the oldest trace goes.
    expect(window.traceCount).toBe(2);
    expect(window.spanCount).toBe(14);
    expect(await metric("nodemesh_controller_traces_evicted_total")).toContain('reason="spans"} 1');
  });

  it("answers 429 with Retry-After over the span rate, and errors as google.rpc.Status", async () => {
    await start({}, { spansPerSecond: 1, burstSpans: 5 });
    const t = meshTrace();
    expect(await exported(t.requests[0]!)).toEqual({}); // 3 of 5
    const limited = await post(t.requests[1]!); // 4 more
    expect(limited.status).toBe(429);
    expect(limited.headers.get("retry-after")).toBe("1");
    expect(await metric("nodemesh_controller_otlp_spans_rejected_total")).toContain('reason="rate"} 4');

    const wrongType = await post("x", { "content-type": "text/plain" });
    expect(wrongType.status).toBe(415);
    const garbage = await post(new Uint8Array([0xff, 0xff, 0xff, 0xff]));
    expect(garbage.status).toBe(400);
    expect(garbage.headers.get("content-type")).toBe(OTLP_PROTOBUF);
    expect(Buffer.from(await garbage.arrayBuffer()).toString("latin1")).toContain("not an OTLP");
    const elsewhere = await fetch(otlp!.url.replace("/v1/traces", "/v1/metrics"), { method: "POST" });
    expect(elsewhere.status).toBe(404);
    const getIt = await fetch(otlp!.url);
    expect(getIt.status).toBe(405);
    expect(await metric("nodemesh_controller_otlp_requests_total")).toContain('code="429"} 1');
  });

  it("refuses a body over the size bound, also once decompressed", async () => {
    await start({}, { maxBodyBytes: 64 * 1024 });
    const big = await post(new Uint8Array(100 * 1024));
    expect(big.status).toBe(413);
    const bomb = await post(gzipSync(Buffer.alloc(1024 * 1024)), { "content-encoding": "gzip" });
    expect(bomb.status).toBe(413);
    const notGzip = await post(new Uint8Array([1, 2, 3]), { "content-encoding": "gzip" });
    expect(notGzip.status).toBe(400);
  });
});

describe("alerts", () => {
  it("says how to configure Alertmanager when none is", async () => {
    await start();
    const r = await get(ALERTS);
    expect(r.status).toBe(404);
    expect(r.body.message).toContain("--alertmanager-url");
  });

  it("answers 503 naming Alertmanager when it does not answer", async () => {
    // A port nothing listens on: the server just closed it.
    const probe = await startOtlpServer({
      host: "127.0.0.1",
      port: 0,
      window: new TraceWindow(),
      metrics: new TraceMetrics(new Registry(), new TraceWindow()),
    });
    const closed = probe.port;
    await probe.close();
    await start({}, {}, `http://user:secret@127.0.0.1:${closed}/am`);
    const r = await get(ALERTS);
    expect(r.status).toBe(503);
    expect(r.body.message).toBe(`Alertmanager at http://127.0.0.1:${closed}/am/ cannot be reached: ECONNREFUSED`);
  });

  it("refuses unusable --alertmanager-url values", () => {
    expect(() => parseAlertmanagerUrl("alertmanager:9093")).toThrow(/http or https URL/);
    expect(() => parseAlertmanagerUrl("ftp://x/")).toThrow(/http or https URL/);
    expect(() => parseAlertmanagerUrl("http://x/?a=b")).toThrow(/no query/);
    expect(parseAlertmanagerUrl("http://am:9093").href).toBe("http://am:9093/");
  });
});

describe("OTLP decoding of hostile bodies", () => {
  it("turns mutated and random protobuf into spans or an OtlpDecodeError, never anything else", () => {
    const valid = Buffer.from(meshTrace().requests[0]!);
    let seed = 42;
    const random = () => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed / 0x7fffffff;
    };
    let decoded = 0;
    let refused = 0;
    for (let i = 0; i < 3000; i++) {
      const body =
        i % 3 === 0
          ? Buffer.from(Array.from({ length: Math.floor(random() * 300) }, () => Math.floor(random() * 256)))
          : Buffer.from(valid);
      if (i % 3 !== 0)
        for (let k = 0; k < 1 + (i % 5); k++) body[Math.floor(random() * body.length)] = Math.floor(random() * 256);
      try {
        const { spans } = decodeProtobuf(body);
        for (const s of spans) {
          expect(s.traceId).toMatch(/^[0-9a-f]{32}$/);
          expect(s.spanId).toMatch(/^[0-9a-f]{16}$/);
          expect(s.endNs >= s.startNs).toBe(true);
        }
        decoded++;
      } catch (err) {
        expect(err).toBeInstanceOf(OtlpDecodeError);
        refused++;
      }
    }
    // Both outcomes happen: the mutations are not all fatal, nor all harmless.
    expect(decoded).toBeGreaterThan(100);
    expect(refused).toBeGreaterThan(100);
  });
});
