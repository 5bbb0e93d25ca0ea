// One data-plane worker: it owns, for every enrolled pod, its own listeners inside the pod's
// network namespace (SO_REUSEPORT, so the kernel spreads connections over the workers) and the
// current configuration snapshot. Pods and snapshots arrive from the control thread.

import net from "node:net";
import type { Logger } from "pino";
import { INBOUND_PORT, OUTBOUND_PORT, TUNNEL_PORT } from "../../api/dataplane.ts";
import { type EnrolledPod, workloadName } from "../../api/enrollment.ts";
import { AgentErrors } from "../errors.ts";
import {
  type Address,
  allowListenerMigration,
  bindListenerFd,
  isListening,
  Netns,
  originalDst,
  refuseSystemCalls,
  socketFd,
} from "../sys/linux.ts";
import { AccessLog } from "./access-log.ts";
import { EndpointPicker } from "./balancer.ts";
import { connectEndpoint } from "./connect.ts";
import type { DataplaneContext, LocalExchange, LocalPod } from "./context.ts";
import { inPodSockets, type SocketMaker } from "./dial.ts";
import { EdgeAggregator } from "./edges.ts";
import type { Endpoint } from "./endpoint.ts";
import { DEFAULT_FRONTEND_OPTIONS, HttpFrontend } from "./http/frontend.ts";
import { UpstreamPools } from "./http/upstream.ts";
import { handleInbound, handleTunnel } from "./inbound.ts";
import { Gate, workerShare } from "./limits.ts";
import type { WorkerHealth } from "./messages.ts";
import { DataplaneMetrics, type Direction } from "./metrics.ts";
import { identityKey, type Keyring } from "./mtls.ts";
import type { OtlpTransport } from "./otlp-exporter.ts";
import { handleOutbound } from "./outbound.ts";
import { openPipes } from "./pipe.ts";
import type { PodContext } from "./pod.ts";
import type { DataplaneSettings } from "./settings.ts";
import { type SharedBuffers, SharedState } from "./shared-state.ts";
import { compileSnapshot, EMPTY_SNAPSHOT, type Snapshot, type SnapshotMessage } from "./snapshot.ts";
import { Tracer } from "./tracing.ts";
import { TunnelConnections } from "./tunnel-mux.ts";

export interface DataplaneOptions {
  shared: SharedBuffers;
  settings: DataplaneSettings;
  log: Logger;
  /** How upstream sockets are made (default: in the pod's namespace). */
  sockets?: SocketMaker;
  /** Data-plane workers of the agent started so far (this one included): each enforces its share of the per-pod limits. */
  workers?: () => number;
  /** How encoded span batches reach the collector (default: an HTTP client in this thread). */
  spanTransport?: OtlpTransport;
}

interface PodListeners {
  ctx: PodContext;
  servers: net.Server[];
  /**
   * Same-node tunnels to the pod and requests handed over to it in memory (local-tunnel.ts,
   * http/attempt-local.ts): they may still dial from its namespace.
   */
  localExchanges: Set<LocalExchange>;
  /** Set once the pod is removed: called when the last of them closes. */
  onLocalExchangesClosed?: () => void;
}

type Handler = (ctx: DataplaneContext, pod: PodContext, socket: net.Socket) => Promise<void>;

const ignore = () => {};

/** Stopping without a successor: how long a keep-alive connection without a request in flight stays open (stop()). */
const NO_SUCCESSOR_IDLE_CLOSE_MS = 200;

/**
 * Handlers that need the pre-REDIRECT destination read it from the accepted socket first. A
 * socket without one (no conntrack entry, already gone) is refused, never thrown out of the
 * connection callback, where it would take the worker down.
 */
function withOriginalDst(
  direction: Direction,
  handle: (ctx: DataplaneContext, pod: PodContext, socket: net.Socket, dst: Address) => Promise<void>,
): Handler {
  return async (ctx, pod, socket) => {
    let dst: Address;
    try {
      dst = originalDst(socketFd(socket));
    } catch {
      ctx.metrics.refused.labels(direction, AgentErrors.NO_ORIGINAL_DST.code).inc();
      socket.resetAndDestroy();
      return;
    }
    await handle(ctx, pod, socket, dst);
  };
}

const LISTENERS: ReadonlyArray<{ port: number; handler: Handler }> = [
  { port: OUTBOUND_PORT, handler: withOriginalDst("outbound", handleOutbound) },
  { port: INBOUND_PORT, handler: withOriginalDst("inbound", handleInbound) },
  { port: TUNNEL_PORT, handler: handleTunnel },
];

const LISTENER_DIRECTION: Readonly<Record<number, Direction>> = {
  [OUTBOUND_PORT]: "outbound",
  [INBOUND_PORT]: "inbound",
  [TUNNEL_PORT]: "inbound",
};

