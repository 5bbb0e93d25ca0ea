// The HTTP servers of a worker: one HTTP/1.1 and one HTTP/2 (h2c) server that never listen;
// connections the agent accepted and classified are handed to them. Node's parser is strict
// (llhttp without lenient flags): Content-Length with Transfer-Encoding, differing duplicate
// Content-Length, bad chunk sizes, obs-fold and oversized heads are refused before any request
// exists. An HTTP/1.1 request without Host, or with two, is refused here. Slow clients meet the
// header timeout.

import type { IncomingMessage, Server, ServerResponse } from "node:http";
import http2 from "node:http2";
import type { Socket } from "node:net";
import { http } from "../../../api/node-http.ts";
import { AgentError, type AgentErrorKind, AgentErrors } from "../../errors.ts";
import type { DataplaneContext, HttpServing } from "../context.ts";
import {
  DEFAULT_FLOOD_LIMITS,
  HTTP2_CONTROL_FRAMES_PER_S,
  PREMATURE_RESET_MIN_STREAMS,
  PREMATURE_RESET_WINDOW_MS,
} from "../limits.ts";
import type { ProxyTarget } from "../pod.ts";
import { proxyRequest } from "./chain.ts";
import { type Downstream, Http1Downstream, Http2Downstream } from "./downstream.ts";
import { UpgradeDownstream } from "./downstream-upgrade.ts";
import { clientError, errorHeaders, rawErrorAnswer } from "./errors.ts";
import { countHeader } from "./headers.ts";
import { routeOf } from "./resolve.ts";
import type { HttpProtocol } from "./upstream.ts";

export interface FrontendOptions {
  /** Time a client has to send a complete request head (slowloris). */
  headersTimeoutMs: number;
  /** Largest request head accepted (431 above it). */
  maxHeaderBytes: number;
  /** An idle keep-alive connection from a client is closed after this. */
  keepAliveTimeoutMs: number;
  /** Concurrent streams one HTTP/2 client connection may have open. */
  http2MaxStreams: number;
}

export const DEFAULT_FRONTEND_OPTIONS: FrontendOptions = {
  headersTimeoutMs: 10_000,
  maxHeaderBytes: 16 * 1024,
  keepAliveTimeoutMs: 60_000,
  http2MaxStreams: DEFAULT_FLOOD_LIMITS.http2Streams,
};

const TARGET = Symbol("nodemesh.target");
/** Per HTTP/1.1 connection: requests in flight, and since when it has had none (the drain's sweep). */
const IN_FLIGHT = Symbol("nodemesh.inFlight");
const IDLE_SINCE = Symbol("nodemesh.idleSince");
type Activity = { [IN_FLIGHT]?: number; [IDLE_SINCE]?: number };
/** While draining: how often idle connections are looked at at most, and how long idle counts as left alone. */
const IDLE_SWEEP_MS = 250;
const IDLE_CLOSE_MS = 1000;
type WithTarget = { [TARGET]?: ProxyTarget };
/** Per HTTP/2 session: streams opened, and those the client reset early (the rapid-reset check). */
const STREAMS = Symbol("nodemesh.streams");
type StreamCounts = { [STREAMS]?: { opened: number; resetEarly: number } };

/**
 * The target of an HTTP/2 session's connection. A stream handed over as a plain Duplex (an mTLS
 * tunnel, see serve) reaches the session wrapped in Node's JSStreamSocket, which keeps it as `stream`.
 */
function sessionTarget(socket: unknown): ProxyTarget | undefined {
  const s = socket as (WithTarget & { stream?: WithTarget }) | undefined;
  return s?.[TARGET] ?? s?.stream?.[TARGET];
}

/**
 * HTTP/2's graceful shutdown (RFC 9113 §6.8): a GOAWAY naming the highest stream id first, so a
 * request the client sends meanwhile is still served, then, a second later, the GOAWAY with the
 * last stream taken (Node's close()); the streams in flight finish.
 */
function goAway(session: http2.ServerHttp2Session): void {
  if (session.closed || session.destroyed) return;
  session.goaway(http2.constants.NGHTTP2_NO_ERROR, 2 ** 31 - 1);
  setTimeout(() => {
    if (!session.closed && !session.destroyed) session.close();
  }, 1000).unref();
}

/** A header list's size as HTTP/2 counts it: names and values, and 32 octets of overhead each. */
function headerListSize(rawHeaders: readonly string[]): number {
  let size = 0;
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) size += rawHeaders[i]!.length + rawHeaders[i + 1]!.length + 32;
  return size;
}

/** An absolute-form request target (RFC 9112 §3.2.2); the scheme is case-insensitive. */
const ABSOLUTE_FORM = /^https?:\/\//i;

