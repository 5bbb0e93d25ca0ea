// The bad-input corpus (issue 14 item 3): cases kept as data, one JSON file per family, read here
// and run by test/e2e/corpus.test.ts against a live two-node mesh. This module is pure: it loads
// and checks the files, expands a case's text (escapes are JSON's; `<<N*text>>` repeats `text` N
// times; `{{name}}` is a value of the live world), encodes HTTP/2 frames described structurally,
// and matches what happened against what a case expects. test/corpus/README.md says how to add a
// case.
//
// What happened is a list of tokens ("status:400", "error:NM_BAD_REQUEST", "closed",
// "goaway:PROTOCOL_ERROR", "grpc:13", "field:metadata.name", ...). A case's `expect.outcome` is
// one pattern or a list of alternatives; a pattern is tokens separated by spaces, all of which must
// be among what happened. In a token, `x` stands for any digit ("status:4xx") and a trailing `*`
// for any rest ("rst:*").

import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { encodeHeaderBlock } from "../e2e/clients/hpack.ts";

export const CORPUS_DIR = new URL(".", import.meta.url).pathname;

export const FAMILIES = ["http1", "h2", "grpc", "tunnel", "enrollment", "rest", "controller-grpc"] as const;
export type Family = (typeof FAMILIES)[number];

export interface Expect {
  /** One pattern, or alternatives (any one may match). */
  outcome: string | string[];
  /** Requests (HTTP and gRPC) the workload serves because of this case. Default 0. */
  appSees?: number;
  /** Instead of `appSees`: at most this many (floods, where how many got through before the cut varies). */
  appSeesAtMost?: number;
  /** A substring of the answer's body or status details. */
  message?: string;
  /**
   * What the app read of the case's (last) request: its path exactly, and headers (lower-case
   * names) whose value must match a regular expression, or be absent (null).
   */
  appSaw?: { path?: string; headers?: Record<string, string | null> };
}

interface CaseBase {
  name: string;
  /** Why the case is in the corpus, when its name does not say it all. */
  why?: string;
  /** A bug this case shows, not fixed yet: the runner expects the case to fail (it.fails). */
  knownBug?: string;
  /** How long to wait for the peer to answer or close, ms. */
  waitMs?: number;
  expect: Expect;
}

/** Raw bytes over a TCP connection from a pod. */
export interface Http1Case extends CaseBase {
  /**
   * outbound: a meshed client pod to a Service port declared http; outbound-detect: to a port with
   * no declared protocol (the agent detects it); outbound-h2port: to a port declared http2 (the
   * agent speaks HTTP/2 upstream); outbound-grpcport: to the port declared grpc; inbound: an unmeshed pod straight to the meshed server pod's
   * port (its inbound listener).
   */
  target: "outbound" | "outbound-detect" | "outbound-h2port" | "outbound-grpcport" | "inbound";
  send: string;
}

export type FrameType =
  | "DATA"
  | "HEADERS"
  | "PRIORITY"
  | "RST_STREAM"
  | "SETTINGS"
  | "PUSH_PROMISE"
  | "PING"
  | "GOAWAY"
  | "WINDOW_UPDATE"
  | "CONTINUATION";

export interface GrpcMessage {
  /** The compressed flag byte (default 0). */
  compressed?: number;
  /** The length prefix; default: the message's true length. */
  length?: number;
  /** The message (protobuf bytes), hex; or `text`. */
  hex?: string;
  text?: string;
}

export interface FrameSpec {
  /** Required, except on a frame that only holds a `group`. */
  type?: FrameType | number;
  flags?: Array<"END_STREAM" | "END_HEADERS" | "PADDED" | "PRIORITY" | "ACK"> | number;
  /** Default: 1 for HEADERS, DATA, CONTINUATION, RST_STREAM, PRIORITY; 0 otherwise. */
  stream?: number;
  /** A request header block: a preset ("get", "post", "grpc"), or the fields, HPACK-encoded as literals. */
  headers?: "get" | "post" | "grpc" | Array<[string, string]>;
  /** Fields after the preset's. */
  extraHeaders?: Array<[string, string]>;
  /** gRPC length-prefixed messages as the payload (DATA). */
  grpc?: GrpcMessage[];
  payloadHex?: string;
  /** The payload as text (escapes and macros). */
  payload?: string;
  /** The frame header's length field, when it must disagree with the payload. */
  length?: number;
  /** Sends the frame (or the `group`) this many times (floods)... */
  repeat?: number;
  /** ...adding this to the stream ids at each repetition. */
  streamStep?: number;
  /** Instead of one frame: these, in order (with `repeat`). */
  group?: FrameSpec[];
}