/** The kernel's default cap (net.core.somaxconn, per namespace since Linux 5.4). */
const LISTEN_BACKLOG = 4096;

/** The listening socket's descriptor, kept on its server to ask the kernel whether it still listens. */
const LISTENER_FD = Symbol("listener fd");
type ServerWithFd = net.Server & { [LISTENER_FD]?: number };

export class Dataplane implements DataplaneContext {
  readonly settings: DataplaneSettings;
  readonly shared: SharedState;
  readonly picker: EndpointPicker;
  readonly pools: UpstreamPools;
  readonly http: HttpFrontend;
  readonly metrics = new DataplaneMetrics();
  readonly edges = new EdgeAggregator();
  readonly accessLog: AccessLog;
  readonly tracer: Tracer;
  readonly log: Logger;
  readonly sockets: SocketMaker;
  readonly tunnels: TunnelConnections;
  /** Replaced whole when the control thread sends the node's certificates again. */
  keyring: Keyring = new Map();
  /** Identities whose first certificate is on its way, and who waits for news of them. */
  private pendingIdentities = new Set<string>();
  private readonly identityWaiters = new Set<() => void>();
  private current: Snapshot = EMPTY_SNAPSHOT;
  private readonly pods = new Map<string, PodListeners>();
  private readonly podsByIp = new Map<string, PodListeners>();
  /** Accepted connections still open, so stop() can wait for them and then end the rest. */
  private readonly connections = new Set<net.Socket>();
  /** Set by outlastStreams: the streams had their drain, stop() cuts them at once. */
  private streamsOutlasted = false;
  private stopping = false;
  /** This node's pods' addresses, once stopped without a successor (stop()). */
  private podsWaitingForNextAgent = new Set<string>();
  /** This worker's share of FloodLimits' per-pod caps (it shrinks as workers are added). */
  private readonly podConnectionCap: () => number;
  private readonly podHandshakeCap: () => number;

  constructor(opts: DataplaneOptions) {
    this.settings = opts.settings;
    const workers = opts.workers ?? (() => 1);
    const { podConnections, podHandshakes } = opts.settings.limits;
    this.podConnectionCap = () => workerShare(podConnections, workers());
    this.podHandshakeCap = () => workerShare(podHandshakes, workers());
    this.shared = new SharedState(opts.shared);
    this.accessLog = new AccessLog(opts.settings.accessLog);
    this.tracer = new Tracer(opts.settings.tracing, this.metrics, opts.spanTransport);
    this.picker = new EndpointPicker(this.shared);
    this.log = opts.log;
    this.sockets = opts.sockets ?? inPodSockets;
    this.tunnels = new TunnelConnections(this.sockets, () =>
      this.metrics.tunnelTlsConnections.labels("outbound").inc(),
    );
    // A pool's connections are HTTP end to end: a meshed endpoint's agent is told to serve them so.
    this.pools = new UpstreamPools(this.shared, (from, ep, protocol, timeoutMs) =>
      connectEndpoint(this, from, ep, timeoutMs, protocol),
    );
    this.http = new HttpFrontend(this, {
      ...DEFAULT_FRONTEND_OPTIONS,
      headersTimeoutMs: opts.settings.headersTimeoutMs,
      http2MaxStreams: opts.settings.limits.http2Streams,
    });
  }

  snapshot(): Snapshot {
    return this.current;
  }

  waitsForNextAgent(ep: Endpoint): boolean {
    return this.podsWaitingForNextAgent.has(ep.ip);
  }

  localPod(ip: string): LocalPod | undefined {
    const entry = this.podsByIp.get(ip);
    if (!entry) return undefined;
    const hold = (exchange: LocalExchange) => {
      entry.localExchanges.add(exchange);
      exchange.once("close", () => {
        entry.localExchanges.delete(exchange);
        if (entry.localExchanges.size > 0) return;
        const closed = entry.onLocalExchangesClosed;
        entry.onLocalExchangesClosed = undefined;
        closed?.();
      });
    };
    return { ctx: entry.ctx, hold };
  }

  setIdentities(keyring: Keyring, pending: readonly string[]): void {
    this.keyring = keyring;
    this.pendingIdentities = new Set(pending);
    for (const wake of this.identityWaiters) wake();
  }

