// Pooled upstream connections, one pool per (source pod, endpoint, protocol) in each worker: the
// socket must leave from the source pod's namespace, so pools cannot be shared across pods.
// HTTP/1.1 reuses keep-alive connections (undici's Pool, with our own connect); HTTP/2 and
// gRPC multiplex streams over one session per endpoint. Circuit breaking on connections and
// pending requests is enforced here, on the shared counters.

import http2 from "node:http2";
import { createRequire } from "node:module";
import type { Socket } from "node:net";
import type { Dispatcher, Pool as UndiciPool } from "undici";
import { httpOrigin } from "../../../api/http-origin.ts";
import { AgentError, AgentErrors } from "../../errors.ts";
import type { Endpoint } from "../endpoint.ts";
import type { PodContext } from "../pod.ts";
import type { SharedState } from "../shared-state.ts";

export type HttpProtocol = "http1" | "h2";

export interface ConnectionLimits {
  readonly maxConnections: number;
  readonly maxPending: number;
  readonly connectTimeoutMs: number;
  readonly idleTimeoutMs: number;
}

/**
 * Opens one upstream connection for a pool (directly, or through the endpoint's agent, which is
 * told to serve it as HTTP of `protocol`); resolves once it is connected.
 */
export type Connector = (from: PodContext, ep: Endpoint, protocol: HttpProtocol, timeoutMs: number) => Promise<Socket>;

// undici's Pool alone: its index also loads fetch, WebSocket, caches and mocks, which a worker
// never uses (required alone, 15 MB more RSS and 3.7 MB more heap; in the idle agent, ~2.5 MB).
const Pool = createRequire(import.meta.url)("undici/lib/dispatcher/pool.js") as typeof UndiciPool;

/** Largest upstream response head (as Node's default for its own client). */
const MAX_RESPONSE_HEAD_BYTES = 16 * 1024;

/** The release of a request that did not wait for a connection. */
const NOTHING_TO_RELEASE = () => {};

type Opener = (limits: ConnectionLimits) => Promise<Socket>;

/**
 * HTTP/1.1 keep-alive connections to one endpoint, from one pod: undici's Pool (a client per
 * connection, one request at a time on each) over sockets only `open` makes. Node's http.Agent
 * and ClientRequest cost a fifth more CPU per proxied request (docs/benchmarks.md).
 */
class Http1Pool {
  limits: ConnectionLimits;
  private readonly pool: UndiciPool;
  constructor(open: Opener, origin: string, limits: ConnectionLimits) {
    this.limits = limits;
    this.pool = new Pool(origin, {
      // The only way this pool gets a connection; its socket leaves from the pod's namespace.
      // (Not resumed: undici reads on "readable", and a flowing socket would drop bytes.)
      connect: (_opts, callback) => {
        open(this.limits).then(
          (socket) => callback(null, socket),
          (err: Error) => callback(err, null),
        );
      },
      keepAliveTimeout: limits.idleTimeoutMs,
      keepAliveMaxTimeout: limits.idleTimeoutMs,
      // The request's deadline and per-try timeout are the chain's (call.ts), not the pool's.
      headersTimeout: 0,
      bodyTimeout: 0,
      maxHeaderSize: MAX_RESPONSE_HEAD_BYTES,
    });
  }

  /** True when a request can go out at once on an idle pooled connection. */
  hasIdleConnection(): boolean {
    return this.pool.stats.free > 0;
  }

  dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): void {
    this.pool.dispatch(options, handler);
  }

  /** Idle connections close now, the others once their request is done; no new request is taken. */
  close(): void {
    this.pool.close().catch(() => {});
  }

  /** Every connection closes now, requests on them fail (the pod left). */
  destroy(): void {
    this.pool.destroy().catch(() => {});
  }
}

class Http2Pool {
  private session: http2.ClientHttp2Session | undefined;
  private connecting: Promise<http2.ClientHttp2Session> | undefined;
  limits: ConnectionLimits;
  private readonly open: Opener;
  private readonly authority: string;

  constructor(open: Opener, authority: string, limits: ConnectionLimits) {
    this.open = open;
    this.authority = authority;
    this.limits = limits;
  }

  hasIdleConnection(): boolean {
    return this.session !== undefined && !this.session.closed && !this.session.destroyed;
  }

  get(): Promise<http2.ClientHttp2Session> {
    if (this.hasIdleConnection()) return Promise.resolve(this.session!);
    this.connecting ??= this.open(this.limits)
      .then((socket) => {
        const session = http2.connect(this.authority, { createConnection: () => socket });
        // Session errors (a reset, a protocol error) end its streams, which report to their
        // requests; unhandled, the error would take the worker down.
        session.on("error", () => {});
        const forget = () => {
          if (this.session === session) this.session = undefined;
        };
        session.once("close", forget);
        session.once("goaway", forget);
        session.setTimeout(this.limits.idleTimeoutMs, () => {
          // Idle = no stream for the whole period.
          if (!session.closed) session.close();
        });
        this.session = session;
        return session;
      })
      .finally(() => {
        this.connecting = undefined;
      });
    return this.connecting;
  }

