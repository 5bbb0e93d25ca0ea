// The bad-input corpus's drivers (test/corpus/): each sends one case to its target in the live
// world and describes what came back as outcome tokens (test/corpus/corpus.ts). They never
// throw for what the peer does (a reset, a close, silence): that is an outcome too.

import { createHmac } from "node:crypto";
import http2 from "node:http2";
import type net from "node:net";
import tls from "node:tls";
import type { AgentMessage } from "../../../api/agent-service.ts";
import { agentServiceDefinition } from "../../../api/agent-service.ts";
import {
  type ControllerGrpcCase,
  type EnrollmentCase,
  encodeConnection,
  expand,
  expandDeep,
  grpcMessages,
  H2_ERROR_NAMES,
  H2_PREFACE,
  type H2Case,
  type Http1Case,
  type RestCase,
  type TunnelCase,
} from "../../corpus/corpus.ts";
import { connectFrom } from "../netns-client.ts";
import { HpackDecoder } from "./hpack.ts";

export interface Exchanged {
  data: Buffer;
  /** The peer closed (or reset) the connection within the wait. */
  closed: boolean;
  /** The connection could not be made, or was reset. */
  error?: string;
}

/**
 * Sends `bytes` on a connection from `netnsPath` (then half-closes with `end`) and reads until the
 * peer closes, `stop` says enough, or `waitMs` pass.
 */
export async function exchange(
  netnsPath: string,
  ip: string,
  port: number,
  bytes: Buffer,
  opts: { waitMs: number; end?: boolean; stop?: (data: Buffer) => boolean },
): Promise<Exchanged> {
  let socket: net.Socket;
  try {
    socket = await connectFrom(netnsPath, ip, port);
  } catch (err) {
    return { data: Buffer.alloc(0), closed: true, error: (err as NodeJS.ErrnoException).code ?? "connect-failed" };
  }
  return exchangeOn(socket, bytes, opts);
}

export function exchangeOn(
  socket: net.Socket,
  bytes: Buffer,
  opts: { waitMs: number; end?: boolean; stop?: (data: Buffer) => boolean },
): Promise<Exchanged> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let error: string | undefined;
    const done = (closed: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ data: Buffer.concat(chunks), closed, ...(error ? { error } : {}) });
    };
    const timer = setTimeout(() => done(false), opts.waitMs);
    socket.on("data", (c: Buffer) => {
      chunks.push(c);
      if (opts.stop?.(Buffer.concat(chunks))) done(false);
    });
    socket.on("error", (err: NodeJS.ErrnoException) => {
      error = err.code ?? err.message;
    });
    socket.on("close", () => done(true));
    socket.resume();
    if (opts.end) socket.end(bytes);
    else socket.write(bytes);
  });
}

/** Tokens of an HTTP/1.x answer stream: status, X-Nodemesh-Error, how many answers, closed or open. */
export function http1Tokens(x: Exchanged): string[] {
  const text = x.data.toString("latin1");
  const tokens: string[] = [x.closed ? "closed" : "open"];
  if (x.error) tokens.push(`error:${x.error}`);
  if (text.length === 0) tokens.push("none");
  const statuses = [...text.matchAll(/HTTP\/1\.[01] (\d{3}) /g)].map((m) => m[1]);
  tokens.push(`answers:${statuses.length}`);
  if (statuses[0]) tokens.push(`status:${statuses[0]}`);
  else if (text.length > 0) tokens.push("not-http");
  const nmError = /\r\nx-nodemesh-error: *([A-Z_]+)/i.exec(text)?.[1];
  if (nmError) tokens.push(`error:${nmError}`);
  return tokens;
}

/** Every token and the body of the first answer (for `expect.message`). */
export interface Outcome {
  tokens: string[];
  text: string;
}

// ---- HTTP/1.1 ----

export function sendHttp1(from: string, ip: string, port: number, c: Http1Case, vars: Record<string, string>) {
  return exchange(from, ip, port, Buffer.from(expand(c.send, vars), "latin1"), { waitMs: c.waitMs ?? 2000 });
}

