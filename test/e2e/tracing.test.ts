// Distributed tracing end to end in the 2-node world: the agents export their spans over OTLP/HTTP
// to a real receiver in the controller's namespace (test/e2e/clients/otlp-sink.ts, decoding with
// the official protos), and the test reads the spans it prints.
//
//   node-1: client (app=client)          node-2: reviews-1 (app=reviews)
//   Service reviews 10.96.0.10: http 80 → 8080, grpc 9090
//
// A request through both agents is one trace of four spans, A.server → A.client → B.server →
// B.client; a caller's traceparent or B3 context is continued; a TrafficPolicy's 0 % leaves an
// unsampled caller without spans; retries are sibling CLIENT spans; a collector that is down or
// slow costs no request, and the spans it costs are counted on /metrics.

import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { ADMIN_PORT } from "../../api/dataplane.ts";
import type { Node, Pod, Proc, World as WorldType } from "../world/world.ts";
import { World } from "../world/world.ts";
import type { SinkSpan } from "./clients/otlp-sink.ts";
import { Mesh } from "./mesh.ts";
import { http2SessionFrom, httpFrom, metricSum, parseMetrics, rawHttpFrom } from "./netns-client.ts";

const VIP = "10.96.0.10";
const SINK = new URL("./clients/otlp-sink.ts", import.meta.url).pathname;
const GRPC_CLIENT = new URL("./clients/grpc-call.ts", import.meta.url).pathname;
const SINK_PORT = 4318;
const SERVER = 2;
const CLIENT = 3;

const SERVICES = `apiVersion: nodemesh.io/v1alpha1
kind: Service
metadata: { name: reviews, namespace: default }
spec:
  vip: ${VIP}
  ports:
    - { name: http, port: 80, targetPort: 8080, protocol: http }
    - { name: grpc, port: 9090, protocol: grpc }
  selector: { app: reviews }
`;

const policy = (spec: string) => `apiVersion: nodemesh.io/v1alpha1
kind: TrafficPolicy
metadata: { name: reviews-tracing, namespace: default }
spec:
  targetRefs: [{ kind: Service, name: reviews }]
${spec}`;

interface Answer {
  status: number;
  ms: number;
}

