// The sample workload: one program that plays an application pod in tests, the demo and the
// benchmarks. It serves HTTP/1.1 and cleartext HTTP/2 (h2c) on one port, gRPC (echo.proto), a
// TCP echo port and "ident" TCP ports that greet with the pod name, and it injects latency and
// failures, changeable at runtime through `POST /_control`.
//
//   node test/workload/workload.ts --name reviews-1 --version v2 --fail-rate 0.1
//
// Listener ports, library vs CLI: `startWorkload()` starts only the listeners it is given a port
// for (0 = any free port, absent or null = off), so tests ask for exactly what they use and never
// collide. The CLI has a default port for each listener instead, and there 0 means off.

import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import os from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

/** Requests this workload has served (HTTP echo requests and gRPC calls), shown by `GET /_control`. */
export interface ServedCounts {
  http: number;
  grpc: number;
  /** The last HTTP echo requests as the app read them (newest last): what a test checks a proxy let through. */
  recent: { method: string; path: string; host: string; headers: Record<string, string | string[] | undefined> }[];
}

const RECENT_REQUESTS = 512;

/** What `/_control` reads and changes while the workload runs. */
export interface FaultSettings {
  /** Delay before each HTTP reply and each gRPC reply message. */
  latencyMs: number;
  /** Share (0..1) of HTTP requests and gRPC calls that fail. */
  failRate: number;
  /** HTTP status of an injected failure; gRPC calls fail with grpcStatusFor(failStatus). */
  failStatus: number;
}

export interface WorkloadOptions extends Partial<FaultSettings> {
  /** Pod name in every reply. Default: os.hostname(). */
  name?: string;
  /** Default: "v1". */
  version?: string;
  /** IPv4 address every listener binds. Default: "0.0.0.0". */
  host?: string;
  /** HTTP/1.1 + h2c. For every port: 0 = any free port, absent or null = listener off. */
  httpPort?: number | null;
  grpcPort?: number | null;
  tcpEchoPort?: number | null;
  /** Each port greets with `${name} ${port}\n`, then echoes. */
  tcpIdentPorts?: readonly number[];
  /** Pad HTTP reply bodies to at least this many bytes. Default: 0. */
  responseBytes?: number;
}

/** The bound ports of the listeners that are on. */
export interface WorkloadPorts {
  http?: number;
  grpc?: number;
  tcpEcho?: number;
  tcpIdent?: number[];
}

export interface Workload {
  readonly name: string;
  readonly version: string;
  readonly ports: WorkloadPorts;
  /** The settings in force now. */
  readonly settings: FaultSettings;
  /** Changes some settings (as `POST /_control` does) and returns the new ones. */
  configure(patch: Partial<FaultSettings>): FaultSettings;
  /** Stops every listener and drops open connections and calls. Idempotent. */
  close(): Promise<void>;
}

export const ECHO_PROTO_PATH = fileURLToPath(new URL("./echo.proto", import.meta.url));

export interface EchoRequest {
  message: string;
  count: number;
}

export interface EchoReply {
  pod: string;
  version: string;
  message: string;
  sequence: number;
}

let echoService: Promise<grpc.ServiceDefinition> | undefined;

/** The Echo service, for servers and for clients (`grpc.makeClientConstructor(service, "Echo")`). */
export function loadEchoService(): Promise<grpc.ServiceDefinition> {
  // defaults: an unset `count` arrives as 0, not undefined.
  echoService ??= protoLoader
    .load(ECHO_PROTO_PATH, { defaults: true })
    .then((definition) => definition["nodemesh.sample.Echo"] as grpc.ServiceDefinition);
  return echoService;
}

/** A typed Echo client; callers close() it. */
export interface EchoClient extends grpc.Client {
  Unary(request: Partial<EchoRequest>, callback: grpc.requestCallback<EchoReply>): grpc.ClientUnaryCall;
  ServerStream(request: Partial<EchoRequest>): grpc.ClientReadableStream<EchoReply>;
  BidiStream(): grpc.ClientDuplexStream<EchoRequest, EchoReply>;
}