/** Hand-made HTTP/2 frames over a prior-knowledge h2c connection from a pod. */
export interface H2Case extends CaseBase {
  /**
   * outbound-h2 / outbound-grpc / outbound-http: a meshed client pod to a Service port declared
   * http2 / grpc / http; outbound-detect: to one with no declared protocol; inbound-h2 / inbound-grpc: an unmeshed pod to the server pod's ports.
   */
  target: "outbound-h2" | "outbound-grpc" | "outbound-http" | "outbound-detect" | "inbound-h2" | "inbound-grpc";
  /** Replaces the client preface (text with escapes); default: the preface, then an empty SETTINGS. */
  preface?: string;
  frames: FrameSpec[];
}

/** Bytes to a pod's tunnel port (15008) from an unmeshed pod on the other node. */
export interface TunnelCase extends CaseBase {
  /** Text (escapes, macros, `{{auth}}` the signature made as `sign` says, `{{auth.upper}}` in upper case). */
  send?: string;
  sendHex?: string;
  /** Half-close after sending. */
  end?: boolean;
  /** Makes `{{auth}}`: a signature of these fields with the mesh's key ("mesh") or another. */
  sign?: {
    key: "mesh" | "other";
    source: string;
    workload?: string;
    sourceIp?: string;
    target: string;
    protocol?: string;
    /** Added to now: a signature from the past or the future. */
    ageMs?: number;
  };
  /** Start TLS first (the tunnel's mTLS framing) with no client certificate, or a self-signed one. */
  tls?: "no-certificate" | "self-signed";
}

/** A request on a node's enrollment socket (unix), made by a process inside `from`'s namespace. */
export interface EnrollmentCase extends CaseBase {
  /** node: the privileged caller; client: a meshed pod; stranger: a pod that is not enrolled. */
  from: "node" | "client" | "stranger";
  method?: string;
  path?: string;
  contentType?: string;
  /** The body: text (escapes, macros, placeholders), or an object sent as JSON (placeholders in its strings). */
  body?: string | Record<string, unknown> | unknown[];
  /** Instead of a request made of the fields above: these bytes, as they are. */
  raw?: string;
}

/** A request to the controller's REST API (on its namespace's loopback), or a `nodemesh` CLI command there. */
export interface RestCase extends CaseBase {
  method?: string;
  path?: string;
  contentType?: string;
  headers?: Array<[string, string]>;
  body?: string | Record<string, unknown> | unknown[];
  /** Instead of a request made of the fields above: these bytes, as they are. */
  raw?: string;
  /** Opens this many requests at once, each held open; the outcome counts statuses ("200x16 429x4"). */
  flood?: number;
  /** Runs `nodemesh <cli...>` in the controller's namespace with `stdin`; the outcome is "exit:N". */
  cli?: string[];
  stdin?: string;
}

/** A stream to the controller's agent service (gRPC over TLS on the underlay), from a node. */
export interface ControllerGrpcCase extends CaseBase {
  /** The bootstrap token: the real one (default), none, or a wrong one. */
  auth?: "token" | "none" | "wrong";
  /** Present node-1's node certificate (from its agent's state dir) as the TLS client certificate. */
  clientCertificate?: "node-1";
  /** The node secret: a fresh random one (default), none, or one that is not 32-128 base64url characters. */
  secret?: "random" | "none" | "malformed";
  /** Request path (default the Connect method) and content-type (default application/grpc). */
  path?: string;
  contentType?: string;
  extraHeaders?: Array<[string, string]>;
  /** Messages: an AgentMessage as JSON (`{{fresh}}` is a new node name), or raw bytes; each length-prefixed. */
  messages?: Array<GrpcMessage & { json?: Record<string, unknown>; repeat?: number }>;
  /** Instead of `messages`: the request body as it is, hex. */
  bodyHex?: string;
  /** Leave the stream open after the messages (default: half-close). */
  keepOpen?: boolean;
  /** Instead of a gRPC client: raw HTTP/2 frames inside the TLS connection. */
  frames?: FrameSpec[];
  preface?: string;
  /** With `frames`: without TLS. */
  plaintext?: boolean;
}

export interface CorpusFile<C> {
  family: Family;
  description: string;
  cases: C[];
}

export interface Corpus {
  http1: CorpusFile<Http1Case>;
  h2: CorpusFile<H2Case>;
  grpc: CorpusFile<H2Case>;
  tunnel: CorpusFile<TunnelCase>;
  enrollment: CorpusFile<EnrollmentCase>;
  rest: CorpusFile<RestCase>;
  "controller-grpc": CorpusFile<ControllerGrpcCase>;
}