// ---- HTTP/2 ----

interface ParsedFrame {
  type: number;
  flags: number;
  stream: number;
  payload: Buffer;
}

function splitFrames(data: Buffer): ParsedFrame[] {
  const frames: ParsedFrame[] = [];
  let at = 0;
  while (data.length - at >= 9) {
    const length = data.readUIntBE(at, 3);
    if (data.length - at < 9 + length) break;
    frames.push({
      type: data[at + 3]!,
      flags: data[at + 4]!,
      stream: data.readUInt32BE(at + 5) & 0x7fffffff,
      payload: data.subarray(at + 9, at + 9 + length),
    });
    at += 9 + length;
  }
  return frames;
}

/**
 * When the client has seen enough: a GOAWAY, or an end (a reset, or an answer's END_STREAM) of
 * every stream it opened and did not reset itself. Without such streams, only a GOAWAY (or the
 * peer's close, or the wait) ends the exchange.
 */
function h2Decided(sent: Buffer): (data: Buffer) => boolean {
  const preface = Buffer.from(H2_PREFACE, "latin1");
  const frames = splitFrames(sent.subarray(sent.subarray(0, preface.length).equals(preface) ? preface.length : 0));
  const reset = new Set(frames.filter((f) => f.type === 3).map((f) => f.stream));
  const open = new Set(frames.filter((f) => f.type === 1 && f.stream > 0 && !reset.has(f.stream)).map((f) => f.stream));
  return (data) => {
    const answers = splitFrames(data);
    if (answers.some((f) => f.type === 7)) return true;
    const ended = new Set(
      answers.filter((f) => f.type === 3 || ((f.type === 0 || f.type === 1) && f.flags & 0x1)).map((f) => f.stream),
    );
    return open.size > 0 && [...open].every((s) => ended.has(s));
  };
}

const errorName = (code: number) => H2_ERROR_NAMES[code] ?? `0x${code.toString(16)}`;

/** Tokens of an HTTP/2 answer: goaway:/rst: with their error, status:, grpc:, data, closed or open. */
export function h2Tokens(x: Exchanged): Outcome {
  const tokens: string[] = [x.closed ? "closed" : "open"];
  if (x.error) tokens.push(`error:${x.error}`);
  if (x.data.length === 0) tokens.push("none");
  const decoder = new HpackDecoder();
  let block: Buffer[] = [];
  let text = "";
  for (const f of splitFrames(x.data)) {
    if (f.type === 7 && f.payload.length >= 8) {
      tokens.push(`goaway:${errorName(f.payload.readUInt32BE(4))}`);
      text += f.payload.subarray(8).toString("latin1");
    } else if (f.type === 3 && f.payload.length >= 4) tokens.push(`rst:${errorName(f.payload.readUInt32BE(0))}`);
    else if (f.type === 0 && f.stream > 0) {
      tokens.push("data");
      text += f.payload.toString("latin1");
    } else if (f.type === 1 || f.type === 9) {
      let payload = f.payload;
      if (f.type === 1) {
        const pad = f.flags & 0x8 ? payload[0]! : 0;
        payload = payload.subarray(f.flags & 0x8 ? 1 : 0, payload.length - pad);
        if (f.flags & 0x20) payload = payload.subarray(5);
      }
      block.push(payload);
      if (f.flags & 0x4) {
        try {
          for (const [name, value] of decoder.decode(Buffer.concat(block))) {
            if (name === ":status") tokens.push(`status:${value}`);
            if (name === "grpc-status") tokens.push(`grpc:${value}`);
            if (name === "grpc-message") text += decodeURIComponent(value);
            if (name === "x-nodemesh-error") tokens.push(`error:${value}`);
          }
        } catch {
          tokens.push("hpack-error");
        }
        block = [];
      }
    }
  }
  return { tokens, text };
}