/** A plaintext Echo client for `address` ("host:port"), for tests and benchmarks. */
export async function echoClient(address: string, options?: grpc.ClientOptions): Promise<EchoClient> {
  const Client = grpc.makeClientConstructor(await loadEchoService(), "Echo");
  return new Client(address, grpc.credentials.createInsecure(), options) as unknown as EchoClient;
}

const GRPC_STATUS_FOR_HTTP: Readonly<Record<number, grpc.status>> = {
  429: grpc.status.RESOURCE_EXHAUSTED,
  503: grpc.status.UNAVAILABLE,
  504: grpc.status.DEADLINE_EXCEEDED,
};

/** The gRPC status an injected failure carries, for an HTTP fail status. */
export function grpcStatusFor(httpStatus: number): grpc.status {
  return GRPC_STATUS_FOR_HTTP[httpStatus] ?? grpc.status.INTERNAL;
}

const DEFAULT_STREAM_REPLIES = 3;
/** Bounds one ServerStream call, whatever `count` asks. */
const MAX_STREAM_REPLIES = 10_000;
const CONTROL_BODY_LIMIT = 64 * 1024;
/**
 * Longer than a proxy's usual idle timeout, so the workload is not the side that closes an idle
 * keep-alive connection just as the mesh reuses it from its pool.
 */
const KEEP_ALIVE_TIMEOUT_MS = 65_000;
const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

export async function startWorkload(options: WorkloadOptions = {}): Promise<Workload> {
  const name = options.name ?? os.hostname();
  const version = options.version ?? "v1";
  const host = options.host ?? "0.0.0.0";
  const responseBytes = options.responseBytes ?? 0;
  if (!net.isIPv4(host)) throw new TypeError(`host must be an IPv4 address, got "${host}"`);
  if (!(Number.isInteger(responseBytes) && responseBytes >= 0)) {
    throw new RangeError(`responseBytes must be an integer >= 0, got ${responseBytes}`);
  }
  const served: ServedCounts = { http: 0, grpc: 0, recent: [] };
  let settings = checkSettings({
    latencyMs: options.latencyMs ?? 0,
    failRate: options.failRate ?? 0,
    failStatus: options.failStatus ?? 503,
  });
  const configure = (patch: Partial<FaultSettings>): FaultSettings => {
    settings = checkSettings({
      latencyMs: patch.latencyMs ?? settings.latencyMs,
      failRate: patch.failRate ?? settings.failRate,
      failStatus: patch.failStatus ?? settings.failStatus,
    });
    return settings;
  };

  const servers: net.Server[] = [];
  const sockets = new Set<net.Socket>();
  let grpcServer: grpc.Server | undefined;

  /** A TCP listener whose connections `close()` can drop. */
  const listenTcp = (port: number, onConnection: (socket: net.Socket) => void): Promise<number> => {
    // allowHalfOpen: a client that ends its side still gets the rest of the echo.
    const server = net.createServer({ allowHalfOpen: true }, (socket) => {
      sockets.add(socket);
      socket.once("close", () => sockets.delete(socket));
      // A peer that resets is routine here; the socket closes itself.
      socket.on("error", () => {});
      onConnection(socket);
    });
    servers.push(server);
    return new Promise((resolve, reject) => {
      server.once("error", reject);
      server.listen({ host, port }, () => {
        server.off("error", reject);
        resolve((server.address() as net.AddressInfo).port);
      });
    });
  };

  let closing: Promise<void> | undefined;
  const shutdown = async (): Promise<void> => {
    const closed = servers.map((server) => new Promise((resolve) => server.close(resolve)));
    for (const socket of sockets) socket.destroy();
    grpcServer?.forceShutdown();
    await Promise.all(closed);
  };
  const close = (): Promise<void> => {
    closing ??= shutdown();
    return closing;
  };

  const ports: WorkloadPorts = {};
  try {
    if (options.httpPort != null) {
      const handle = httpHandler(name, version, responseBytes, () => settings, configure, served);
      const h1 = http.createServer({ keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS }, handle);
      const h2 = http2.createServer(handle);
      ports.http = await listenTcp(options.httpPort, (socket) => routeByPreface(socket, h1, h2));
    }
    if (options.grpcPort != null) {
      grpcServer = new grpc.Server();
      grpcServer.addService(
        await loadEchoService(),
        echoHandlers(name, version, () => settings, served),
      );
      ports.grpc = await bindGrpc(grpcServer, `${host}:${options.grpcPort}`);
    }
    if (options.tcpEchoPort != null) {
      // pipe() gives backpressure, and ends our side once the client's end has been echoed.
      ports.tcpEcho = await listenTcp(options.tcpEchoPort, (socket) => socket.pipe(socket));
    }
    if (options.tcpIdentPorts?.length) {
      ports.tcpIdent = [];
      // One at a time, so a failure leaves no listen still pending when close() runs.
      for (const port of options.tcpIdentPorts) {
        const bound = await listenTcp(port, (socket) => {
          socket.write(`${name} ${socket.localPort}\n`);
          socket.pipe(socket);
        });
        ports.tcpIdent.push(bound);
      }
    }
  } catch (err) {
    await close();
    throw err;
  }

  return {
    name,
    version,
    ports,
    get settings() {
      return settings;
    },
    configure,
    close,
  };
}

