// The agent-to-agent tunnel handshake on the tunnel port (15008), in the shape of Istio's HBONE: a
// CONNECT naming the workload address, answered by the destination agent only once it has
// connected to the workload. So the source agent learns that an endpoint is dead before it commits
// the client to it, and fails over. Two framings of the same fields:
// - in mutual TLS, an HTTP/2 CONNECT stream, many per connection (tunnel-mux.ts);
// - in plaintext (no certificate, or PeerAuthentication DISABLE), one HTTP/1.1 CONNECT per
//   connection:
//
//   → CONNECT 10.244.2.11:8080 HTTP/1.1\r\nHost: 10.244.2.11:8080\r\nX-Nodemesh-Source: ns/pod\r\n
//     X-Nodemesh-Source-Workload: ns/app\r\nX-Nodemesh-Source-Ip: 10.244.1.5\r\n
//     [X-Nodemesh-Protocol: http1|h2\r\n]\r\n
//     (with a protocol, the destination agent serves the tunnel as HTTP: its inbound side)
//   ← HTTP/1.1 200 OK\r\n\r\n                                        then raw bytes both ways
//   ← HTTP/1.1 503 Service Unavailable\r\nX-Nodemesh-Error: NM_...\r\n\r\n   then close
//
// With a tunnel key (--tunnel-key-file, the same on every agent), the source agent signs the
// handshake (X-Nodemesh-Tunnel-Auth: <ms>.<HMAC-SHA256 of the request's fields>) and the
// destination agent refuses one that is unsigned, forged or older than 30 s: a pod that slips past
// its own interception (SO_MARK) cannot use another pod's tunnel port without mTLS.

import { createHmac, timingSafeEqual } from "node:crypto";
import type { Socket } from "node:net";
import { AGENT_PORTS } from "../../api/dataplane.ts";
import { type EnrolledPod, inPortRanges, notAPodAddress } from "../../api/enrollment.ts";
import { AgentError, AgentErrors } from "../errors.ts";
import { rawErrorAnswer } from "./http/errors.ts";
import { ioDeadline } from "./io-deadline.ts";

/** A handshake head larger than this is refused: it bounds what an unauthenticated peer can make us buffer. */
export const MAX_HEAD_BYTES = 4096;
const HEAD_END = Buffer.from("\r\n\r\n");

export interface TunnelRequest {
  ip: string;
  port: number;
  /** "namespace/pod" of the caller. */
  source: string;
  /** "namespace/workload" of the caller (per-source rate limits, metrics). */
  workload?: string;
  /** The source pod's address (AuthorizationPolicy ipBlocks). */
  sourceIp?: string;
  /** Set when the tunnel carries HTTP the source agent already parsed. */
  protocol?: "http1" | "h2";
  /** The signature, as received (destination side). */
  auth?: string;
}

/** How old a signed handshake may be: bounds a replay until mTLS makes one useless. */
export const TUNNEL_AUTH_MAX_AGE_MS = 30_000;

function signature(key: string, ms: number, req: TunnelRequest): string {
  const fields = [ms, req.source, req.workload ?? "", req.sourceIp ?? "", `${req.ip}:${req.port}`, req.protocol ?? ""];
  return createHmac("sha256", Buffer.from(key, "hex")).update(fields.join("|")).digest("hex");
}

/** Destination side: why a handshake is not an agent's (with a key configured), else undefined. */
export function tunnelAuthRefusal(req: TunnelRequest, key: string | undefined, nowMs: number): AgentError | undefined {
  if (key === undefined) return undefined;
  const m = /^(\d{1,15})\.([0-9a-f]{64})$/.exec(req.auth ?? "");
  if (!m) return new AgentError(AgentErrors.TUNNEL_UNAUTHENTICATED, req.auth ? "malformed signature" : "unsigned");
  const ms = Number(m[1]);
  if (Math.abs(nowMs - ms) > TUNNEL_AUTH_MAX_AGE_MS)
    return new AgentError(AgentErrors.TUNNEL_UNAUTHENTICATED, "expired");
  const expected = Buffer.from(signature(key, ms, req), "hex");
  if (!timingSafeEqual(expected, Buffer.from(m[2]!, "hex"))) {
    return new AgentError(AgentErrors.TUNNEL_UNAUTHENTICATED, "bad signature");
  }
  return undefined;
}