export async function sendH2(from: string, ip: string, port: number, c: H2Case, vars: Record<string, string>) {
  const bytes = encodeConnection(c.preface, c.frames, vars);
  return h2Tokens(await exchange(from, ip, port, bytes, { waitMs: c.waitMs ?? 2000, stop: h2Decided(bytes) }));
}

// ---- the tunnel port ----

/** `<ms>.<HMAC>` as agents sign a tunnel handshake (agent/dataplane/tunnel.ts). */
export function tunnelSignature(key: string, sign: NonNullable<TunnelCase["sign"]>): string {
  const ms = Date.now() + (sign.ageMs ?? 0);
  const fields = [ms, sign.source, sign.workload ?? "", sign.sourceIp ?? "", sign.target, sign.protocol ?? ""];
  const hmac = createHmac("sha256", Buffer.from(key, "hex")).update(fields.join("|")).digest("hex");
  return `${ms}.${hmac}`;
}

export async function sendTunnel(
  from: string,
  ip: string,
  port: number,
  c: TunnelCase,
  vars: Record<string, string>,
  keys: { mesh: string; other: string },
  selfSigned: { key: string; cert: string },
): Promise<Outcome> {
  const auth = c.sign ? tunnelSignature(keys[c.sign.key], expandDeep(c.sign, vars)) : undefined;
  const all = auth ? { ...vars, auth, "auth.upper": auth.toUpperCase() } : vars;
  const bytes =
    c.sendHex !== undefined ? Buffer.from(c.sendHex, "hex") : Buffer.from(expand(c.send ?? "", all), "latin1");
  const waitMs = c.waitMs ?? 2000;
  if (!c.tls) {
    const x = await exchange(from, ip, port, bytes, { waitMs, ...(c.end ? { end: true } : {}) });
    return { tokens: http1Tokens(x), text: x.data.toString("latin1") };
  }
  let socket: net.Socket;
  try {
    socket = await connectFrom(from, ip, port);
  } catch (err) {
    return { tokens: ["closed", `error:${(err as NodeJS.ErrnoException).code}`], text: "" };
  }
  const secure = tls.connect({
    socket,
    rejectUnauthorized: false,
    ALPNProtocols: ["h2"],
    ...(c.tls === "self-signed" ? selfSigned : {}),
  });
  const handshake = await new Promise<string>((resolve) => {
    const timer = setTimeout(() => resolve("tls-open"), waitMs);
    secure.once("secureConnect", () => {
      clearTimeout(timer);
      resolve("tls-ok");
    });
    secure.once("error", () => {
      clearTimeout(timer);
      resolve("tls-failed");
    });
    secure.once("close", () => {
      clearTimeout(timer);
      resolve("tls-failed");
    });
  });
  if (handshake !== "tls-ok") {
    secure.destroy();
    return { tokens: [handshake, "closed"], text: "" };
  }
  // TLS 1.3: a refused client certificate shows only once the server has read it.
  const x = await exchangeOn(secure as unknown as net.Socket, bytes, { waitMs });
  return { tokens: ["tls-ok", ...http1Tokens(x)], text: x.data.toString("latin1") };
}

// ---- HTTP requests as bytes (enrollment socket, REST) ----

export function httpRequestBytes(
  c: { method?: string; path?: string; contentType?: string; headers?: Array<[string, string]>; body?: unknown },
  defaults: { method: string; path: string; contentType: string; host: string },
  vars: Record<string, string>,
): Buffer {
  const body =
    c.body === undefined
      ? undefined
      : typeof c.body === "string"
        ? Buffer.from(expand(c.body, vars), "latin1")
        : Buffer.from(JSON.stringify(expandDeep(c.body, vars)), "utf8");
  const method = c.method ?? defaults.method;
  const head = [
    `${method} ${expand(c.path ?? defaults.path, vars)} HTTP/1.1`,
    `Host: ${defaults.host}`,
    ...(body !== undefined ? [`Content-Type: ${c.contentType ?? defaults.contentType}`] : []),
    ...(body !== undefined ? [`Content-Length: ${body.length}`] : []),
    ...(c.headers ?? []).map(([n, v]) => `${n}: ${expand(v, vars)}`),
    "Connection: close",
  ];
  return Buffer.concat([Buffer.from(`${head.join("\r\n")}\r\n\r\n`, "latin1"), body ?? Buffer.alloc(0)]);
}