function checkSettings(s: FaultSettings): FaultSettings {
  // typeof checks too: these values also arrive as JSON through /_control.
  if (!(typeof s.latencyMs === "number" && Number.isFinite(s.latencyMs) && s.latencyMs >= 0)) {
    throw new RangeError(`latencyMs must be a number >= 0, got ${JSON.stringify(s.latencyMs)}`);
  }
  if (!(typeof s.failRate === "number" && s.failRate >= 0 && s.failRate <= 1)) {
    throw new RangeError(`failRate must be a number from 0 to 1, got ${JSON.stringify(s.failRate)}`);
  }
  if (!(Number.isInteger(s.failStatus) && s.failStatus >= 400 && s.failStatus <= 599)) {
    throw new RangeError(`failStatus must be an HTTP error status (400-599), got ${JSON.stringify(s.failStatus)}`);
  }
  // Frozen: a request holds on to the settings it started with while /_control swaps in new ones.
  return Object.freeze({ latencyMs: s.latencyMs, failRate: s.failRate, failStatus: s.failStatus });
}

const shouldFail = (s: FaultSettings): boolean => Math.random() < s.failRate;
const delay = (ms: number): Promise<unknown> | undefined => (ms > 0 ? sleep(ms) : undefined);

// ---------------------------------------------------------------------------------------- HTTP

type HttpRequest = http.IncomingMessage | http2.Http2ServerRequest;
/** The part of a response the handler uses, common to HTTP/1.1's and HTTP/2's compatibility API. */
interface HttpResponse {
  writeHead(status: number, headers: http.OutgoingHttpHeaders): unknown;
  end(body: string): unknown;
  destroy(): unknown;
}

/** Hands a connection to the HTTP/2 server if it opens with the h2 preface, else to HTTP/1.1. */
function routeByPreface(socket: net.Socket, h1: http.Server, h2: http2.Http2Server): void {
  let head = Buffer.alloc(0);
  const onData = (chunk: Buffer) => {
    head = Buffer.concat([head, chunk]);
    const n = Math.min(head.length, H2_PREFACE.length);
    const isH2 = head.subarray(0, n).equals(H2_PREFACE.subarray(0, n));
    if (isH2 && n < H2_PREFACE.length) return; // too few bytes to tell yet
    socket.off("data", onData);
    socket.pause();
    socket.unshift(head);
    if (isH2) {
      // The HTTP/2 session reads the pushed-back bytes and then the socket's handle itself;
      // resuming the JS stream as well would steal frames from it.
      h2.emit("connection", socket);
      return;
    }
    h1.emit("connection", socket);
    // Resume once the HTTP/1.1 server has attached its listeners, so they see the first bytes.
    process.nextTick(() => socket.resume());
  };
  socket.on("data", onData);
}