/**
 * Reads bytes until the end of an HTTP head; bytes after it are pushed back into the socket.
 * `awaited`: what the head is, for the errors (the destination waits for a handshake, the source
 * for the answer to its own).
 */
function readHead(socket: Socket, timeoutMs: number, awaited: "handshake" | "answer"): Promise<string> {
  return new Promise((resolve, reject) => {
    let buffered: Buffer = Buffer.alloc(0);
    const cleanup = () => {
      deadline.clear();
      socket.removeListener("data", onData);
      socket.removeListener("end", onEnd);
      socket.removeListener("error", onError);
    };
    const fail = (err: Error) => {
      cleanup();
      reject(err);
    };
    const onData = (chunk: Buffer) => {
      buffered = buffered.length ? Buffer.concat([buffered, chunk]) : chunk;
      const end = buffered.indexOf(HEAD_END);
      if (end === -1) {
        if (buffered.length > MAX_HEAD_BYTES) fail(new AgentError(AgentErrors.TUNNEL_PROTOCOL, "head too large"));
        return;
      }
      cleanup();
      socket.pause();
      const rest = buffered.subarray(end + HEAD_END.length);
      if (rest.length) socket.unshift(rest);
      resolve(buffered.subarray(0, end).toString("latin1"));
    };
    const onEnd = () => fail(new AgentError(AgentErrors.TUNNEL_PROTOCOL, `closed before the ${awaited} ended`));
    const onError = (err: Error) => fail(err);
    const deadline = ioDeadline(
      () => fail(new AgentError(AgentErrors.TUNNEL_PROTOCOL, `no ${awaited} within ${timeoutMs} ms`)),
      timeoutMs,
    );
    socket.on("data", onData);
    socket.once("end", onEnd);
    socket.once("error", onError);
    socket.resume();
  });
}

/**
 * A workload value the destination reads back exactly as sent, in either framing: printable ASCII
 * without surrounding spaces (HTTP/1.1 trims them, reads bytes as latin1), no CR or LF (which would
 * start a header of its own). The workload comes from the pod's `app` label, which enrollment takes
 * as any string; one that is not sendable is left out, so the signature still covers what is sent.
 */
const SENDABLE = /^[\x21-\x7e](?:[\x20-\x7e]{0,254}[\x21-\x7e])?$/;

/** The handshake's fields as headers (lower case: HTTP/2 wants them so, HTTP/1.1 does not mind). */
export function handshakeHeaders(request: TunnelRequest, key: string | undefined): Record<string, string> {
  const ms = Date.now();
  const req = {
    ...request,
    workload: request.workload && SENDABLE.test(request.workload) ? request.workload : undefined,
  };
  return {
    "x-nodemesh-source": req.source,
    ...(req.workload ? { "x-nodemesh-source-workload": req.workload } : {}),
    ...(req.sourceIp ? { "x-nodemesh-source-ip": req.sourceIp } : {}),
    ...(req.protocol ? { "x-nodemesh-protocol": req.protocol } : {}),
    ...(key ? { "x-nodemesh-tunnel-auth": `${ms}.${signature(key, ms, req)}` } : {}),
  };
}

const TARGET = /^(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})$/;
const FIELDS: Record<string, RegExp> = {
  "x-nodemesh-source": /^[^\r\n]{1,256}$/,
  "x-nodemesh-source-workload": /^[^\r\n]{1,256}$/,
  "x-nodemesh-source-ip": /^\d{1,3}(?:\.\d{1,3}){3}$/,
  "x-nodemesh-protocol": /^(?:http1|h2)$/,
  "x-nodemesh-tunnel-auth": /^[^\r\n]{1,128}$/,
};

/**
 * Destination side: the request a handshake makes, from its target ("ip:port") and its headers
 * (`header` answers a lower-case name). A field that does not parse is absent.
 */
