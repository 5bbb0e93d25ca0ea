import { type ChildProcess, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { once } from "node:events";
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import { describe, expect, it, onTestFinished } from "vitest";
import { freePort } from "../free-port.ts";
import {
  type EchoClient,
  type EchoReply,
  echoClient,
  parseCli,
  parsePortList,
  startWorkload,
  type Workload,
  type WorkloadOptions,
} from "./workload.ts";

const HOST = "127.0.0.1";
const WORKLOAD_FILE = fileURLToPath(new URL("./workload.ts", import.meta.url));

/** A workload on loopback, closed when the test ends, pass or fail. */
async function start(options: WorkloadOptions): Promise<Workload> {
  const workload = await startWorkload({ name: "pod-a", version: "v2", host: HOST, ...options });
  onTestFinished(() => workload.close());
  return workload;
}

interface HttpResult {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
  json: Record<string, unknown>;
  reusedSocket: boolean;
  ms: number;
}

function request(
  port: number,
  path: string,
  init: { method?: string; headers?: http.OutgoingHttpHeaders; body?: string; agent?: http.Agent } = {},
): Promise<HttpResult> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const req = http.request({ host: HOST, port, path, method: init.method, headers: init.headers, agent: init.agent });
    req.on("error", reject);
    req.on("response", async (res) => {
      let body = "";
      for await (const chunk of res.setEncoding("utf8")) body += chunk;
      const { statusCode = 0, headers } = res;
      const ms = performance.now() - started;
      resolve({ status: statusCode, headers, body, json: JSON.parse(body), reusedSocket: req.reusedSocket, ms });
    });
    req.end(init.body);
  });
}

const controlPost = (port: number, body: unknown) =>
  request(port, "/_control", { method: "POST", body: typeof body === "string" ? body : JSON.stringify(body) });

/** Writes `payload`, half-closes, and returns everything received until the server ends. */
async function tcpExchange(port: number, payload: Buffer | string): Promise<Buffer> {
  const socket = net.connect({ host: HOST, port, allowHalfOpen: true });
  onTestFinished(() => void socket.destroy());
  const received: Buffer[] = [];
  socket.on("data", (chunk: Buffer) => received.push(chunk));
  socket.end(payload);
  await once(socket, "end"); // the server ended its side after echoing ours
  return Buffer.concat(received);
}

async function grpcClient(port: number): Promise<EchoClient> {
  const client = await echoClient(`${HOST}:${port}`);
  onTestFinished(() => client.close());
  return client;
}

function unary(client: EchoClient, message: string): Promise<EchoReply> {
  return new Promise((resolve, reject) => {
    client.Unary({ message }, (err, reply) => (err ? reject(err) : resolve(reply!)));
  });
}

async function collect<T>(stream: AsyncIterable<T>): Promise<T[]> {
  const items: T[] = [];
  for await (const item of stream) items.push(item);
  return items;
}

const sha256 = (data: Buffer) => createHash("sha256").update(data).digest("hex");