/** Tokens of a JSON error answer: status, and the enrollment API's code and field, or the REST Status's reason and fields. */
export function jsonAnswerTokens(x: Exchanged): Outcome {
  const tokens = http1Tokens(x);
  const text = x.data.toString("utf8");
  const body = text.slice(text.indexOf("\r\n\r\n") + 4);
  try {
    const json = JSON.parse(body.trim()) as {
      error?: { code?: string; field?: string };
      reason?: string;
      details?: { causes?: Array<{ field?: string }> };
    };
    if (json.error?.code) tokens.push(`code:${json.error.code}`);
    if (json.error?.field !== undefined) tokens.push(`field:${json.error.field}`);
    if (json.reason) tokens.push(`reason:${json.reason}`);
    for (const cause of json.details?.causes ?? []) if (cause.field !== undefined) tokens.push(`field:${cause.field}`);
  } catch {
    if (body.trim() !== "") tokens.push("not-json");
  }
  return { tokens, text: body };
}

export function enrollmentBytes(c: EnrollmentCase, vars: Record<string, string>): Buffer {
  if (c.raw !== undefined) return Buffer.from(expand(c.raw, vars), "latin1");
  return httpRequestBytes(
    c,
    { method: "POST", path: "/v1/pods", contentType: "application/json", host: "agent" },
    vars,
  );
}

export function restBytes(c: RestCase, vars: Record<string, string>): Buffer {
  if (c.raw !== undefined) return Buffer.from(expand(c.raw, vars), "latin1");
  return httpRequestBytes(
    c,
    {
      method: "POST",
      path: "/apis/nodemesh.io/v1alpha1/namespaces/default/services",
      contentType: "application/json",
      host: "controller",
    },
    vars,
  );
}

/** Opens `count` requests at once and counts the statuses they got ("200x16", "429x4", "nonex2"). */
export async function flood(from: string, ip: string, port: number, bytes: Buffer, count: number, waitMs: number) {
  const sockets = await Promise.all(
    Array.from({ length: count }, () => connectFrom(from, ip, port).catch(() => undefined)),
  );
  const statuses = await Promise.all(
    sockets.map(
      (socket) =>
        new Promise<string>((resolve) => {
          if (!socket) return resolve("refused");
          let text = "";
          const timer = setTimeout(() => resolve("none"), waitMs);
          socket.setEncoding("latin1");
          socket.on("data", (c: string) => {
            text += c;
            const status = /^HTTP\/1\.1 (\d{3}) /.exec(text)?.[1];
            if (status) {
              clearTimeout(timer);
              resolve(status);
            }
          });
          socket.on("error", () => {});
          socket.on("close", () => {
            clearTimeout(timer);
            resolve(/^HTTP\/1\.1 (\d{3}) /.exec(text)?.[1] ?? "closed");
          });
          socket.write(bytes);
        }),
    ),
  );
  for (const s of sockets) s?.destroy();
  // The server counts a client's watches down as it sees them close.
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const counts = new Map<string, number>();
  for (const s of statuses) counts.set(s, (counts.get(s) ?? 0) + 1);
  return { tokens: [...counts].map(([s, n]) => `${s}x${n}`), text: "" };
}

// ---- the controller's agent service ----

const serializeAgentMessage = agentServiceDefinition.Connect.requestSerialize as (m: AgentMessage) => Buffer;