export function tunnelRequestOf(target: string, header: (name: string) => string | undefined): TunnelRequest {
  const m = TARGET.exec(target);
  const port = Number(m?.[2]);
  if (!m || port < 1 || port > 65535) throw new AgentError(AgentErrors.TUNNEL_PROTOCOL, "expected CONNECT ip:port");
  const field = (name: string) => {
    const value = header(name);
    return value !== undefined && FIELDS[name]!.test(value) ? value : undefined;
  };
  return {
    ip: m[1]!,
    port,
    source: field("x-nodemesh-source") ?? "",
    workload: field("x-nodemesh-source-workload"),
    sourceIp: field("x-nodemesh-source-ip"),
    protocol: field("x-nodemesh-protocol") as TunnelRequest["protocol"],
    auth: field("x-nodemesh-tunnel-auth"),
  };
}

/**
 * Source side, plaintext: asks the destination agent for `ip:port` on `socket`; resolves once it
 * has connected. `key`: the mesh's tunnel key, to sign the handshake with.
 */
export async function openTunnel(socket: Socket, req: TunnelRequest, timeoutMs: number, key?: string): Promise<void> {
  const target = `${req.ip}:${req.port}`;
  const fields = Object.entries(handshakeHeaders(req, key))
    .map(([name, value]) => `${name}: ${value}\r\n`)
    .join("");
  socket.write(`CONNECT ${target} HTTP/1.1\r\nhost: ${target}\r\n${fields}\r\n`);
  let head: string;
  try {
    head = await readHead(socket, timeoutMs, "answer");
  } catch (err) {
    // No answer, or not one we can read: for the source this endpoint refused, and it fails over.
    throw new AgentError(AgentErrors.TUNNEL_REFUSED, `${target}: ${(err as Error).message}`);
  }
  const status = /^HTTP\/1\.1 (\d{3})/.exec(head)?.[1];
  if (status === "200") return;
  const reason = /\r\nX-Nodemesh-Error: ([A-Z_]+)/i.exec(head)?.[1] ?? `status ${status ?? "?"}`;
  throw new AgentError(AgentErrors.TUNNEL_REFUSED, `${target}: ${reason}`);
}

const CONNECT_LINE = /^CONNECT (\S{1,32}) HTTP\/1\.1$/;

/** Destination side, plaintext: reads and parses the CONNECT request. */
export async function acceptTunnel(socket: Socket, timeoutMs: number): Promise<TunnelRequest> {
  const [line = "", ...lines] = (await readHead(socket, timeoutMs, "handshake")).split("\r\n");
  const target = CONNECT_LINE.exec(line)?.[1];
  if (!target) throw new AgentError(AgentErrors.TUNNEL_PROTOCOL, "expected CONNECT ip:port");
  const headers = new Map<string, string>();
  for (const l of lines) {
    const colon = l.indexOf(":");
    const name = l.slice(0, colon).toLowerCase();
    // The first of a repeated field counts, as before; the rest cannot override it.
    if (colon > 0 && !headers.has(name)) headers.set(name, l.slice(colon + 1).trim());
  }
  return tunnelRequestOf(target, (name) => headers.get(name));
}

/**
 * Destination side: why the agent must not connect where the tunnel asks, else undefined. Only
 * the pod's own address; never loopback or link-local (the pod's local-only services), even if a
 * stale enrollment named one; never a port the pod excluded from inbound interception (it chose
 * to keep that port outside the mesh); never an agent port (a loop).
 */
export function tunnelTargetRefusal(req: TunnelRequest, pod: EnrolledPod): AgentError | undefined {
  if (req.ip !== pod.ip || notAPodAddress(req.ip)) return new AgentError(AgentErrors.TUNNEL_FORBIDDEN, req.ip);
  if (AGENT_PORTS.includes(req.port)) return new AgentError(AgentErrors.LOOP);
  if (inPortRanges(req.port, pod.excludeInboundPorts)) {
    return new AgentError(AgentErrors.TUNNEL_FORBIDDEN, `port ${req.port} is excluded from inbound interception`);
  }
  return undefined;
}

export function answerTunnel(socket: Socket, error: AgentError | undefined): void {
  if (!error) {
    socket.write("HTTP/1.1 200 OK\r\n\r\n");
    return;
  }
  // Close outright once the answer is flushed: a peer that never sends its FIN must not pin the socket.
  socket.end(rawErrorAnswer(error), () => socket.destroy());
}
