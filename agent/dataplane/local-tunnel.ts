// Tunnels between two pods of this node. Both ends are this agent's: the source side's and the
// destination side's work happen in the same worker, so the tunnel is a pair of in-memory sockets
// instead of a TLS connection to itself. The bytes skip the TLS records, the HTTP/2 framing of the
// tunnel connection and the kernel's loopback twice over; everything the destination side does to
// a tunnel still happens (inbound.ts serveTunnel: the target, STRICT, authorization, the health
// check, the connect to the workload before the answer, HTTP served per request). Cilium and
// merbridge shortcut same-node connections in the same spirit, at the socket layer. (HTTP/2 and
// gRPC requests skip even this, unless a connection breaker counts their connections:
// http/attempt-local.ts hands them to the destination side's chain.)
//
// Identity: the agent holds both pods' certificates, so what a handshake would prove is read from
// its keyring (mtls.ts sameNodeCaller), and the caller is as proven as across nodes. Nothing
// crosses a network, so nothing needs the encryption.

import type { Socket } from "node:net";
import { Duplex } from "node:stream";
import { AgentError, AgentErrors } from "../errors.ts";
import type { DataplaneContext, LocalPod } from "./context.ts";
import type { Endpoint } from "./endpoint.ts";
import { serveTunnel } from "./inbound.ts";
import { ioDeadline } from "./io-deadline.ts";
import { sameNodeCaller } from "./mtls.ts";
import type { PodContext } from "./pod.ts";
import type { TunnelRequest } from "./tunnel.ts";

/** What a net.Socket does with its writes once the peer has closed: they fail. */
function brokenPipe(): NodeJS.ErrnoException {
  return Object.assign(new Error("write after the other end closed"), { code: "EPIPE" });
}

function connectionReset(): NodeJS.ErrnoException {
  return Object.assign(new Error("the other end reset the connection"), { code: "ECONNRESET" });
}

/**
 * One end of an in-memory connection, with what the data path asks of a net.Socket (pipe.ts,
 * Node's HTTP server, undici): bytes read, addresses, a reset, an end that closes once written.
 * Unlike `stream.duplexPair`, a write completes as soon as the other end has room for it (not
 * once it was read), an end is an end (not a wait for the reader), and closing one end is what
 * closing a TCP socket is to its peer: an end of its input, and writes that fail from then on.
 */
class LocalSocket extends Duplex {
  other!: LocalSocket;
  bytesRead = 0;
  readonly remoteAddress: string;
  readonly localAddress: string;
  readonly remotePort = 0;
  readonly localPort = 0;
  /** A write the other end had no room for: completed when it reads. */
  private blocked: (() => void) | undefined;
  /** The other end has been sent this end's FIN (its input's end). */
  private sentEnd = false;

  constructor(localAddress: string, remoteAddress: string) {
    super({ allowHalfOpen: true });
    this.localAddress = localAddress;
    this.remoteAddress = remoteAddress;
  }

  override _read(): void {
    const resume = this.other.blocked;
    this.other.blocked = undefined;
    resume?.();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    const other = this.other;
    if (other.destroyed) {
      callback(brokenPipe());
      return;
    }
    other.bytesRead += chunk.length;
    if (other.push(chunk)) callback();
    else this.blocked = () => callback();
  }

  override _final(callback: (err?: Error | null) => void): void {
    this.sendEnd();
    callback();
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    // Closed without its end written (never ended, or ended with writes still held back): the
    // other end still gets its input's end, as a FIN, after what it was sent.
    this.sendEnd();
    this.blocked = undefined; // a write of ours the other end had no room for: dropped with us
    const other = this.other;
    // Its writes waiting for our reads never will be read.
    const blocked = other.blocked;
    other.blocked = undefined;
    if (blocked) process.nextTick(blocked);
    callback(err);
  }

  private sendEnd(): void {
    if (this.sentEnd || this.other.destroyed) return;
    this.sentEnd = true;
    this.other.push(null);
  }

  resetAndDestroy(): this {
    if (!this.other.destroyed) this.other.destroy(connectionReset());
    return this.destroy();
  }

  destroySoon(): void {
    if (this.writable) this.end();
    if (this.writableFinished) this.destroy();
    else this.once("finish", () => this.destroy());
  }

  setNoDelay(): this {
    return this;
  }
  setKeepAlive(): this {
    return this;
  }
  ref(): this {
    return this;
  }
  unref(): this {
    return this;
  }
}

const ignore = () => {};

/** Two connected in-memory sockets: the first is `a`'s end (its peer is `b`), the second `b`'s. */
export function localSocketPair(a: string, b: string): [Socket, Socket] {
  const first = new LocalSocket(a, b);
  const second = new LocalSocket(b, a);
  first.other = second;
  second.other = first;
  // As on an accepted socket (dataplane.ts): a reset before the owner listens must not end the worker.
  for (const end of [first, second]) end.on("error", ignore);
  return [first as unknown as Socket, second as unknown as Socket];
}

/**
 * Source side: a tunnel from `from` to `ep`, one of this node's own pods (`to`), served by this
 * worker's destination side. Resolves, as a tunnel through another agent does, once the workload
 * accepted (connect.ts); the destination side's refusal rejects it, as TUNNEL_REFUSED.
 */
export function openLocalTunnel(
  ctx: DataplaneContext,
  from: PodContext,
  to: LocalPod,
  ep: Endpoint,
  req: TunnelRequest,
  timeoutMs: number,
): Promise<Socket> {
  const peer = sameNodeCaller(ctx, from, to.ctx, ep);
  const [source, destination] = localSocketPair(from.pod.ip, to.ctx.pod.ip);
  to.hold(destination);
  const target = `${ep.ip}:${ep.port}`;
  return new Promise((resolve, reject) => {
    let answered = false;
    const refused = (why: string) => {
      source.destroy();
      destination.destroy();
      reject(new AgentError(AgentErrors.TUNNEL_REFUSED, `${target}: ${why}`));
    };
    const deadline = ioDeadline(() => {
      answered = true;
      refused(`no answer within ${timeoutMs} ms`);
    }, timeoutMs);
    const answer = (error: AgentError | undefined) => {
      if (answered) return;
      answered = true;
      deadline.clear();
      if (error) refused(error.code);
      else resolve(source);
    };
    serveTunnel(ctx, to.ctx, destination, req, { peer, sameNode: true }, answer).catch((err: Error) => {
      ctx.log.warn({ pod: to.ctx.key, err: err.message }, "tunnel handler failed");
      answer(new AgentError(AgentErrors.CONNECT_FAILED, err.message));
      destination.destroy();
    });
  });
}
