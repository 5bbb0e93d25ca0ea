// The tracing link over loopback: the real Dataplane (plain sockets) exporting to a loopback OTLP
// receiver that decodes with the official protos. What the 2-node test cannot easily stage: a
// failover's attempts, and a request the agent answers itself.

import http from "node:http";
import net from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { ExportTraceServiceRequest, OTLP_PROTOBUF } from "../../../api/otlp.ts";
import type { Service } from "../../../api/services.ts";
import type { Dataplane } from "../dataplane.ts";
import { handleOutbound } from "../outbound.ts";
import { acceptor, loopbackDataplane, loopbackPod } from "../testing/loopback.ts";

const VIP = "10.96.0.1";
const CLIENT = loopbackPod("127.0.0.1", "client-0", "client");
const TRACE = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN = "00f067aa0ba902b7";
const closers: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});

interface Span {
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  kind: number;
  status: number;
  attributes: Record<string, unknown>;
}

async function listen(server: net.Server): Promise<number> {
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  closers.push(() => new Promise<void>((r) => server.close(() => r())));
  if ("closeAllConnections" in server) closers.push(() => (server as http.Server).closeAllConnections());
  return (server.address() as net.AddressInfo).port;
}

async function closedPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const { port } = s.address() as net.AddressInfo;
  await new Promise((r) => s.close(r));
  return port;
}

/** A loopback OTLP/HTTP receiver: the spans it decoded. */
async function receiver(): Promise<{ url: string; spans: Span[] }> {
  const spans: Span[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = ExportTraceServiceRequest.toObject(ExportTraceServiceRequest.decode(Buffer.concat(chunks)), {
        longs: Number,
        enums: Number,
      });
      for (const s of body.resourceSpans[0].scopeSpans[0].spans) {
        const attributes: Record<string, unknown> = {};
        for (const kv of s.attributes) attributes[kv.key] = Object.values(kv.value)[0];
        const hex = (b?: Uint8Array) => Buffer.from(b ?? []).toString("hex");
        spans.push({
          traceId: hex(s.traceId),
          spanId: hex(s.spanId),
          parentSpanId: hex(s.parentSpanId),
          name: s.name,
          kind: s.kind,
          status: s.status?.code ?? 0,
          attributes,
        });
      }
      res.writeHead(200, { "content-type": OTLP_PROTOBUF }).end();
    });
  });
  return { url: `http://127.0.0.1:${await listen(server)}`, spans };
}

function service(ports: number[]): Service {
  return {
    name: "web",
    namespace: "default",
    vip: VIP,
    ports: [{ name: "p", port: 80, protocol: "http" }],
    endpoints: ports.map((port, i) => ({ ip: "127.0.0.1", port, node: "node-a", pod: `web-${i}` })),
  };
}

async function tracedDataplane(
  services: Service[],
  otlpEndpoint: string,
  traffic: unknown[] = [],
): Promise<{ dp: Dataplane; port: number }> {
  const dp = loopbackDataplane(services, traffic, {
    samplingPercent: 0,
    otlpEndpoint,
    node: "node-a",
    version: "test",
  });
  closers.push(() => dp.tracer.stop());
  const a = await acceptor((socket) => void handleOutbound(dp, CLIENT, socket, { ip: VIP, port: 80 }));
  closers.push(a.close);
  return { dp, port: a.port };
}

function get(port: number, headers: http.OutgoingHttpHeaders) {
  return new Promise<number>((resolve, reject) => {
    const req = http.get({ host: "127.0.0.1", port, path: "/items?x=1", headers, agent: false }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode!));
    });
    req.on("error", reject);
  });
}

/** Lets the request be reported (setImmediate), then sends what is queued. */
async function exported(dp: Dataplane): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, 20));
  await dp.tracer.stop();
}

describe("spans over loopback", () => {
  it("makes a failover's attempts sibling CLIENT spans; the endpoint gets the last attempt's traceparent", async () => {
    let seen: string | undefined;
    const ok = http.createServer((req, res) => {
      seen = req.headers.traceparent as string;
      res.end("ok");
    });
    const r = await receiver();
    // Round robin starts at the first endpoint: the refusing one.
    const { dp, port } = await tracedDataplane([service([await closedPort(), await listen(ok)])], r.url);
    // At 0 % only the caller's sampled flag gets this request traced.
    expect(await get(port, { traceparent: `00-${TRACE}-${CALLER_SPAN}-01`, "x-request-id": "r1" })).toBe(200);
    await exported(dp);
    const server = r.spans.filter((s) => s.kind === 2);
    const clients = r.spans
      .filter((s) => s.kind === 3)
      .sort((a, b) => Number(a.attributes["nodemesh.attempt"]) - Number(b.attributes["nodemesh.attempt"]));
    expect(server).toHaveLength(1);
    expect(clients).toHaveLength(2);
    expect(server[0]).toMatchObject({ traceId: TRACE, parentSpanId: CALLER_SPAN, name: "GET", status: 0 });
    expect(server[0]!.attributes).toMatchObject({
      "url.path": "/items",
      "http.response.status_code": 200,
      "nodemesh.retries": 0, // a failover is no retry
      "nodemesh.node": "node-a",
      "nodemesh.request_id": "r1",
    });
    for (const c of clients) expect(c).toMatchObject({ traceId: TRACE, parentSpanId: server[0]!.spanId });
    expect(clients[0]!.attributes).toMatchObject({ "nodemesh.attempt": 1, "error.type": "NM_CONNECT_FAILED" });
    expect(clients[0]!.status).toBe(2);
    expect(clients[1]!.attributes).toMatchObject({ "nodemesh.attempt": 2, "http.response.status_code": 200 });
    expect(clients[1]!.attributes["error.type"]).toBeUndefined();
    expect(seen).toBe(`00-${TRACE}-${clients[1]!.spanId}-01`);
  });

  it("marks the agent's own answer as an error with its code, without a CLIENT span", async () => {
    const ok = http.createServer((_, res) => res.end("ok"));
    const r = await receiver();
    const abort = {
      kind: "TrafficPolicy",
      name: "web",
      namespace: "default",
      spec: { targetRefs: [{ name: "web" }], faultInjection: { abort: { httpStatus: 503, percent: 100 } } },
    };
    const { dp, port } = await tracedDataplane([service([await listen(ok)])], r.url, [abort]);
    expect(await get(port, { traceparent: `00-${TRACE}-${CALLER_SPAN}-01` })).toBe(503);
    await exported(dp);
    expect(r.spans).toHaveLength(1);
    expect(r.spans[0]).toMatchObject({ kind: 2, status: 2 });
    expect(r.spans[0]!.attributes).toMatchObject({ "http.response.status_code": 503, "error.type": "NM_FAULT_ABORT" });
  });

  it("makes no span for an unsampled request, and sends a traceparent that says so", async () => {
    let seen: string | undefined;
    const ok = http.createServer((req, res) => {
      seen = req.headers.traceparent as string;
      res.end("ok");
    });
    const r = await receiver();
    const { dp, port } = await tracedDataplane([service([await listen(ok)])], r.url);
    expect(await get(port, { traceparent: "malformed" })).toBe(200);
    await exported(dp);
    expect(r.spans).toEqual([]);
    expect(seen).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/);
  });
});