/** Reads every family's file and checks its shape: a mistake in the data fails before any world is built. */
export function loadCorpus(dir = CORPUS_DIR): Corpus {
  const files = readdirSync(dir).filter((f) => f.endsWith(".json"));
  const corpus: Partial<Record<Family, CorpusFile<CaseBase>>> = {};
  for (const file of files) {
    const data = JSON.parse(readFileSync(join(dir, file), "utf8")) as CorpusFile<CaseBase>;
    if (!FAMILIES.includes(data.family)) throw new Error(`${file}: unknown family ${data.family}`);
    if (`${data.family}.json` !== file)
      throw new Error(`${file}: family ${data.family} belongs in ${data.family}.json`);
    const names = new Set<string>();
    for (const c of data.cases) {
      if (typeof c.name !== "string" || c.name === "") throw new Error(`${file}: a case without a name`);
      if (names.has(c.name)) throw new Error(`${file}: two cases named "${c.name}"`);
      names.add(c.name);
      if (!c.expect || (typeof c.expect.outcome !== "string" && !Array.isArray(c.expect.outcome))) {
        throw new Error(`${file}: "${c.name}" has no expect.outcome`);
      }
    }
    corpus[data.family] = data;
  }
  for (const family of FAMILIES) if (!corpus[family]) throw new Error(`no ${family}.json in ${dir}`);
  return corpus as Corpus;
}

/** `<<N*text>>` → text repeated N times; `{{name}}` → vars[name] (an unknown name is an error). */
export function expand(text: string, vars: Readonly<Record<string, string>> = {}): string {
  return text
    .replace(/<<(\d+)\*(.*?)>>/gs, (_, n: string, s: string) => s.repeat(Number(n)))
    .replace(/\{\{([a-zA-Z0-9_.-]+)\}\}/g, (_, name: string) => {
      const value = vars[name];
      if (value === undefined) throw new Error(`unknown placeholder {{${name}}}`);
      return value;
    });
}

/**
 * Expands every string inside a JSON value. An object `{"$repeat": N, "item": x}` becomes an array
 * of N copies of x, and `{"$repeat": N, "entry": [key, x]}` an object of N entries; inside them,
 * `{{i}}` is the copy's index (0 to N-1).
 */
export function expandDeep<T>(value: T, vars: Readonly<Record<string, string>>): T {
  if (typeof value === "string") return expand(value, vars) as T;
  if (Array.isArray(value)) return value.map((v) => expandDeep(v, vars)) as T;
  if (value && typeof value === "object") {
    const o = value as Record<string, unknown>;
    if (typeof o["$repeat"] === "number") {
      const copies = Array.from({ length: o["$repeat"] }, (_, i) => ({ ...vars, i: String(i) }));
      if ("entry" in o)
        return Object.fromEntries(copies.map((v) => expandDeep(o["entry"] as [string, unknown], v))) as T;
      return copies.map((v) => expandDeep(o["item"], v)) as T;
    }
    return Object.fromEntries(Object.entries(o).map(([k, v]) => [expand(k, vars), expandDeep(v, vars)])) as T;
  }
  return value;
}

// ---- HTTP/2 ----

export const FRAME_TYPES: Readonly<Record<FrameType, number>> = {
  DATA: 0,
  HEADERS: 1,
  PRIORITY: 2,
  RST_STREAM: 3,
  SETTINGS: 4,
  PUSH_PROMISE: 5,
  PING: 6,
  GOAWAY: 7,
  WINDOW_UPDATE: 8,
  CONTINUATION: 9,
};
const FLAGS = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4, PADDED: 0x8, PRIORITY: 0x20 } as const;
export const H2_ERROR_NAMES = [
  "NO_ERROR",
  "PROTOCOL_ERROR",
  "INTERNAL_ERROR",
  "FLOW_CONTROL_ERROR",
  "SETTINGS_TIMEOUT",
  "STREAM_CLOSED",
  "FRAME_SIZE_ERROR",
  "REFUSED_STREAM",
  "CANCEL",
  "COMPRESSION_ERROR",
  "CONNECT_ERROR",
  "ENHANCE_YOUR_CALM",
  "INADEQUATE_SECURITY",
  "HTTP_1_1_REQUIRED",
] as const;

export const H2_PREFACE = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
export const GRPC_PATH = "/nodemesh.sample.Echo/Unary";