describe("tracing", () => {
  let world: WorldType;
  let mesh: Mesh;
  let n1: Node;
  let n2: Node;
  let client: Pod;
  let server: Pod;
  let sink: Proc;
  const sinks: Proc[] = [];
  /** The spans every receiver started so far has printed. */
  const allSpans = (): SinkSpan[] =>
    sinks.flatMap((p) => p.lines.filter((l) => l.startsWith("SPAN ")).map((l) => JSON.parse(l.slice(5)) as SinkSpan));

  const startSink = async (delayMs: number) => {
    const proc = world.spawn(
      mesh.controller!.place,
      process.execPath,
      [SINK, "--port", String(SINK_PORT), "--delay-ms", String(delayMs)],
      { name: "otlp-sink" },
    );
    sinks.push(proc);
    await proc.waitForLine("listening");
    return proc;
  };

  /** One GET from the client pod with the given extra headers; the status line's code. */
  const get = async (path: string, headers: Record<string, string> = {}): Promise<Answer> => {
    const lines = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`);
    const started = performance.now();
    const raw = await rawHttpFrom(
      client.netnsPath,
      VIP,
      80,
      `GET ${path} HTTP/1.1\r\nHost: reviews\r\n${lines.join("")}Connection: close\r\n\r\n`,
    );
    const ms = performance.now() - started;
    return { status: Number(/^HTTP\/1\.1 (\d{3})/.exec(raw)?.[1] ?? 0), ms };
  };

  const byRequest = (id: string) => allSpans().filter((s) => s.attributes["nodemesh.request_id"] === id);
  const spansOf = async (id: string, count: number): Promise<SinkSpan[]> => {
    await vi.waitFor(() => expect(byRequest(id).length).toBeGreaterThanOrEqual(count), {
      timeout: 15_000,
      interval: 100,
    });
    return byRequest(id);
  };

  /** The four spans of a request through both agents, in their order along the way. */
  const chain = (found: SinkSpan[]) => {
    const on = (node: Node, kind: number) =>
      found.filter((s) => s.resource["k8s.node.name"] === node.name && s.kind === kind);
    const [aServer, aClient, bServer, bClient] = [on(n1, SERVER), on(n1, CLIENT), on(n2, SERVER), on(n2, CLIENT)];
    expect([aServer.length, aClient.length, bServer.length, bClient.length]).toEqual([1, 1, 1, 1]);
    return { aServer: aServer[0]!, aClient: aClient[0]!, bServer: bServer[0]!, bClient: bClient[0]! };
  };

  /** The headers the app read for its last request to `path`. */
  const appSaw = async (path: string) => {
    const r = await httpFrom(server.netnsPath, `http://${server.ip}:8080/_control`);
    const recent = (JSON.parse(r.body) as { served: { recent: { path: string; headers: Record<string, string> }[] } })
      .served.recent;
    return recent.filter((x) => x.path === path).at(-1)?.headers;
  };

  /** The trace id of the access-log line `node`'s agent wrote for the request with this x-request-id. */
  const loggedTraceId = (node: Node, requestId: string): string | undefined =>
    mesh.agents
      .get(node)!
      .proc.lines.filter((l) => l.includes('"msg":"access"') && l.includes(requestId))
      .map((l) => JSON.parse(l) as { requestId?: string; traceId?: string })
      .find((e) => e.requestId === requestId)?.traceId;

  const control = (body: object) =>
    httpFrom(server.netnsPath, `http://${server.ip}:8080/_control`, { method: "POST", body: JSON.stringify(body) });

  const metrics = async (node: Node) =>
    parseMetrics((await httpFrom(node.netnsPath, `http://127.0.0.1:${ADMIN_PORT}/metrics`)).body);

  const versions = async () => {
    const r = await mesh.cli(["status", "-o", "json"]);
    return JSON.parse(r.stdout) as { connected: boolean; appliedVersion?: string; currentVersion: string }[];
  };

  /** Applies YAML through the CLI, then waits until both agents applied a newer version. */
  async function apply(yaml: string): Promise<void> {
    const before = (await versions())[0]?.currentVersion;
    const r = await mesh.cli(["apply", "-f", "-"], yaml);
    expect(r.code, r.stderr).toBe(0);
    await vi.waitFor(
      async () => {
        const agents = await versions();
        const synced = agents.every((a) => a.connected && a.appliedVersion === a.currentVersion);
        if (agents.length !== 2 || !synced || agents[0]!.currentVersion === before) throw new Error("not yet");
      },
      { timeout: 15_000, interval: 100 },
    );
  }

  beforeAll(async () => {
    world = await World.create({ nodes: 2 });
    [n1, n2] = world.nodes as [Node, Node];
    const collector = `http://10.250.0.2:${SINK_PORT}`;
    mesh = new Mesh(world, {
      agentArgs: ["--otlp-endpoint", collector, "--trace-sampling", "100", "--access-log", "all"],
    });
    await mesh.startController();
    expect(collector).toBe(`http://${mesh.controller!.place.ip}:${SINK_PORT}`);
    sink = await startSink(0);
    await Promise.all([mesh.startAgent(n1), mesh.startAgent(n2)]);
    client = await world.addPod(n1, "client");
    server = await world.addPod(n2, "reviews-1");
    await mesh.startWorkload(server, ["--http-port", "8080", "--grpc-port", "9090"]);
    await mesh.enroll(client, ["--label", "app=client"]);
    await mesh.enroll(server, ["--label", "app=reviews"]);
    await apply(SERVICES);
  }, 90_000);

  afterAll(async () => {
    await mesh?.destroy();
  });

  it("makes one trace of four linked spans, with their attributes, for a request through two agents", async () => {
    expect((await get("/ok", { "x-request-id": "first" })).status).toBe(200);
    const found = await spansOf("first", 4);
    expect(found).toHaveLength(4);
    const { aServer, aClient, bServer, bClient } = chain(found);
    console.log(`trace: ${JSON.stringify(found)}`);
    // One trace; each span the child of the one before it.
    expect(new Set(found.map((s) => s.traceId)).size).toBe(1);
    expect(aServer.traceId).toMatch(/^[0-9a-f]{32}$/);
    expect(aServer.parentSpanId).toBe(""); // the trace started here
    expect(aClient.parentSpanId).toBe(aServer.spanId);
    expect(bServer.parentSpanId).toBe(aClient.spanId);
    expect(bClient.parentSpanId).toBe(bServer.spanId);
    // The app got the trace, as the child of B's attempt.
    expect((await appSaw("/ok"))?.traceparent).toBe(`00-${aServer.traceId}-${bClient.spanId}-01`);
    // Both agents' access-log lines name the trace (the client sent none: node-1 started it).
    await vi.waitFor(() => {
      expect(loggedTraceId(n1, "first")).toBe(aServer.traceId);
      expect(loggedTraceId(n2, "first")).toBe(aServer.traceId);
    });

    for (const [s, node] of [
      [aServer, n1],
      [aClient, n1],
      [bServer, n2],
      [bClient, n2],
    ] as const) {
      expect(s.resource).toMatchObject({
        "service.name": "nodemesh-agent",
        "service.instance.id": node.name,
        "k8s.node.name": node.name,
      });
      expect(s.resource["service.version"]).toMatch(/^\d+\.\d+\.\d+/);
      expect(s.name).toBe("GET");
      expect(s.status).toBe(0);
      expect(s.attributes).toMatchObject({
        "http.request.method": "GET",
        "url.path": "/ok",
        "url.scheme": "http",
        "server.address": "reviews",
        "network.protocol.version": "1.1",
        "http.response.status_code": 200,
        "nodemesh.node": node.name,
        "nodemesh.source.workload": "default/client",
        "nodemesh.destination.service": "default/reviews",
        "nodemesh.destination.workload": "default/reviews",
      });
      expect(Number(s.endNs) - Number(s.startNs)).toBeGreaterThan(0);
    }
    expect(aServer.attributes["nodemesh.retries"]).toBe(0);
    expect(aClient.attributes).toMatchObject({
      "nodemesh.attempt": 1,
      "network.peer.address": server.ip,
      "network.peer.port": 8080,
    });
    expect(bClient.attributes).toMatchObject({
      "nodemesh.attempt": 1,
      "network.peer.address": server.ip,
      "network.peer.port": 8080,
    });
    // The hop between the agents is mutual TLS (the controller certifies both pods), said on both of its ends.
    expect(aClient.attributes["nodemesh.mtls"]).toBe(true);
    expect(bServer.attributes["nodemesh.mtls"]).toBe(true);
    // Durations nest: each span lies within its parent.
    for (const [outer, inner] of [
      [aServer, aClient],
      [bServer, bClient],
    ] as const) {
      expect(BigInt(inner.startNs) >= BigInt(outer.startNs)).toBe(true);
      expect(BigInt(inner.endNs) <= BigInt(outer.endNs)).toBe(true);
    }
  });

  it("traces an HTTP/2 request through both agents", async () => {
    const session = http2SessionFrom(client.netnsPath, VIP, 80);
    try {
      const status = await new Promise<number>((resolve, reject) => {
        const stream = session.request({ ":method": "GET", ":path": "/h2", "x-request-id": "h2" });
        stream.on("response", (h) => resolve(Number(h[":status"])));
        stream.on("error", reject);
        stream.resume();
        stream.end();
      });
      expect(status).toBe(200);
    } finally {
      session.close();
    }
    const found = await spansOf("h2", 4);
    const { aServer, aClient, bServer, bClient } = chain(found);
    expect(bServer.parentSpanId).toBe(aClient.spanId);
    expect(bClient.parentSpanId).toBe(bServer.spanId);
    for (const s of [aServer, aClient, bServer, bClient]) {
      expect(s.attributes).toMatchObject({
        "network.protocol.version": "2",
        "url.path": "/h2",
        "http.response.status_code": 200,
      });
    }
  });

  it("names a gRPC call's spans {package.Service}/{Method}, with its rpc attributes", async () => {
    const before = allSpans().length;
    const r = await world.exec(client, process.execPath, [
      GRPC_CLIENT,
      JSON.stringify({ target: `${VIP}:9090`, mode: "unary", calls: 1 }),
    ]);
    expect(r.code, r.stderr).toBe(0);
    let grpc: SinkSpan[] = [];
    await vi.waitFor(
      () => {
        grpc = allSpans()
          .slice(before)
          .filter((s) => s.attributes["rpc.system"] === "grpc");
        expect(grpc.length).toBeGreaterThanOrEqual(4);
      },
      { timeout: 15_000, interval: 100 },
    );
    expect(grpc).toHaveLength(4);
    const { aServer, bClient } = chain(grpc);
    for (const s of grpc) {
      expect(s.name).toMatch(/^[\w.]+\.\w+\/\w+$/);
      expect(s.name).toBe(`${s.attributes["rpc.service"]}/${s.attributes["rpc.method"]}`);
      expect(s.attributes).toMatchObject({
        "rpc.grpc.status_code": 0,
        "network.protocol.version": "2",
        "http.response.status_code": 200,
      });
    }
    expect(bClient.traceId).toBe(aServer.traceId);
  });

  it("continues a caller's sampled traceparent and B3 contexts, and makes no span for an unsampled caller at 0 %", async () => {
    await apply(policy("  tracing: { randomSamplingPercentage: 0 }\n"));
    const w3c = "4bf92f3577b34da6a3ce929d0e0e4736";
    const b3Single = "80f198ee56343ba864fe8b2a57d3eff7";
    const b3Multi = "463ac35c9f6413ad48485a3953bb6124";
    const callerSpan = "00f067aa0ba902b7";
    const answers = [
      await get("/unsampled-none", { "x-request-id": "unsampled-none" }),
      await get("/unsampled-w3c", {
        "x-request-id": "unsampled-w3c",
        traceparent: `00-${"1".repeat(32)}-${callerSpan}-00`,
      }),
      await get("/malformed", { "x-request-id": "malformed", traceparent: "00-nonsense-01", b3: "x-y-z" }),
      await get("/w3c", {
        "x-request-id": "w3c",
        traceparent: `00-${w3c}-${callerSpan}-01`,
        tracestate: "congo=t61rcWkgMzE",
      }),
      await get("/b3", { "x-request-id": "b3", b3: `${b3Single}-${callerSpan}-1` }),
      await get("/b3-multi", {
        "x-request-id": "b3-multi",
        "x-b3-traceid": b3Multi,
        "x-b3-spanid": callerSpan,
        "x-b3-sampled": "1",
      }),
    ];
    expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 200, 200, 200]);

    for (const [id, traceId] of [
      ["w3c", w3c],
      ["b3", b3Single],
      ["b3-multi", b3Multi],
    ] as const) {
      const found = await spansOf(id, 4);
      const { aServer, bClient } = chain(found);
      expect(found.map((s) => s.traceId)).toEqual([traceId, traceId, traceId, traceId]);
      expect(aServer.parentSpanId).toBe(callerSpan);
      const seen = await appSaw(`/${id}`);
      expect(seen?.traceparent).toBe(`00-${traceId}-${bClient.spanId}-01`);
      if (id === "w3c") {
        expect(aServer.traceState).toBe("congo=t61rcWkgMzE");
        expect(seen?.tracestate).toBe("congo=t61rcWkgMzE");
      }
      // B3 goes on in the form it came, naming B's attempt and its parent.
      if (id === "b3") expect(seen?.b3).toBe(`${traceId}-${bClient.spanId}-1-${bClient.parentSpanId}`);
      if (id === "b3-multi") {
        expect(seen).toMatchObject({ "x-b3-traceid": traceId, "x-b3-spanid": bClient.spanId, "x-b3-sampled": "1" });
      }
    }
    // Each worker exports at least every 5 s: what the unsampled requests would have made is out by now.
    await new Promise((resolve) => setTimeout(resolve, 6000));
    for (const id of ["unsampled-none", "unsampled-w3c", "malformed"]) expect(byRequest(id)).toEqual([]);
    // The decision travelled: the app got a traceparent saying "not sampled", for a trace the first agent started.
    const unsampled = (await appSaw("/unsampled-none"))?.traceparent;
    expect(unsampled).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/);
    // An unsampled trace is still one trace id, in both agents' access logs.
    expect(loggedTraceId(n1, "unsampled-none")).toBe(unsampled!.slice(3, 35));
    expect(loggedTraceId(n2, "unsampled-none")).toBe(unsampled!.slice(3, 35));
    expect((await appSaw("/unsampled-w3c"))?.traceparent).toBe(`00-${"1".repeat(32)}-${callerSpan}-00`);
    expect((await appSaw("/malformed"))?.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/);
  });

  it("shows a retried request's attempts as sibling CLIENT spans, with the backoffs as events", async () => {
    await apply(policy("  tracing: { randomSamplingPercentage: 100 }\n  retries: { attempts: 2, retryOn: [5xx] }\n"));
    await control({ failRate: 1, failStatus: 503 });
    try {
      expect((await get("/retried", { "x-request-id": "retried" })).status).toBe(503);
    } finally {
      await control({ failRate: 0 });
    }
    // node-1: the server span and 3 attempts; node-2: a server and a client span per attempt.
    const found = await spansOf("retried", 10);
    expect(found).toHaveLength(10);
    const on = (node: Node, kind: number) =>
      found.filter((s) => s.resource["k8s.node.name"] === node.name && s.kind === kind);
    const [aServer] = on(n1, SERVER);
    const attempts = on(n1, CLIENT).sort(
      (a, b) => Number(a.attributes["nodemesh.attempt"]) - Number(b.attributes["nodemesh.attempt"]),
    );
    expect(attempts.map((a) => a.attributes["nodemesh.attempt"])).toEqual([1, 2, 3]);
    for (const a of attempts) {
      expect(a.parentSpanId).toBe(aServer!.spanId);
      expect(a.attributes).toMatchObject({ "http.response.status_code": 503, "error.type": "503" });
      expect(a.status).toBe(2); // ERROR
    }
    expect(aServer!.attributes).toMatchObject({
      "nodemesh.retries": 2,
      "http.response.status_code": 503,
      "error.type": "503",
    });
    expect(aServer!.status).toBe(2);
    expect(aServer!.events.map((e) => e.name)).toEqual(["nodemesh.backoff", "nodemesh.backoff"]);
    for (const e of aServer!.events) {
      expect(e.attributes["nodemesh.retry_reason"]).toBe("503");
      expect(e.attributes["nodemesh.backoff_ms"]).toBeGreaterThanOrEqual(0);
      expect(e.attributes["nodemesh.backoff_ms"]).toBeLessThanOrEqual(250);
    }
    // Each attempt reached node-2 as a request of its own: a server span there, child of that attempt.
    const bServers = on(n2, SERVER);
    expect(bServers.map((s) => s.parentSpanId).sort()).toEqual(attempts.map((a) => a.spanId).sort());
    expect(
      on(n2, CLIENT)
        .map((s) => s.parentSpanId)
        .sort(),
    ).toEqual(bServers.map((s) => s.spanId).sort());
  });

  it("loses no request when the collector is down or slow, and counts the spans it drops", async () => {
    const dropped = async (node: Node, reason: string) =>
      metricSum(await metrics(node), "nodemesh_agent_spans_dropped_total", { reason });
    const send = async (n: number, tag: string) => {
      const answers: Answer[] = [];
      for (let i = 0; i < n; i++) answers.push(await get(`/${tag}`, { "x-request-id": `${tag}-${i}` }));
      return answers;
    };
    const summary = (answers: Answer[]) => {
      const ms = answers.map((a) => a.ms).sort((a, b) => a - b);
      return {
        statuses: [...new Set(answers.map((a) => a.status))],
        p50: ms[Math.floor(ms.length / 2)]!,
        max: ms.at(-1)!,
      };
    };
    const baseline = summary(await send(40, "baseline"));

    // Down: nothing listens on the collector's port.
    await sink.stop();
    const down = summary(await send(40, "down"));
    await vi.waitFor(
      async () => {
        expect(await dropped(n1, "export_failed")).toBeGreaterThan(0);
        expect(await dropped(n2, "export_failed")).toBeGreaterThan(0);
      },
      { timeout: 10_000, interval: 250 },
    );

    // Slow: the collector answers each export after 5 s (the agents give up after 2).
    sink = await startSink(5000);
    const slow = summary(await send(60, "slow"));
    await vi.waitFor(
      async () => {
        expect(await dropped(n1, "export_timeout")).toBeGreaterThan(0);
        expect(await dropped(n2, "export_timeout")).toBeGreaterThan(0);
      },
      { timeout: 15_000, interval: 250 },
    );
    console.log(
      `request latency (ms) with the collector up, down, slow: ${JSON.stringify({ baseline, down, slow })}; ` +
        `dropped on node-1: failed ${await dropped(n1, "export_failed")}, timed out ${await dropped(n1, "export_timeout")}`,
    );
    for (const s of [baseline, down, slow]) expect(s.statuses).toEqual([200]);
    // Never a wait on the collector: a request takes no export timeout (2 s), nor a slow answer (5 s).
    expect(down.max).toBeLessThan(1000);
    expect(slow.max).toBeLessThan(1000);
  });
});
