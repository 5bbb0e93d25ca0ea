// Many tunnels over one mutual-TLS connection, as Istio's HBONE: HTTP/2 over mTLS, each tunnel a
// CONNECT stream carrying the handshake's fields (tunnel.ts) as headers. The source agent keeps
// one connection per (source pod, destination pod), opened with the source pod's certificate and
// checked against the destination's identity once; later tunnels cost a stream, not a handshake.
// (A connection leaves from the source pod's namespace and lands in the destination pod's, like
// ztunnel's in-pod mode, whose pool has the same key.) The destination agent answers a stream only
// once the workload accepted: 200, else the error's status with `x-nodemesh-error` and the end.
//
// A stream stands in for the socket of a one-tunnel connection (asTunnelSocket), so the rest of
// the data path (pipes, the HTTP client and server) does not know which framing it got.

import http2 from "node:http2";
import type { Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import { TUNNEL_PORT } from "../../api/dataplane.ts";
import { AgentError, AgentErrors } from "../errors.ts";
import { dial, type SocketMaker } from "./dial.ts";
import type { Endpoint } from "./endpoint.ts";
import { clientError } from "./http/errors.ts";
import { ioDeadline } from "./io-deadline.ts";
import { connectMutualTls, type WorkerIdentity } from "./mtls.ts";
import type { PodContext } from "./pod.ts";
import { type TunnelRequest, tunnelRequestOf } from "./tunnel.ts";

const { NGHTTP2_CONNECT_ERROR, NGHTTP2_CANCEL, NGHTTP2_REFUSED_STREAM } = http2.constants;

/**
 * Flow control: a bulk tunnel must not stall on WINDOW_UPDATEs every 64 KiB (HTTP/2's default),
 * and a reader that does not keep up leaves at most a stream window buffered per tunnel.
 */
const STREAM_WINDOW = 1 << 20;
const CONNECTION_WINDOW = 16 << 20;
/** Tunnels one connection carries at once; the client's HTTP/2 code queues beyond it. */
const MAX_TUNNELS_PER_CONNECTION = 10_000;
const SESSION_OPTIONS = {
  settings: { initialWindowSize: STREAM_WINDOW, maxConcurrentStreams: MAX_TUNNELS_PER_CONNECTION, enablePush: false },
  // In MB. Node's default (10) would end the whole connection, every tunnel on it, under a burst.
  maxSessionMemory: 256,
};
/**
 * A connection without tunnels is closed after this long by the source; the destination waits
 * twice as long, so it is nearly always the source that ends it (between its own streams).
 */
export const MUX_IDLE_MS = 60_000;
/**
 * A connection carrying tunnels is PINGed this often, and ended when a PING goes unanswered for
 * as long: a peer that vanished without a reset (a node lost) ends its tunnels in seconds rather
 * than at TCP's retransmission timeout.
 */
export const MUX_PING_MS = 15_000;

/** One stream's reset, as RFC 9113 §8.5 says a CONNECT proxy passes on a TCP reset. */
function reset(stream: http2.Http2Stream): void {
  if (!stream.closed) stream.close(NGHTTP2_CONNECT_ERROR);
  stream.destroy();
}

const self = function (this: unknown) {
  return this;
};

/**
 * A stream dressed as the net.Socket the data path drives (pipe.ts, node's HTTP client and
 * server): bytes read, the peer's addresses, a reset the other agent passes on to its side, an
 * end that closes once written; the
 * calls that belong to a TCP connection (keep-alive, Nagle, ref) are the TLS connection's, and
 * no-ops here.
 */
function asTunnelSocket(stream: http2.Http2Stream, connection: Socket): Socket {
  let bytesRead = 0;
  const push = stream.push.bind(stream);
  Object.assign(stream, {
    // Node's HTTP/2 code hands every DATA frame's payload to push(): counted here, once.
    push(chunk: Buffer | null, encoding?: BufferEncoding) {
      if (chunk) bytesRead += chunk.length;
      return push(chunk, encoding);
    },
    resetAndDestroy() {
      reset(stream);
      return stream;
    },
    // As net.Socket's: end, and close once the end is written.
    destroySoon() {
      if (stream.writable) stream.end();
      if (stream.writableFinished) stream.destroy();
      else stream.once("finish", () => stream.destroy());
    },
    setNoDelay: self,
    setKeepAlive: self,
    ref: self,
    unref: self,
  });
  Object.defineProperties(stream, {
    bytesRead: { get: () => bytesRead },
    remoteAddress: { value: connection.remoteAddress },
    remotePort: { value: connection.remotePort },
    localAddress: { value: connection.localAddress },
    localPort: { value: connection.localPort },
  });
  return stream as unknown as Socket;
}

/**
 * Counts a session's open streams: closes it after `idleMs` with none, and while it has some,
 * ends it when a PING goes unanswered (MUX_PING_MS).
 */
function superviseSession(
  session: http2.Http2Session,
  idleMs: number,
  pingMs = MUX_PING_MS,
): { opened(stream: http2.Http2Stream): void } {
  let open = 0;
  let timer: NodeJS.Timeout | undefined;
  const arm = () => {
    timer = setTimeout(() => session.close(), idleMs);
    timer.unref();
  };
  arm();
  let awaitingPong = false;
  const pinger = setInterval(() => {
    if (open === 0 || session.destroyed) return;
    if (awaitingPong) {
      session.destroy(new Error(`no PING answer within ${pingMs} ms`));
      return;
    }
    awaitingPong = session.ping((err) => {
      if (!err) awaitingPong = false;
    });
  }, pingMs);
  pinger.unref();
  session.once("close", () => {
    clearTimeout(timer);
    clearInterval(pinger);
  });
  return {
    opened(stream) {
      if (open++ === 0) clearTimeout(timer);
      stream.once("close", () => {
        if (--open === 0 && !session.closed) arm();
      });
    },
  };
}

interface Connection {
  /** The certificate it was opened with: a renewed one opens a new connection. */
  readonly mine: WorkerIdentity;
  readonly session: Promise<{
    session: http2.ClientHttp2Session;
    socket: TLSSocket;
    idle: ReturnType<typeof superviseSession>;
  }>;
}

/** What made a CONNECT fail before the destination answered it, for opening it again elsewhere. */
class StreamRefused extends Error {}

/**
 * The mTLS connections of one worker: those it opened (source side), by (source pod, destination
 * pod), and those it accepts (destination side).
 */
export class TunnelConnections {
  private readonly sockets: SocketMaker;
  private readonly byPair = new Map<string, Connection>();
  private readonly served = new Set<http2.ServerHttp2Session>();
  private readonly onConnection: () => void;
  private readonly pingMs: number;

  /** `onConnection`: called for every TLS connection opened (a metric). */
  constructor(sockets: SocketMaker, onConnection: () => void = () => {}, pingMs = MUX_PING_MS) {
    this.sockets = sockets;
    this.onConnection = onConnection;
    this.pingMs = pingMs;
  }

  /**
   * A tunnel from `from` to `ep` carrying `headers` (the handshake's), once the destination agent
   * connected to the workload. `identity`: the source pod's certificate, asked at each attempt, so
   * that a retry never reopens a connection with a certificate a renewal already replaced (which
   * would close the connection of the new one under its tunnels). A connection its destination
   * closed for new streams (GOAWAY) is replaced once.
   */
  async open(
    identity: () => WorkerIdentity,
    from: PodContext,
    ep: Endpoint,
    headers: Record<string, string>,
    timeoutMs: number,
  ): Promise<Socket> {
    const deadline = Date.now() + timeoutMs;
    const pair = `${from.key}>${ep.ip}`;
    for (let attempt = 0; ; attempt++) {
      const remaining = Math.max(1, deadline - Date.now());
      const connection = this.connection(pair, identity(), from, ep, remaining);
      let opened: Awaited<Connection["session"]>;
      try {
        opened = await connection.session;
      } catch (err) {
        // No connection (dial, TLS): the next tunnel tries a new one.
        if (this.byPair.get(pair) === connection) this.byPair.delete(pair);
        throw err;
      }
      try {
        const { session, socket, idle } = opened;
        // The answer has a budget of its own: it waits on the destination agent's connect (connect.ts).
        return await this.connect(session, socket, idle, ep, headers, timeoutMs);
      } catch (err) {
        // A refusal the destination answered leaves the connection as it is, shared.
        if (!(err instanceof StreamRefused) || attempt > 0) throw err;
        if (this.byPair.get(pair) === connection) this.byPair.delete(pair);
      }
    }
  }

  /** Destination side: serves the tunnels of an accepted connection (acceptTunnels). */
  serve(socket: TLSSocket, onTunnel: (tunnel: Socket, req: TunnelRequest, answer: TunnelAnswer) => void): void {
    const session = acceptTunnels(socket, onTunnel);
    this.served.add(session);
    session.once("close", () => this.served.delete(session));
  }

  /** Stopping: every connection takes no new tunnel (GOAWAY) and ends once its open ones have. */
  closeAll(): void {
    for (const session of this.served) session.close();
    for (const { session } of this.byPair.values())
      session.then(
        ({ session }) => session.close(),
        () => {},
      );
    this.byPair.clear();
  }

  /** The pod's connections go: it left this node. */
  dropPod(podKey: string): void {
    for (const [pair, connection] of this.byPair) {
      if (!pair.startsWith(`${podKey}>`)) continue;
      this.byPair.delete(pair);
      connection.session.then(
        ({ session }) => session.close(),
        () => {},
      );
    }
  }

  private connection(pair: string, mine: WorkerIdentity, from: PodContext, ep: Endpoint, timeoutMs: number) {
    const known = this.byPair.get(pair);
    if (known?.mine === mine) return known;
    // A renewed certificate: tunnels already open stay on the old connection until they end.
    if (known)
      known.session.then(
        ({ session }) => session.close(),
        () => {},
      );
    const connection: Connection = { mine, session: this.handshake(pair, mine, from, ep, timeoutMs) };
    this.byPair.set(pair, connection);
    return connection;
  }

  private async handshake(pair: string, mine: WorkerIdentity, from: PodContext, ep: Endpoint, timeoutMs: number) {
    const deadline = Date.now() + timeoutMs;
    const plain = await dial(this.sockets, { netns: from.netns, ip: ep.ip, port: TUNNEL_PORT, timeoutMs });
    let socket: TLSSocket;
    try {
      socket = await connectMutualTls(mine, ep, plain, Math.max(1, deadline - Date.now()));
    } catch (err) {
      plain.destroy();
      throw err;
    }
    this.onConnection();
    const session = http2.connect(`https://${ep.ip}`, { ...SESSION_OPTIONS, createConnection: () => socket });
    // A session's error ends its streams, which report to their tunnels; unhandled, it would end the worker.
    session.on("error", () => {});
    const forget = () => {
      if (this.byPair.get(pair)?.mine === mine) this.byPair.delete(pair);
    };
    session.once("goaway", forget);
    session.once("close", forget);
    session.setLocalWindowSize(CONNECTION_WINDOW);
    return { session, socket, idle: superviseSession(session, MUX_IDLE_MS, this.pingMs) };
  }

  private connect(
    session: http2.ClientHttp2Session,
    socket: TLSSocket,
    idle: ReturnType<typeof superviseSession>,
    ep: Endpoint,
    headers: Record<string, string>,
    timeoutMs: number,
  ): Promise<Socket> {
    const target = `${ep.ip}:${ep.port}`;
    if (session.closed || session.destroyed) return Promise.reject(new StreamRefused("connection closed"));
    const stream = session.request({ ":method": "CONNECT", ":authority": target, ...headers }, { endStream: false });
    idle.opened(stream);
    return new Promise((resolve, reject) => {
      const fail = (err: Error) => {
        deadline.clear();
        stream.removeListener("response", onResponse);
        if (!stream.destroyed) {
          stream.close(NGHTTP2_CANCEL);
          stream.destroy();
        }
        reject(err);
      };
      const onResponse = (answer: http2.IncomingHttpHeaders) => {
        deadline.clear();
        stream.removeListener("close", onClose);
        stream.removeListener("error", onError);
        if (Number(answer[":status"]) === 200) {
          // Errors after the answer are the pipe's or the HTTP client's to handle.
          stream.on("error", () => {});
          stream.pause();
          resolve(asTunnelSocket(stream, socket));
          return;
        }
        const reason = String(answer["x-nodemesh-error"] ?? `status ${answer[":status"]}`);
        fail(new AgentError(AgentErrors.TUNNEL_REFUSED, `${target}: ${reason}`));
      };
      const onClose = () =>
        fail(
          stream.rstCode === NGHTTP2_REFUSED_STREAM
            ? new StreamRefused(`${target}: refused by a closing connection`)
            : new AgentError(AgentErrors.TUNNEL_REFUSED, `${target}: stream closed (code ${stream.rstCode})`),
        );
      const onError = (err: Error) => fail(new AgentError(AgentErrors.TUNNEL_REFUSED, `${target}: ${err.message}`));
      const deadline = ioDeadline(
        () => fail(new AgentError(AgentErrors.TUNNEL_REFUSED, `${target}: no answer within ${timeoutMs} ms`)),
        timeoutMs,
      );
      stream.once("response", onResponse);
      stream.once("close", onClose);
      stream.once("error", onError);
    });
  }
}

/** Destination side: answers a tunnel, as `answerTunnel` does on a plaintext connection. */
export type TunnelAnswer = (error: AgentError | undefined) => void;

/**
 * Destination side: serves the tunnels of one mTLS connection (its ALPN said h2); `onTunnel` gets
 * each as a socket with its request, and answers it through `answer`. Closing the session returned
 * (GOAWAY) lets its tunnels finish and tells the source to open new ones elsewhere.
 */
export function acceptTunnels(
  socket: TLSSocket,
  onTunnel: (tunnel: Socket, req: TunnelRequest, answer: TunnelAnswer) => void,
): http2.ServerHttp2Session {
  const session = http2.performServerHandshake(socket, SESSION_OPTIONS);
  session.on("error", () => socket.destroy());
  session.setLocalWindowSize(CONNECTION_WINDOW);
  socket.once("close", () => session.destroy());
  const idle = superviseSession(session, 2 * MUX_IDLE_MS);
  session.on("stream", (stream, headers) => {
    idle.opened(stream);
    stream.on("error", () => {});
    const answer: TunnelAnswer = (error) => {
      if (stream.destroyed) return;
      if (!error) {
        stream.respond({ ":status": 200 });
        return;
      }
      const { status, code } = clientError(error);
      stream.respond({ ":status": status, "x-nodemesh-error": code }, { endStream: true });
    };
    let req: TunnelRequest;
    try {
      if (headers[":method"] !== "CONNECT") throw new AgentError(AgentErrors.TUNNEL_PROTOCOL, "expected CONNECT");
      req = tunnelRequestOf(String(headers[":authority"] ?? ""), (name) => {
        const value = headers[name];
        return typeof value === "string" ? value : undefined;
      });
    } catch (err) {
      answer(err as AgentError);
      return;
    }
    stream.pause();
    onTunnel(asTunnelSocket(stream, socket), req, answer);
  });
  return session;
}