const PRESETS: Record<"get" | "post" | "grpc", Array<[string, string]>> = {
  get: [
    [":method", "GET"],
    [":scheme", "http"],
    [":path", "/h2"],
    [":authority", "server"],
  ],
  post: [
    [":method", "POST"],
    [":scheme", "http"],
    [":path", "/h2"],
    [":authority", "server"],
  ],
  grpc: [
    [":method", "POST"],
    [":scheme", "http"],
    [":path", GRPC_PATH],
    [":authority", "server"],
    ["content-type", "application/grpc"],
    ["te", "trailers"],
  ],
};

/** The bytes of gRPC length-prefixed messages. */
export function grpcMessages(messages: readonly GrpcMessage[], vars: Readonly<Record<string, string>> = {}): Buffer {
  return Buffer.concat(
    messages.map((m) => {
      const body = m.hex !== undefined ? Buffer.from(m.hex, "hex") : Buffer.from(expand(m.text ?? "", vars), "latin1");
      const prefix = Buffer.alloc(5);
      prefix[0] = m.compressed ?? 0;
      prefix.writeUInt32BE(m.length ?? body.length, 1);
      return Buffer.concat([prefix, body]);
    }),
  );
}

export function encodeFrame(f: FrameSpec, vars: Readonly<Record<string, string>> = {}): Buffer {
  if (f.repeat !== undefined || f.group !== undefined) {
    const { repeat = 1, streamStep = 0, group, ...one } = f;
    const frames = group ?? [one];
    return Buffer.concat(
      Array.from({ length: repeat }, (_, i) =>
        Buffer.concat(
          frames.map((g) => {
            const onStream = g.stream ?? (defaultStream(g) || undefined);
            return encodeFrame(
              { ...g, ...(onStream !== undefined ? { stream: onStream + i * streamStep } : {}) },
              vars,
            );
          }),
        ),
      ),
    );
  }
  const type = typeof f.type === "number" ? f.type : FRAME_TYPES[f.type ?? ("?" as FrameType)];
  if (type === undefined) throw new Error(`unknown frame type ${f.type}`);
  const flags =
    typeof f.flags === "number" ? f.flags : (f.flags ?? []).reduce((sum, name) => sum | FLAGS[name], 0 as number);
  const stream = f.stream ?? defaultStream(f);
  let payload: Buffer;
  if (f.headers !== undefined) {
    const fields = typeof f.headers === "string" ? PRESETS[f.headers] : f.headers;
    const block = encodeHeaderBlock([...expandDeep(fields, vars), ...expandDeep(f.extraHeaders ?? [], vars)]);
    payload = f.payloadHex !== undefined ? Buffer.concat([Buffer.from(f.payloadHex, "hex"), block]) : block;
  } else if (f.grpc !== undefined) payload = grpcMessages(f.grpc, vars);
  else if (f.payloadHex !== undefined) payload = Buffer.from(f.payloadHex, "hex");
  else payload = Buffer.from(expand(f.payload ?? "", vars), "latin1");
  const head = Buffer.alloc(9);
  head.writeUIntBE(f.length ?? payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(stream >>> 0, 5);
  return Buffer.concat([head, payload]);
}

/** Frames that need a stream are on stream 1 unless they say otherwise. */
function defaultStream(f: FrameSpec): number {
  const type = typeof f.type === "number" ? f.type : FRAME_TYPES[f.type ?? ("?" as FrameType)];
  return [0, 1, 2, 3, 9].includes(type) ? 1 : 0;
}

/** The client's bytes: its preface (or the case's), then the frames. */
export function encodeConnection(preface: string | undefined, frames: readonly FrameSpec[], vars = {}): Buffer {
  const start =
    preface === undefined
      ? Buffer.concat([Buffer.from(H2_PREFACE, "latin1"), encodeFrame({ type: "SETTINGS" })])
      : Buffer.from(expand(preface, vars), "latin1");
  return Buffer.concat([start, ...frames.map((f) => encodeFrame(f, vars))]);
}

// ---- outcomes ----

function tokenMatches(pattern: string, token: string): boolean {
  if (pattern.endsWith("*")) return token.startsWith(pattern.slice(0, -1));
  if (pattern.length !== token.length) return false;
  for (let i = 0; i < pattern.length; i++) {
    if (pattern[i] === "x" && /\d/.test(token[i]!)) continue;
    if (pattern[i] !== token[i]) return false;
  }
  return true;
}

/** True when one of the case's alternatives has every token among `actual`. */
export function outcomeMatches(expected: string | readonly string[], actual: readonly string[]): boolean {
  const alternatives = typeof expected === "string" ? [expected] : expected;
  return alternatives.some((alt) =>
    alt
      .split(/\s+/)
      .filter(Boolean)
      .every((p) => actual.some((t) => tokenMatches(p, t))),
  );
}