  close(): void {
    this.session?.close();
  }
}

export class UpstreamPools {
  private readonly h1 = new Map<string, Http1Pool>();
  private readonly h2 = new Map<string, Http2Pool>();

  private readonly shared: SharedState;
  private readonly connector: Connector;
  constructor(shared: SharedState, connector: Connector) {
    this.shared = shared;
    this.connector = connector;
  }

  private opener(from: PodContext, ep: Endpoint, protocol: HttpProtocol) {
    return async (limits: ConnectionLimits): Promise<Socket> => {
      if (!this.shared.tryOpenConnection(ep.slot, limits.maxConnections)) {
        throw new AgentError(AgentErrors.CIRCUIT_OPEN, `${ep.ip}:${ep.port}: max connections`);
      }
      let socket: Socket;
      try {
        socket = await this.connector(from, ep, protocol, limits.connectTimeoutMs);
      } catch (err) {
        this.shared.connectionClosed(ep.slot);
        throw err;
      }
      socket.once("close", () => this.shared.connectionClosed(ep.slot));
      return socket;
    };
  }

  http1(from: PodContext, ep: Endpoint, limits: ConnectionLimits): Http1Pool {
    const key = `${from.key}|${ep.ip}:${ep.port}`;
    let pool = this.h1.get(key);
    if (!pool) {
      pool = new Http1Pool(this.opener(from, ep, "http1"), httpOrigin(ep.ip, ep.port), limits);
      this.h1.set(key, pool);
    }
    pool.limits = limits;
    return pool;
  }

  http2(from: PodContext, ep: Endpoint, limits: ConnectionLimits): Http2Pool {
    const key = `${from.key}|${ep.ip}:${ep.port}`;
    let pool = this.h2.get(key);
    if (!pool) {
      pool = new Http2Pool(this.opener(from, ep, "h2"), httpOrigin(ep.ip, ep.port), limits);
      this.h2.set(key, pool);
    }
    pool.limits = limits;
    return pool;
  }

  /**
   * Forgets the pools of endpoints that are no longer in the configuration ("ip:port" keys): idle
   * connections close now, requests in flight finish on theirs. Without this, pools would pile up
   * as endpoints come and go.
   */
  retain(liveEndpoints: ReadonlySet<string>): void {
    for (const [key, pool] of this.h1) {
      if (liveEndpoints.has(key.slice(key.indexOf("|") + 1))) continue;
      pool.close();
      this.h1.delete(key);
    }
    for (const [key, pool] of this.h2) {
      if (liveEndpoints.has(key.slice(key.indexOf("|") + 1))) continue;
      pool.close(); // graceful: streams in flight complete
      this.h2.delete(key);
    }
  }

  /**
   * Stopping: idle connections close now, and each in use closes once its request is done (no
   * more keep-alive); HTTP/2 ones take no new stream and end after their last.
   */
  drain(): void {
    for (const pool of this.h1.values()) pool.close();
    for (const pool of this.h2.values()) pool.close();
    // A request still to come (a retry during the drain) gets a pool of its own.
    this.h1.clear();
    this.h2.clear();
  }

  /** Drops the pools of a pod that left (its namespace is about to close). */
  dropPod(podKey: string): void {
    for (const [key, pool] of this.h1) {
      if (key.startsWith(`${podKey}|`)) {
        pool.destroy();
        this.h1.delete(key);
      }
    }
    for (const [key, pool] of this.h2) {
      if (key.startsWith(`${podKey}|`)) {
        pool.close();
        this.h2.delete(key);
      }
    }
  }

  /**
   * Counts a request as pending while it waits for a new connection (none idle in the pool), and
   * refuses it past `maxPending` (circuit breaking). Returns the release, to call once the request
   * has its connection or failed.
   */
  enterPending(ep: Endpoint, pool: { hasIdleConnection(): boolean; limits: ConnectionLimits }): () => void {
    if (pool.hasIdleConnection()) return NOTHING_TO_RELEASE;
    if (!this.shared.tryStartPending(ep.slot, pool.limits.maxPending)) {
      throw new AgentError(AgentErrors.CIRCUIT_OPEN, `${ep.ip}:${ep.port}: max pending requests`);
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.shared.pendingEnded(ep.slot);
    };
  }
}

export type { Http1Pool, Http2Pool };