/** Node's parser errors → the agent's error table. */
function parserErrorKind(err: NodeJS.ErrnoException): AgentErrorKind {
  if (err.code === "HPE_HEADER_OVERFLOW") return AgentErrors.HEADERS_TOO_LARGE;
  if (err.code === "ERR_HTTP_REQUEST_TIMEOUT" || err.code === "ERR_HTTP_HEADERS_TIMEOUT") {
    return AgentErrors.CLIENT_TIMEOUT;
  }
  return AgentErrors.BAD_REQUEST;
}

export class HttpFrontend implements HttpServing {
  private readonly h1: Server;
  private readonly h2: http2.Http2Server;
  /** Set by drain(): every answer from then on closes its connection. */
  private draining = false;
  /** HTTP/1.1 responses not yet started, and open HTTP/2 sessions: what drain() tells to close. */
  private readonly pendingResponses = new Set<ServerResponse>();
  private readonly sessions = new Set<http2.ServerHttp2Session>();
  /** Open HTTP/1.1 connections, for the drain's sweep of idle ones. */
  private readonly h1Sockets = new Set<Socket>();
  readonly headersTimeoutMs: number;
  private readonly maxHeaderBytes: number;
  private readonly ctx: DataplaneContext;

  constructor(ctx: DataplaneContext, opts: FrontendOptions = DEFAULT_FRONTEND_OPTIONS) {
    this.ctx = ctx;
    this.headersTimeoutMs = opts.headersTimeoutMs;
    this.maxHeaderBytes = opts.maxHeaderBytes;
    this.h1 = http.createServer(
      {
        maxHeaderSize: opts.maxHeaderBytes,
        headersTimeout: opts.headersTimeoutMs,
        requestTimeout: 0,
        keepAliveTimeout: opts.keepAliveTimeoutMs,
        connectionsCheckingInterval: Math.max(100, Math.min(1000, opts.headersTimeoutMs / 4)),
        insecureHTTPParser: false,
        // A request without Host is refused by http1Refusal, through the error table.
        requireHostHeader: false,
        // A request without Content-Length or Transfer-Encoding has no body: its stream starts out
        // ended, so the upstream request is ended at once instead of after a round of stream events.
        optimizeEmptyRequests: true,
      },
      (req, res) => this.onRequest(req, res),
    );
    // A client that half-closes after its request still gets the answer (node's default aborts it).
    (this.h1 as Server & { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true;
    this.h1.on("clientError", (err: NodeJS.ErrnoException, socket: Socket) => this.onClientError(err, socket));
    // WebSocket and other upgrades: handled like any request; a pipe only once the upstream agreed.
    this.h1.on("upgrade", (req, socket: Socket, head: Buffer) => this.onUpgrade(req, socket, head));
    // CONNECT asks for a tunnel to where the request names: never to be proxied to a Service port.
    this.h1.on("connect", (_req, socket: Socket) => {
      this.refuse((socket as unknown as WithTarget)[TARGET]?.direction ?? "outbound", socket, AgentErrors.BAD_REQUEST);
    });
    // The server never listens, but its header-timeout sweep starts on "listening".
    this.h1.emit("listening");

    // nghttp2 ends a connection on its own for a CONTINUATION flood; SETTINGS and PING frames are
    // counted per session and header lists measured per stream below (HPACK bombs);
    // maxSessionMemory bounds the rest.
    this.h2 = http2.createServer({
      maxSessionMemory: 10,
      maxHeaderListPairs: 128,
      settings: { maxHeaderListSize: opts.maxHeaderBytes, maxConcurrentStreams: opts.http2MaxStreams },
    });
    this.h2.on("stream", (stream, headers, _flags, rawHeaders) => {
      // First, before any early return: 'stream' is emitted a tick after nghttp2 parsed the
      // HEADERS, and when the connection's bytes were already buffered (they always are: detection
      // read them) the same parse may have reset the stream (RFC 9113 §8.1.1, a body that
      // contradicts content-length). Its 'error' then follows this handler; unheard, it would
      // take the worker down.
      stream.on("error", () => {});
      const target = sessionTarget(stream.session?.socket);
      if (!this.countStream(stream, target)) return;
      // Already reset, by nghttp2 (PROTOCOL_ERROR) or the client (a RST_STREAM read with the HEADERS).
      if (stream.closed || stream.destroyed) return;
      // nghttp2 advertises SETTINGS_MAX_HEADER_LIST_SIZE but lets a larger list through: measured
      // here as RFC 9113 §6.5.2 counts it, and answered as HTTP/1.1's 431.
      if (headerListSize(rawHeaders) > this.maxHeaderBytes) {
        this.ctx.metrics.malformed.labels(target?.direction ?? "outbound", AgentErrors.HEADERS_TOO_LARGE.code).inc();
        const grpc = String(headers["content-type"] ?? "").startsWith("application/grpc");
        const e = clientError(new AgentError(AgentErrors.HEADERS_TOO_LARGE));
        stream.respond({ ":status": grpc ? 200 : e.status, ...errorHeaders(e, grpc) }, { endStream: true });
        return;
      }
      if (!target) {
        stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
        return;
      }
      proxyRequest(this.ctx, new Http2Downstream(stream, headers, rawHeaders), target).catch((err) => {
        this.failed(err);
        if (!stream.destroyed) stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
      });
    });
    this.h2.on("sessionError", () => {});
    this.h2.on("session", (session) => {
      session.on("error", () => {});
      // nghttp2 bounds what unread answers to these may queue; this bounds the work of reading them.
      const controlFrame = this.controlFrameCounter(session);
      session.on("ping", controlFrame);
      session.on("remoteSettings", controlFrame);
      if (this.draining) goAway(session);
      this.sessions.add(session);
      session.once("close", () => this.sessions.delete(session));
    });
  }

  /**
   * The agent is being replaced: idle HTTP/1.1 connections close, busy ones after their answer
   * (`Connection: close`), HTTP/2 sessions get GOAWAY (their streams in flight finish); clients reconnect, to the
   * agent that took over the listeners.
   */
  drain(idleCloseMs = IDLE_CLOSE_MS): void {
    this.draining = true;
    for (const res of this.pendingResponses) if (!res.headersSent) res.shouldKeepAlive = false;
    // Keep-alive connections a client leaves idle close once they have been idle `idleCloseMs` (a
    // client reuses its busiest ones first, so those get `Connection: close` on their next answer
    // instead); waiting for the drain deadline would leave many more to race with a reuse.
    const sweep = setInterval(() => this.closeLongIdle(idleCloseMs), Math.min(IDLE_SWEEP_MS, idleCloseMs));
    sweep.unref();
    for (const session of this.sessions) goAway(session);
  }

  /** A counter of the client's SETTINGS and PING frames that closes the session past the limit (limits.ts). */
  private controlFrameCounter(session: http2.ServerHttp2Session): () => void {
    let windowStart = Date.now();
    let frames = 0;
    return () => {
      const now = Date.now();
      if (now - windowStart >= 1000) {
        windowStart = now;
        frames = 0;
      }
      if (++frames <= HTTP2_CONTROL_FRAMES_PER_S || session.destroyed) return;
      const direction = sessionTarget(session.socket)?.direction ?? "outbound";
      this.ctx.metrics.malformed.labels(direction, AgentErrors.CONTROL_FRAME_FLOOD.code).inc();
      session.goaway(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
      session.destroy();
    };
  }

  /**
   * Counts the stream for the rapid-reset check (limits.ts): false once its session is closed for
   * resetting too many streams early, so no work starts for it.
   */
  private countStream(stream: http2.ServerHttp2Stream, target: ProxyTarget | undefined): boolean {
    const session = stream.session as (http2.ServerHttp2Session & StreamCounts) | undefined;
    if (!session || session.destroyed) return false;
    session[STREAMS] ??= { opened: 0, resetEarly: 0 };
    const counts = session[STREAMS];
    counts.opened++;
    const resetEarly = () => {
      counts.resetEarly++;
      if (counts.opened < PREMATURE_RESET_MIN_STREAMS || counts.resetEarly * 2 <= counts.opened) return;
      this.ctx.metrics.malformed.labels(target?.direction ?? "outbound", AgentErrors.RAPID_RESET.code).inc();
      if (!session.destroyed) {
        session.goaway(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
        session.destroy();
      }
    };
    if (stream.closed || stream.destroyed) {
      resetEarly();
    } else {
      const openedAt = Date.now();
      // "aborted": the client reset the stream before our answer ended.
      stream.once("aborted", () => {
        if (Date.now() - openedAt < PREMATURE_RESET_WINDOW_MS) resetEarly();
      });
    }
    return !session.destroyed;
  }

  /** HTTP/1.1 connections idle (no request in flight) for `idleCloseMs`: ended, while draining. */
  private closeLongIdle(idleCloseMs: number): void {
    const now = Date.now();
    for (const socket of this.h1Sockets) {
      const state = socket as unknown as Activity;
      if ((state[IN_FLIGHT] ?? 0) === 0 && now - (state[IDLE_SINCE] ?? 0) >= idleCloseMs) socket.end();
    }
  }

  /** Serves `socket` (paused, its first bytes pushed back) as HTTP of the given version. */
  serve(socket: Socket, protocol: HttpProtocol, target: ProxyTarget): void {
    if (protocol === "h2") {
      (socket as unknown as WithTarget)[TARGET] = target;
      this.h2.emit("connection", socket);
      return;
    }
    (socket as unknown as Activity)[IDLE_SINCE] = Date.now();
    this.h1Sockets.add(socket);
    socket.once("close", () => this.h1Sockets.delete(socket));
    (socket as unknown as WithTarget)[TARGET] = target;
    this.h1.emit("connection", socket);
    socket.resume();
  }

  serveRequest(down: Downstream, target: ProxyTarget): Promise<void> {
    return proxyRequest(this.ctx, down, target);
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    const target = (req.socket as unknown as WithTarget)[TARGET];
    if (!target) {
      res.destroy();
      return;
    }
    const refusal = this.http1Refusal(req, target);
    if (refusal) {
      this.refuse(target.direction, req.socket, refusal);
      return;
    }
    const activity = req.socket as unknown as Activity;
    activity[IN_FLIGHT] = (activity[IN_FLIGHT] ?? 0) + 1;
    if (this.draining) res.shouldKeepAlive = false;
    else this.pendingResponses.add(res);
    let settled = false;
    const settle = () => {
      if (settled) return;
      settled = true;
      this.pendingResponses.delete(res);
      activity[IN_FLIGHT] = (activity[IN_FLIGHT] ?? 1) - 1;
      activity[IDLE_SINCE] = Date.now();
    };
    res.once("finish", settle);
    res.once("close", settle);
    proxyRequest(this.ctx, new Http1Downstream(req, res), target).catch((err) => {
      this.failed(err);
      req.socket.destroy();
    });
  }

  /**
   * What makes an HTTP/1 request one the agent answers itself with an error: a version other than
   * 1.x (llhttp also parses HTTP/0.9 and "HTTP/2.0" request lines), two Host headers, or a port
   * declared gRPC, which only HTTP/2 can carry.
   */
  private http1Refusal(req: IncomingMessage, target: ProxyTarget): AgentErrorKind | undefined {
    // RFC 9112 §3.2: one Host header in HTTP/1.1 (the upstream client would otherwise invent one),
    // and a target in origin or absolute form (CONNECT's authority form is refused apart; OPTIONS *
    // is not forwarded).
    const hosts = countHeader(req.rawHeaders, "host");
    if (req.httpVersionMajor !== 1 || hosts > 1 || (hosts === 0 && req.httpVersionMinor >= 1)) {
      return AgentErrors.BAD_REQUEST;
    }
    const url = req.url ?? "";
    if (url.charCodeAt(0) !== 47 /* "/" */ && !ABSOLUTE_FORM.test(url)) return AgentErrors.BAD_REQUEST;
    return routeOf(this.ctx.snapshot(), target, req.headers)?.protocol === "grpc"
      ? AgentErrors.GRPC_NEEDS_HTTP2
      : undefined;
  }

  /** A request the proxy failed to handle: a bug, logged with its stack; only its client is cut. */
  private failed(err: unknown): void {
    this.ctx.log.error({ err }, "HTTP request handler failed");
  }

  private onClientError(err: NodeJS.ErrnoException, socket: Socket): void {
    const target = (socket as unknown as WithTarget)[TARGET];
    this.refuse(target?.direction ?? "outbound", socket, parserErrorKind(err));
  }

  private refuse(direction: "outbound" | "inbound", socket: Socket, kind: AgentErrorKind): void {
    this.ctx.metrics.malformed.labels(direction, kind.code).inc();
    if (socket.writable && !(socket as { _httpMessage?: { headersSent?: boolean } })._httpMessage?.headersSent) {
      socket.end(rawErrorAnswer(new AgentError(kind)));
    }
    socket.destroySoon();
  }

  private onUpgrade(req: IncomingMessage, socket: Socket, head: Buffer): void {
    const target = (socket as unknown as WithTarget)[TARGET];
    if (!target) {
      socket.destroy();
      return;
    }
    // An Upgrade request's body would have to reach the app before the switch, and what follows a
    // 101 is the new protocol's: a request that carries both is refused, never guessed at.
    const hasBody = req.headers["transfer-encoding"] !== undefined || Number(req.headers["content-length"] ?? 0) > 0;
    const refusal = this.http1Refusal(req, target) ?? (hasBody ? AgentErrors.BAD_REQUEST : undefined);
    if (refusal) {
      this.refuse(target.direction, socket, refusal);
      return;
    }
    proxyRequest(this.ctx, new UpgradeDownstream(req, socket, head), target).catch((err) => {
      this.failed(err);
      socket.destroy();
    });
  }
}
