// The agent-to-agent handshake on the tunnel port (15008), in the shape of Istio's HBONE:
// an HTTP/1.1 CONNECT naming the workload address, answered by the destination agent only once
// it has connected to the workload. So the source agent learns that an endpoint is dead before it
// commits the client to it, and fails over. The later mTLS work wraps this same exchange in TLS.
//
//   → CONNECT 10.244.2.11:8080 HTTP/1.1\r\nHost: 10.244.2.11:8080\r\nX-Nodemesh-Source: ns/pod\r\n
//     X-Nodemesh-Source-Workload: ns/app\r\n[X-Nodemesh-Protocol: http1|h2\r\n]\r\n
//     (with a protocol, the destination agent serves the tunnel as HTTP: its inbound side)
//   ← HTTP/1.1 200 OK\r\n\r\n                                        then raw bytes both ways
//   ← HTTP/1.1 503 Service Unavailable\r\nX-Nodemesh-Error: NM_...\r\n\r\n   then close

import type { Socket } from "node:net";
import { AGENT_PORTS } from "../../api/dataplane.ts";
import { type EnrolledPod, inPortRanges, notAPodAddress } from "../../api/enrollment.ts";
import { AgentError, AgentErrors } from "../errors.ts";
import { rawErrorAnswer } from "./http/errors.ts";

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
  /** Set when the tunnel carries HTTP the source agent already parsed. */
  protocol?: "http1" | "h2";
}

/** Reads bytes until the end of an HTTP head; bytes after it are pushed back into the socket. */
function readHead(socket: Socket, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let buffered: Buffer = Buffer.alloc(0);
    const cleanup = () => {
      clearTimeout(timer);
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
    const onEnd = () => fail(new AgentError(AgentErrors.TUNNEL_PROTOCOL, "closed during handshake"));
    const onError = (err: Error) => fail(err);
    const timer = setTimeout(
      () => fail(new AgentError(AgentErrors.TUNNEL_PROTOCOL, `no handshake within ${timeoutMs} ms`)),
      timeoutMs,
    );
    socket.on("data", onData);
    socket.once("end", onEnd);
    socket.once("error", onError);
    socket.resume();
  });
}

/** Source side: asks the destination agent for `ip:port`; resolves once it has connected. */
export async function openTunnel(socket: Socket, req: TunnelRequest, timeoutMs: number): Promise<void> {
  const target = `${req.ip}:${req.port}`;
  const extra =
    (req.workload ? `X-Nodemesh-Source-Workload: ${req.workload}\r\n` : "") +
    (req.protocol ? `X-Nodemesh-Protocol: ${req.protocol}\r\n` : "");
  socket.write(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\nX-Nodemesh-Source: ${req.source}\r\n${extra}\r\n`);
  let head: string;
  try {
    head = await readHead(socket, timeoutMs);
  } catch (err) {
    // No answer, or not one we can read: for the source this endpoint refused, and it fails over.
    throw new AgentError(AgentErrors.TUNNEL_REFUSED, `${target}: ${(err as Error).message}`);
  }
  const status = /^HTTP\/1\.1 (\d{3})/.exec(head)?.[1];
  if (status === "200") return;
  const reason = /\r\nX-Nodemesh-Error: ([A-Z_]+)/i.exec(head)?.[1] ?? `status ${status ?? "?"}`;
  throw new AgentError(AgentErrors.TUNNEL_REFUSED, `${target}: ${reason}`);
}

const CONNECT_LINE = /^CONNECT (\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5}) HTTP\/1\.1\r\n/;

/** Destination side: reads and parses the CONNECT request. */
export async function acceptTunnel(socket: Socket, timeoutMs: number): Promise<TunnelRequest> {
  const head = await readHead(socket, timeoutMs);
  const m = CONNECT_LINE.exec(`${head}\r\n`);
  const port = Number(m?.[2]);
  if (!m || port < 1 || port > 65535) throw new AgentError(AgentErrors.TUNNEL_PROTOCOL, "expected CONNECT ip:port");
  const source = /\r\nX-Nodemesh-Source: ([^\r\n]{1,256})/i.exec(head)?.[1] ?? "";
  const workload = /\r\nX-Nodemesh-Source-Workload: ([^\r\n]{1,256})/i.exec(head)?.[1];
  const protocol = /\r\nX-Nodemesh-Protocol: (http1|h2)\r?$/im.exec(head)?.[1] as TunnelRequest["protocol"];
  return { ip: m[1]!, port, source, workload, protocol };
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