/** One handler for both protocols: the HTTP/2 compatibility API mirrors HTTP/1.1's. */
function httpHandler(
  pod: string,
  version: string,
  responseBytes: number,
  current: () => FaultSettings,
  configure: (patch: Partial<FaultSettings>) => FaultSettings,
  served: ServedCounts,
): (req: HttpRequest, res: HttpResponse) => void {
  const send = (res: HttpResponse, status: number, body: string) => {
    res.writeHead(status, {
      "content-type": "application/json",
      "content-length": Buffer.byteLength(body),
      "x-pod": pod,
      "x-version": version,
    });
    res.end(body);
  };

  // Control requests skip the injected faults: a test must be able to turn them off again.
  const control = async (req: HttpRequest, res: HttpResponse) => {
    if (req.method === "POST") {
      try {
        configure(faultPatch(await readJson(req)));
      } catch (err) {
        return send(res, 400, JSON.stringify({ error: (err as Error).message }));
      }
    } else if (req.method !== "GET") {
      return send(res, 405, JSON.stringify({ error: "use GET or POST" }));
    }
    send(res, 200, JSON.stringify({ ...current(), served }));
  };

  const echo = async (req: HttpRequest, res: HttpResponse) => {
    served.http++;
    const host = req.headers.host ?? (req.headers as Record<string, string | undefined>)[":authority"] ?? "";
    served.recent.push({ method: req.method ?? "", path: req.url ?? "", host, headers: req.headers });
    if (served.recent.length > RECENT_REQUESTS) served.recent.shift();
    const settings = current();
    let bodyBytes = 0;
    for await (const chunk of req) bodyBytes += (chunk as Buffer).length;
    await delay(settings.latencyMs);
    const failed = shouldFail(settings);
    const reply = {
      pod,
      version,
      protocol: req.httpVersionMajor === 2 ? "h2" : `http/${req.httpVersion}`,
      method: req.method,
      path: req.url,
      requestId: singleHeader(req.headers["x-request-id"]),
      // The caller's identity as the mesh vouches for it (mTLS), when it does.
      ...(req.headers["x-forwarded-client-cert"] && {
        clientCert: singleHeader(req.headers["x-forwarded-client-cert"]),
      }),
      bodyBytes,
      ...(failed && { error: true }),
    };
    send(res, failed ? settings.failStatus : 200, padded(JSON.stringify(reply), responseBytes));
  };

  return (req, res) => {
    const work = req.url?.split("?")[0] === "/_control" ? control(req, res) : echo(req, res);
    // Only a client that went away mid-request gets here; drop what is left of the exchange.
    work.catch(() => res.destroy());
  };
}

/** Adds a `padding` field to a JSON object text until it is at least `bytes` long. */
function padded(json: string, bytes: number): string {
  const missing = bytes - Buffer.byteLength(json);
  if (missing <= 0) return json;
  const fill = Math.max(0, missing - ',"padding":""'.length); // the field itself counts toward the size
  return `${json.slice(0, -1)},"padding":"${"x".repeat(fill)}"}`;
}

function singleHeader(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

async function readJson(req: HttpRequest): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > CONTROL_BODY_LIMIT) throw new RangeError(`control body over ${CONTROL_BODY_LIMIT} bytes`);
    chunks.push(chunk as Buffer);
  }
  return JSON.parse(Buffer.concat(chunks).toString("utf8"));
}

const FAULT_KEYS: readonly string[] = ["latencyMs", "failRate", "failStatus"];