  identitySettled(pod: PodContext, timeoutMs: number): Promise<void> {
    const key = identityKey(pod);
    if (!this.pendingIdentities.has(key)) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.identityWaiters.delete(check);
        resolve();
      };
      const check = () => {
        if (!this.pendingIdentities.has(key)) done();
      };
      const timer = setTimeout(done, timeoutMs);
      this.identityWaiters.add(check);
    });
  }

  applySnapshot(msg: SnapshotMessage): void {
    try {
      this.current = compileSnapshot(msg);
    } catch (err) {
      // The control thread compiled each object before sending (compileProblem), so this is a bug;
      // a worker that threw here would die, and its replacement would get the same snapshot.
      this.log.error(
        { version: msg.version, err: (err as Error).message },
        "snapshot does not compile; keeping the last",
      );
      return;
    }
    // Pools to endpoints that left the configuration go; so do those to a pod's own ports that no
    // Service names any more (they are made again on demand).
    const live = new Set<string>();
    for (const route of this.current.routes.values()) for (const e of route.endpoints) live.add(`${e.ip}:${e.port}`);
    this.pools.retain(live);
  }

  /** Opens the pod's listeners; replaces them if the pod was already known. */
  async addPod(pod: EnrolledPod): Promise<void> {
    const key = `${pod.namespace}/${pod.name}`;
    await this.removePod(key);
    const netns = Netns.open(pod.netnsPath);
    // A successor agent joins these listeners' reuseport groups; what we have not accepted when we
    // close is then migrated to it, not reset.
    if (!allowListenerMigration(netns)) this.log.debug({ pod: key }, "tcp_migrate_req unavailable in the pod");
    const ctx: PodContext = {
      key,
      pod,
      netns,
      workload: { name: workloadName(pod), namespace: pod.namespace },
      handshakes: new Gate(this.podHandshakeCap),
    };
    const servers: net.Server[] = [];
    try {
      for (const { port, handler } of LISTENERS) {
        servers.push(await this.listen(ctx, port, handler));
      }
    } catch (err) {
      for (const s of servers) s.close();
      netns.close();
      throw err;
    }
    const entry = { ctx, servers, localExchanges: new Set<LocalExchange>() };
    this.pods.set(key, entry);
    this.podsByIp.set(pod.ip, entry);
  }

  /**
   * Stops accepting at once; connections in flight finish on their own, without holding up the
   * removal. The namespace fd stays open until the last of them is gone (they may still dial from
   * it), so its number cannot be reused for another pod's namespace meanwhile.
   */
  async removePod(key: string): Promise<void> {
    const entry = this.pods.get(key);
    if (!entry) return;
    this.pods.delete(key);
    if (this.podsByIp.get(entry.ctx.pod.ip) === entry) this.podsByIp.delete(entry.ctx.pod.ip);
    // A connection the kernel completed before this request may still wait in a listener's accept
    // queue, and closing a listener resets those (a client that connected before the unenroll
    // would see a reset). One turn of the event loop lets libuv accept what the poll reported.
    await new Promise((resolve) => setImmediate(resolve));
    this.pools.dropPod(key);
    this.tunnels.dropPod(key);
    // Its listeners' connections, its same-node tunnels and handed-over requests may all still dial from it.
    let open = entry.servers.length + 1;
    const release = () => {
      if (--open === 0) entry.ctx.netns.close();
    };
    for (const server of entry.servers) server.close(release);
    if (entry.localExchanges.size === 0) release();
    else entry.onLocalExchangesClosed = release;
  }

  /**
   * Before the control thread terminates this worker. First it stops accepting: connections the
   * kernel completed are still accepted and served, and what waits in a closed listener's queue
   * moves to a successor's listener in the same reuseport group when one exists (an agent taking
   * over: the pod namespaces allow it, sys/linux.ts allowListenerMigration). Then it asks clients
   * to go elsewhere (HTTP/1.1 `Connection: close` on the next answer, HTTP/2 and tunnel GOAWAY) and
   * lets the connections in flight finish, dialling as usual, for up to `drainMs`. Only then does
   * it stop dialling (every system call of the thread fails as an ordinary error from then on, so
   * no koffi call can be under way when the thread is torn down) and end what is left.
   *
   * `noSuccessor` (stop, then start): no agent serves this node's pods until this one has exited
   * and the next one started, and connections arriving meanwhile wait for it. So the drain is kept
   * short: keep-alive connections idle for NO_SUCCESSOR_IDLE_CLOSE_MS close (clients left them idle
   * for the second HttpFrontend.drain gives them by default: half of the gap), and a request in
   * flight does not dial this node's own pods, whose tunnel ports nobody accepts on until then (it
   * waited out its connect budget there, a second, before trying another endpoint).
   */
  async stop(drainMs = this.settings.drainMs, noSuccessor = false): Promise<void> {
    await this.closeListeners();
    this.stopping = true;
    if (noSuccessor) this.podsWaitingForNextAgent = new Set([...this.pods.values()].map(({ ctx }) => ctx.pod.ip));
    this.http.drain(noSuccessor ? NO_SUCCESSOR_IDLE_CLOSE_MS : undefined);
    // Idle upstream connections would hold the drain to its deadline: the destination agent's
    // side of a pooled tunnel waits for our end of it.
    this.pools.drain();
    this.tunnels.closeAll();
    // Past outlastStreams' deadline (or there was none): streams are cut now, not after another drain.
    if (this.streamsOutlasted) for (const [down, up] of openPipes) for (const s of [down, up]) s.destroy();
    for (let waited = 0; this.connections.size > 0 && waited < drainMs; waited += 20) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    refuseSystemCalls();
    for (const socket of this.connections) socket.destroy();
    for (const { localExchanges } of this.pods.values()) for (const exchange of localExchanges) exchange.destroy();
    // Requests that finished this turn are reported in a setImmediate batch (http/record.ts): let it run.
    await new Promise((resolve) => setImmediate(resolve));
    this.accessLog.flush();
    await this.tracer.stop();
  }

  /**
   * A stop with no successor beside this agent (stop, then start): opaque TCP streams keep their
   * drain deadline, and while they run the agent keeps serving as usual (accepting, no
   * `Connection: close`) instead of leaving its pods' new connections waiting that long for the next
   * agent. Resolves when no stream is left or at `deadline` (epoch ms); stop() then cuts what is left.
   */
  async outlastStreams(deadline: number): Promise<void> {
    while (openPipes.size > 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, Math.min(50, Math.max(1, deadline - Date.now()))));
    }
    this.streamsOutlasted = true;
  }

  /** Every pod's listeners closed, the pods kept (their connections in flight go on). */
  private async closeListeners(): Promise<void> {
    // As in removePod: the accepts the last poll reported run first.
    await new Promise((resolve) => setImmediate(resolve));
    // close() stops listening at once; its callback would wait for every connection.
    for (const { servers } of this.pods.values()) for (const server of servers) server.close();
  }

  podCount(): number {
    return this.pods.size;
  }

  /** The descriptors of every pod's listening sockets (a stopping agent hands them to a holder). */
  listenerFds(): number[] {
    return [...this.pods.values()].flatMap(({ servers }) =>
      servers.flatMap((server) => {
        const fd = (server as ServerWithFd)[LISTENER_FD];
        return fd === undefined ? [] : [fd];
      }),
    );
  }

  /** The enrolled pods, and the listeners among theirs that the kernel no longer has listening. */
  health(): WorkerHealth {
    const lostListeners: string[] = [];
    for (const [key, { servers }] of this.pods) {
      servers.forEach((server, i) => {
        const fd = (server as ServerWithFd)[LISTENER_FD];
        if (fd !== undefined && !isListening(fd)) lostListeners.push(`${key}:${LISTENERS[i]!.port}`);
      });
    }
    return { pods: [...this.pods.keys()], lostListeners };
  }

  private listen(pod: PodContext, port: number, handler: Handler): Promise<net.Server> {
    const open = new Gate(this.podConnectionCap);
    const server = net.createServer({ pauseOnConnect: true, allowHalfOpen: true, noDelay: true }, (socket) => {
      socket.on("error", ignore); // handlers attach their own; a reset before that must not crash us
      if (this.stopping) {
        socket.destroy(); // accepted just as the listener closed
        return;
      }
      if (!open.tryTake()) {
        // The pod holds as many connections here as it may: a flood of its own, or aimed at it.
        this.metrics.refused.labels(LISTENER_DIRECTION[port] ?? "inbound", AgentErrors.POD_CONNECTION_LIMIT.code).inc();
        socket.resetAndDestroy();
        return;
      }
      this.connections.add(socket);
      socket.once("close", () => {
        open.release();
        this.connections.delete(socket);
      });
      handler(this, pod, socket).catch((err: Error) => {
        this.log.warn({ pod: pod.key, port, err: err.message }, "connection handler failed");
        socket.destroy();
      });
    });
    const fd = bindListenerFd(pod.netns, port);
    (server as ServerWithFd)[LISTENER_FD] = fd;
    return new Promise((resolve, reject) => {
      server.once("error", reject);
      // A deep queue: while agents change over, connections wait in it (listener-holder.ts). Given
      // a descriptor, Node takes the backlog from its second argument only (`{ fd, backlog }` was
      // ignored: the queues were 511 deep, and overflowed when a restart took 4 s at 1000 req/s).
      server.listen({ fd }, LISTEN_BACKLOG, () => {
        server.removeListener("error", reject);
        server.on("error", (err) => this.log.error({ pod: pod.key, port, err: err.message }, "listener error"));
        resolve(server);
      });
    });
  }
}