/** The request body of a case: its messages, each length-prefixed (JSON ones protobuf-encoded). */
export function controllerBody(c: ControllerGrpcCase, vars: Record<string, string>): Buffer {
  if (c.bodyHex !== undefined) return Buffer.from(c.bodyHex, "hex");
  return Buffer.concat(
    (c.messages ?? []).map((m) => {
      const one =
        m.json === undefined
          ? grpcMessages([m], vars)
          : grpcMessages([
              { ...m, hex: serializeAgentMessage(expandDeep(m.json, vars) as unknown as AgentMessage).toString("hex") },
            ]);
      return Buffer.concat(Array(m.repeat ?? 1).fill(one));
    }),
  );
}

/**
 * One Connect call over TLS on a connection from `from`: tokens grpc:<status> (from the trailers
 * or a trailers-only answer), config (the controller sent a message), rst:<code>, closed or open.
 */
export async function controllerCall(
  from: string,
  ip: string,
  port: number,
  ca: Buffer,
  headers: Record<string, string>,
  body: Buffer,
  keepOpen: boolean,
  waitMs: number,
  clientCertificate?: { cert: string; key: string },
): Promise<Outcome> {
  let socket: net.Socket;
  try {
    socket = await connectFrom(from, ip, port);
  } catch (err) {
    return { tokens: ["closed", `error:${(err as NodeJS.ErrnoException).code}`], text: "" };
  }
  const session = http2.connect(`https://${ip}:${port}`, {
    createConnection: () =>
      tls.connect({
        socket,
        ca,
        ALPNProtocols: ["h2"],
        checkServerIdentity: () => undefined,
        ...(clientCertificate ?? {}),
      }) as unknown as net.Socket,
  });
  session.on("error", () => {});
  const tokens: string[] = [];
  let text = "";
  const stream = session.request({ ":method": "POST", te: "trailers", ...headers });
  const ended = await new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), waitMs);
    const note = (h: http2.IncomingHttpHeaders) => {
      if (h["grpc-status"] !== undefined) tokens.push(`grpc:${h["grpc-status"]}`);
      if (typeof h["grpc-message"] === "string") text += decodeURIComponent(h["grpc-message"]);
      if (h[":status"] !== undefined && Number(h[":status"]) !== 200) tokens.push(`status:${h[":status"]}`);
    };
    stream.on("response", note);
    stream.on("trailers", note);
    stream.on("data", () => {
      if (!tokens.includes("config")) tokens.push("config");
    });
    stream.on("error", () => {});
    stream.on("close", () => {
      clearTimeout(timer);
      if (stream.rstCode && !tokens.some((t) => t.startsWith("grpc:"))) tokens.push(`rst:${errorName(stream.rstCode)}`);
      resolve(true);
    });
    if (keepOpen) stream.write(body);
    else stream.end(body);
  });
  tokens.push(ended ? "closed" : "open");
  session.destroy();
  return { tokens, text };
}

/** Raw HTTP/2 frames inside a TLS connection to the controller's agent port. */
export async function controllerFrames(
  from: string,
  ip: string,
  port: number,
  ca: Buffer,
  c: ControllerGrpcCase,
  vars: Record<string, string>,
): Promise<Outcome> {
  const bytes = encodeConnection(c.preface, c.frames ?? [], vars);
  const waitMs = c.waitMs ?? 2000;
  if (c.plaintext) return h2Tokens(await exchange(from, ip, port, bytes, { waitMs, stop: h2Decided(bytes) }));
  let socket: net.Socket;
  try {
    socket = await connectFrom(from, ip, port);
  } catch (err) {
    return { tokens: ["closed", `error:${(err as NodeJS.ErrnoException).code}`], text: "" };
  }
  const secure = tls.connect({ socket, ca, ALPNProtocols: ["h2"], checkServerIdentity: () => undefined });
  const ok = await new Promise<boolean>((resolve) => {
    secure.once("secureConnect", () => resolve(true));
    secure.once("error", () => resolve(false));
  });
  if (!ok) return { tokens: ["tls-failed", "closed"], text: "" };
  return h2Tokens(await exchangeOn(secure as unknown as net.Socket, bytes, { waitMs, stop: h2Decided(bytes) }));
}