/** A `/_control` body; unknown keys are refused, so a typo cannot silently change nothing. */
function faultPatch(body: unknown): Partial<FaultSettings> {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw new TypeError("expected a JSON object like {latencyMs, failRate, failStatus}");
  }
  const unknown = Object.keys(body).filter((key) => !FAULT_KEYS.includes(key));
  if (unknown.length > 0) throw new TypeError(`unknown settings: ${unknown.join(", ")}`);
  return body as Partial<FaultSettings>; // value types are checked by checkSettings
}

// ---------------------------------------------------------------------------------------- gRPC

function bindGrpc(server: grpc.Server, address: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (err, port) =>
      err ? reject(err) : resolve(port),
    );
  });
}

function echoHandlers(
  pod: string,
  version: string,
  current: () => FaultSettings,
  served: ServedCounts,
): grpc.UntypedServiceImplementation {
  const reply = (message: string, sequence: number): EchoReply => ({ pod, version, message, sequence });
  const failure = (s: FaultSettings): Partial<grpc.StatusObject> => ({
    code: grpcStatusFor(s.failStatus),
    details: `injected failure (HTTP ${s.failStatus})`,
  });
  // grpc-js ignores a handler's promise. A call cancelled mid-stream rejects the stream's
  // iterator, which is expected and must not become an unhandled rejection.
  const detached =
    <A extends unknown[]>(handler: (...args: A) => Promise<void>) =>
    (...args: A): void => {
      served.grpc++;
      handler(...args).catch(() => {});
    };

  return {
    Unary: detached(async (call: grpc.ServerUnaryCall<EchoRequest, EchoReply>, done: grpc.sendUnaryData<EchoReply>) => {
      const s = current();
      await delay(s.latencyMs);
      if (shouldFail(s)) done(failure(s));
      else done(null, reply(call.request.message, 1));
    }),

    // Latency applies before each reply message; the failure decision is made once per call.
    ServerStream: detached(async (call: grpc.ServerWritableStream<EchoRequest, EchoReply>) => {
      const s = current();
      if (shouldFail(s)) {
        await delay(s.latencyMs);
        call.emit("error", failure(s));
        return;
      }
      const count = Math.min(call.request.count > 0 ? call.request.count : DEFAULT_STREAM_REPLIES, MAX_STREAM_REPLIES);
      for (let sequence = 1; sequence <= count; sequence++) {
        await delay(s.latencyMs);
        if (call.cancelled) return;
        call.write(reply(call.request.message, sequence));
      }
      call.end();
    }),

    BidiStream: detached(async (call: grpc.ServerDuplexStream<EchoRequest, EchoReply>) => {
      const s = current();
      if (shouldFail(s)) {
        await delay(s.latencyMs);
        call.emit("error", failure(s));
        return;
      }
      let sequence = 0;
      for await (const request of call as AsyncIterable<EchoRequest>) {
        await delay(s.latencyMs);
        call.write(reply(request.message, ++sequence));
      }
      call.end();
    }),
  };
}

// ----------------------------------------------------------------------------------------- CLI

const USAGE = `Usage: node test/workload/workload.ts [flags]

A sample application pod for nodemesh tests, demos and benchmarks.

  --name NAME             pod name in every reply (default: the hostname)
  --version VERSION       version in every reply (default: v1)
  --host ADDRESS          IPv4 address to bind (default: 0.0.0.0)
  --http-port PORT        HTTP/1.1 and h2c on one port, 0 = off (default: 8080)
  --grpc-port PORT        gRPC nodemesh.sample.Echo, 0 = off (default: 9090)
  --tcp-echo-port PORT    TCP echo, 0 = off (default: 7070)
  --tcp-ident-ports LIST  ports that greet with "NAME PORT\\n", then echo, e.g. 20000-20499,30000
  --latency-ms MS         delay before each HTTP reply and gRPC reply message (default: 0)
  --fail-rate RATE        share (0..1) of HTTP requests and gRPC calls that fail (default: 0)
  --fail-status STATUS    HTTP status of a failure; gRPC gets UNAVAILABLE for 503,
                          RESOURCE_EXHAUSTED for 429, DEADLINE_EXCEEDED for 504, else INTERNAL
                          (default: 503)
  --response-bytes BYTES  pad HTTP reply bodies to at least BYTES (default: 0)
  --help                  print this help

GET /_control shows latencyMs, failRate, failStatus, the requests served so far and the last 512 HTTP requests; POST /_control {"failRate":0.5} changes them.
Once every listener is up, prints one line on stdout, with the ports of the listeners that are on:
  {"event":"ready","name":...,"version":...,"ports":{"http":8080,"grpc":9090,"tcpEcho":7070,"tcpIdent":[...]}}
SIGTERM or SIGINT closes the listeners and exits 0.
`;