describe("HTTP", () => {
  it("answers HTTP/1.1 with the pod's identity and reuses a keep-alive connection", async () => {
    const { ports } = await start({ httpPort: 0 });
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    onTestFinished(() => agent.destroy());

    const first = await request(ports.http!, "/reviews/1?x=1", { agent, headers: { "x-request-id": "req-42" } });
    expect(first.status).toBe(200);
    expect(first.headers["content-type"]).toBe("application/json");
    expect(first.headers["x-pod"]).toBe("pod-a");
    expect(first.headers["x-version"]).toBe("v2");
    expect(first.json).toEqual({
      pod: "pod-a",
      version: "v2",
      protocol: "http/1.1",
      method: "GET",
      path: "/reviews/1?x=1",
      requestId: "req-42",
      bodyBytes: 0,
    });

    const second = await request(ports.http!, "/upload", { agent, method: "POST", body: "x".repeat(5000) });
    expect(second.reusedSocket).toBe(true);
    expect(second.json).toMatchObject({ method: "POST", path: "/upload", bodyBytes: 5000 });
    expect(second.json).not.toHaveProperty("requestId");
  });

  it("pads reply bodies to --response-bytes", async () => {
    const { ports } = await start({ httpPort: 0, responseBytes: 2000 });
    const reply = await request(ports.http!, "/");
    expect(Buffer.byteLength(reply.body)).toBeGreaterThanOrEqual(2000);
    expect(Number(reply.headers["content-length"])).toBe(Buffer.byteLength(reply.body));
    expect(reply.json).toMatchObject({ pod: "pod-a", padding: expect.stringMatching(/^x+$/) });
  });

  it("tells HTTP/1.1 from HTTP/2 when the first bytes arrive in pieces", async () => {
    const { ports } = await start({ httpPort: 0 });
    const socket = net.connect({ host: HOST, port: ports.http! });
    onTestFinished(() => void socket.destroy());
    socket.setNoDelay(true);
    // "P" could still start the HTTP/2 preface; only the next bytes show it is HTTP/1.1.
    socket.write("P");
    await new Promise((resolve) => setTimeout(resolve, 50));
    socket.end("UT /late HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
    let response = "";
    for await (const chunk of socket.setEncoding("utf8")) response += chunk;
    expect(response).toMatch(/^HTTP\/1.1 200 /);
    expect(JSON.parse(response.slice(response.indexOf("\r\n\r\n")))).toMatchObject({
      method: "PUT",
      path: "/late",
      bodyBytes: 2,
    });
  });

  it("answers cleartext HTTP/2 (prior knowledge) on the same port", async () => {
    const { ports } = await start({ httpPort: 0 });
    const session = http2.connect(`http://${HOST}:${ports.http}`);
    onTestFinished(() => void session.destroy());

    const ask = async (headers: http2.OutgoingHttpHeaders, body?: string) => {
      const stream = session.request(headers);
      stream.end(body);
      const [response] = (await once(stream, "response")) as [http2.IncomingHttpHeaders];
      let text = "";
      for await (const chunk of stream.setEncoding("utf8")) text += chunk;
      return { response, json: JSON.parse(text) };
    };
    const get = await ask({ ":path": "/ratings", "x-request-id": "h2-1" });
    expect(get.response[":status"]).toBe(200);
    expect(get.response["x-pod"]).toBe("pod-a");
    expect(get.json).toMatchObject({
      pod: "pod-a",
      protocol: "h2",
      method: "GET",
      path: "/ratings",
      requestId: "h2-1",
    });
    // A second stream on the same session.
    const post = await ask({ ":method": "POST", ":path": "/p" }, "hello");
    expect(post.json).toMatchObject({ protocol: "h2", method: "POST", bodyBytes: 5 });
  });
});

describe("gRPC", () => {
  it("serves unary, server-streaming and bidi calls", async () => {
    const { ports } = await start({ grpcPort: 0 });
    const client = await grpcClient(ports.grpc!);

    expect(await unary(client, "hi")).toEqual({ pod: "pod-a", version: "v2", message: "hi", sequence: 1 });

    const defaults = await collect<EchoReply>(client.ServerStream({ message: "s" }));
    expect(defaults.map((r) => r.sequence)).toEqual([1, 2, 3]);
    const five = await collect<EchoReply>(client.ServerStream({ message: "s", count: 5 }));
    expect(five.map((r) => [r.message, r.sequence])).toEqual([1, 2, 3, 4, 5].map((n) => ["s", n]));

    const bidi = client.BidiStream();
    const replies = collect<EchoReply>(bidi);
    for (const message of ["a", "b", "c"]) bidi.write({ message, count: 0 });
    bidi.end();
    expect((await replies).map((r) => [r.pod, r.message, r.sequence])).toEqual([
      ["pod-a", "a", 1],
      ["pod-a", "b", 2],
      ["pod-a", "c", 3],
    ]);
  });

  it("survives a client that cancels a bidi call", async () => {
    const { ports } = await start({ grpcPort: 0 });
    const client = await grpcClient(ports.grpc!);
    const bidi = client.BidiStream();
    bidi.on("error", () => {}); // the cancellation itself
    bidi.write({ message: "first", count: 0 });
    await once(bidi, "data");
    bidi.cancel();
    expect((await unary(client, "still there")).message).toBe("still there");
  });
});

describe("TCP", () => {
  it("echoes 1 MiB intact and ends after the client half-closes", async () => {
    const { ports } = await start({ tcpEchoPort: 0 });
    const payload = randomBytes(1024 * 1024);
    const echoed = await tcpExchange(ports.tcpEcho!, payload);
    expect(echoed.length).toBe(payload.length);
    expect(sha256(echoed)).toBe(sha256(payload));
  });

  it("greets on ident ports with the pod name and local port, then echoes", async () => {
    const { ports } = await start({ tcpIdentPorts: [0, 0] });
    expect(ports.tcpIdent).toHaveLength(2);
    for (const port of ports.tcpIdent!) {
      expect((await tcpExchange(port, "ping")).toString()).toBe(`pod-a ${port}\nping`);
    }
  });
});

describe("fault injection", () => {
  it("fails every HTTP request with the fail status at fail-rate 1", async () => {
    const { ports } = await start({ httpPort: 0, failRate: 1, failStatus: 429 });
    const reply = await request(ports.http!, "/x");
    expect(reply.status).toBe(429);
    expect(reply.headers["x-pod"]).toBe("pod-a");
    expect(reply.json).toMatchObject({ pod: "pod-a", path: "/x", error: true });
  });

  it("maps the fail status to a gRPC status", async () => {
    const workload = await start({ grpcPort: 0, failRate: 1 });
    const client = await grpcClient(workload.ports.grpc!);
    const cases: [number, grpc.status][] = [
      [503, grpc.status.UNAVAILABLE],
      [429, grpc.status.RESOURCE_EXHAUSTED],
      [504, grpc.status.DEADLINE_EXCEEDED],
      [500, grpc.status.INTERNAL],
      [502, grpc.status.INTERNAL],
    ];
    for (const [failStatus, code] of cases) {
      workload.configure({ failStatus });
      await expect(unary(client, "x")).rejects.toMatchObject({ code });
    }
    await expect(collect(client.ServerStream({ message: "x" }))).rejects.toMatchObject({ code: grpc.status.INTERNAL });
  });

  it("adds latency-ms before HTTP and gRPC replies", async () => {
    const latencyMs = 150;
    const { ports } = await start({ httpPort: 0, grpcPort: 0, latencyMs });
    // Timers have millisecond resolution; allow that much rounding.
    expect((await request(ports.http!, "/slow")).ms).toBeGreaterThanOrEqual(latencyMs - 1);
    const client = await grpcClient(ports.grpc!);
    const started = performance.now();
    await unary(client, "slow");
    expect(performance.now() - started).toBeGreaterThanOrEqual(latencyMs - 1);
  });

  it("changes settings at runtime through /_control", async () => {
    const { ports } = await start({ httpPort: 0 });
    const port = ports.http!;
    const served = (http: number) => ({ http, grpc: 0, recent: expect.any(Array) });
    expect((await request(port, "/_control")).json).toEqual({
      latencyMs: 0,
      failRate: 0,
      failStatus: 503,
      served: served(0),
    });

    const update = await controlPost(port, { failRate: 1, failStatus: 504 });
    expect(update.json).toEqual({ latencyMs: 0, failRate: 1, failStatus: 504, served: served(0) });
    expect((await request(port, "/a")).status).toBe(504);

    // Control requests never fail, so faults can always be turned off again.
    expect((await controlPost(port, { failRate: 0, latencyMs: 100 })).status).toBe(200);
    const slow = await request(port, "/a");
    expect(slow.status).toBe(200);
    expect(slow.ms).toBeGreaterThanOrEqual(99);

    for (const bad of [{ latency: 5 }, { failRate: 2 }, { failStatus: "503" }, "not json", [1]]) {
      const refused = await controlPost(port, bad);
      expect(refused.status).toBe(400);
      expect(refused.json.error).toEqual(expect.any(String));
    }
    // Control requests are not counted as served; the two /a requests are.
    const after = (await request(port, "/_control")).json as { served: { recent: { method: string; path: string }[] } };
    expect(after).toEqual({
      latencyMs: 100,
      failRate: 0,
      failStatus: 504,
      served: served(2),
    });
    expect(after.served.recent.map((r: { method: string; path: string }) => `${r.method} ${r.path}`)).toEqual([
      "GET /a",
      "GET /a",
    ]);
  });
});

describe("lifecycle", () => {
  it("close() drops open connections and frees every port", async () => {
    const workload = await start({ httpPort: 0, grpcPort: 0, tcpEchoPort: 0, tcpIdentPorts: [0] });
    const { http: httpPort, grpc: grpcPort, tcpEcho, tcpIdent } = workload.ports;
    const agent = new http.Agent({ keepAlive: true });
    onTestFinished(() => agent.destroy());
    await request(httpPort!, "/", { agent }); // leaves an idle keep-alive connection open
    const session = http2.connect(`http://${HOST}:${httpPort}`);
    onTestFinished(() => void session.destroy());
    await once(session, "connect");
    const idle = net.connect({ host: HOST, port: tcpEcho! });
    onTestFinished(() => void idle.destroy());
    await once(idle, "connect");

    await workload.close();
    await workload.close(); // idempotent
    for (const port of [httpPort!, grpcPort!, tcpEcho!, ...tcpIdent!]) {
      const probe = net.connect({ host: HOST, port });
      await expect(once(probe, "connect")).rejects.toMatchObject({ code: "ECONNREFUSED" });
    }
  });

  it("rejects, closing what it started, when a port is taken", async () => {
    const taken = net.createServer().listen(0, HOST);
    onTestFinished(() => void taken.close());
    await once(taken, "listening");
    const { port } = taken.address() as net.AddressInfo;
    await expect(startWorkload({ host: HOST, httpPort: 0, tcpEchoPort: port })).rejects.toMatchObject({
      code: "EADDRINUSE",
    });
  });
});

describe("CLI", () => {
  function run(args: string[]): ChildProcess & { stderrText: () => string } {
    const child = spawn(process.execPath, [WORKLOAD_FILE, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    onTestFinished(() => void (child.exitCode === null && child.signalCode === null && child.kill("SIGKILL")));
    let stderr = "";
    child.stderr.setEncoding("utf8").on("data", (text: string) => (stderr += text));
    return Object.assign(child, { stderrText: () => stderr });
  }

  it("prints one ready line, serves, and exits 0 on SIGTERM", async () => {
    const httpPort = await freePort(HOST);
    const args = ["--name", "cli-pod", "--version", "v9", "--host", HOST, "--http-port", String(httpPort)];
    const child = run([...args, "--grpc-port", "0", "--tcp-echo-port", "0"]);
    const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();

    const { value: ready } = await lines.next();
    expect(ready, `no ready line; stderr: ${child.stderrText()}`).toBeTypeOf("string");
    expect(JSON.parse(ready ?? "")).toEqual({
      event: "ready",
      name: "cli-pod",
      version: "v9",
      ports: { http: httpPort },
    });
    expect((await request(httpPort, "/")).json).toMatchObject({ pod: "cli-pod", version: "v9" });

    const exited = once(child, "exit");
    child.kill("SIGTERM");
    expect(await exited).toEqual([0, null]);
    expect((await lines.next()).done).toBe(true); // nothing else on stdout
  });

  it("prints help, and refuses unknown flags", async () => {
    const help = run(["--help"]);
    let usage = "";
    for await (const text of help.stdout!.setEncoding("utf8")) usage += text;
    for (const flag of [
      "--name",
      "--http-port",
      "--grpc-port",
      "--tcp-ident-ports",
      "--fail-rate",
      "--response-bytes",
    ]) {
      expect(usage).toContain(flag);
    }
    const bad = run(["--bogus"]);
    expect(await once(bad, "exit")).toEqual([2, null]);
    expect(bad.stderrText()).toContain("--bogus");
  });

  it("maps flags to options: defaults per listener, 0 = off, port lists", () => {
    expect(parseCli([])).toMatchObject({ httpPort: 8080, grpcPort: 9090, tcpEchoPort: 7070, failStatus: 503 });
    expect(
      parseCli(["--http-port", "0", "--tcp-ident-ports", "20000-20002,30000", "--fail-rate", "0.5"]),
    ).toMatchObject({ httpPort: null, tcpIdentPorts: [20000, 20001, 20002, 30000], failRate: 0.5 });
    expect(parseCli(["--help"])).toBe("help");
    expect(() => parseCli(["--latency-ms", "soon"])).toThrow(/--latency-ms/);
    expect(() => parsePortList("20-10")).toThrow(RangeError);
    expect(() => parsePortList("70000")).toThrow(RangeError);
  });
});