/** Reads the CLI flags into options, or "help" for --help. Throws on a bad flag. */
export function parseCli(args: string[]): WorkloadOptions | "help" {
  const flag = { type: "string" } as const;
  const { values } = parseArgs({
    args,
    strict: true,
    options: {
      name: flag,
      version: flag,
      host: flag,
      "http-port": flag,
      "grpc-port": flag,
      "tcp-echo-port": flag,
      "tcp-ident-ports": flag,
      "latency-ms": flag,
      "fail-rate": flag,
      "fail-status": flag,
      "response-bytes": flag,
      help: { type: "boolean" },
    },
  });
  if (values.help) return "help";

  // Ranges are checked by startWorkload and listen(); here only "is it a number".
  const number = (name: keyof typeof values, fallback: number): number => {
    const text = values[name];
    if (typeof text !== "string") return fallback;
    const value = Number(text);
    if (text.trim() === "" || !Number.isFinite(value)) throw new TypeError(`--${name} must be a number, got "${text}"`);
    return value;
  };
  const port = (name: keyof typeof values, fallback: number): number | null => number(name, fallback) || null;

  return {
    name: values.name,
    version: values.version,
    host: values.host,
    httpPort: port("http-port", 8080),
    grpcPort: port("grpc-port", 9090),
    tcpEchoPort: port("tcp-echo-port", 7070),
    tcpIdentPorts: values["tcp-ident-ports"] === undefined ? undefined : parsePortList(values["tcp-ident-ports"]),
    latencyMs: number("latency-ms", 0),
    failRate: number("fail-rate", 0),
    failStatus: number("fail-status", 503),
    responseBytes: number("response-bytes", 0),
  };
}

/** "20000-20499,30000" → [20000, ..., 20499, 30000]. */
export function parsePortList(text: string): number[] {
  const ports: number[] = [];
  for (const item of text.split(",")) {
    const match = /^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$/.exec(item);
    const first = Number(match?.[1]);
    const last = Number(match?.[2] ?? match?.[1]);
    if (!match || first < 1 || last > 65535 || first > last) {
      throw new RangeError(`bad port or range "${item}" in "${text}" (want e.g. 20000-20499,30000)`);
    }
    for (let port = first; port <= last; port++) ports.push(port);
  }
  return ports;
}

async function main(args: string[]): Promise<void> {
  let options: WorkloadOptions | "help";
  try {
    options = parseCli(args);
  } catch (err) {
    process.stderr.write(`workload: ${(err as Error).message}\n\n${USAGE}`);
    process.exit(2);
  }
  if (options === "help") {
    process.stdout.write(USAGE);
    return;
  }
  const workload = await startWorkload(options).catch((err: Error) => {
    process.stderr.write(`workload: ${err.message}\n`);
    process.exit(1);
  });
  const { name, version, ports } = workload;
  process.stdout.write(`${JSON.stringify({ event: "ready", name, version, ports })}\n`);
  const stop = () => void workload.close().then(() => process.exit(0));
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
}

if (import.meta.main) await main(process.argv.slice(2));
