// The node agent's control thread: it owns the enrollment socket, the admin listener, the
// service table and the data-plane workers, and wires them together. It forwards no traffic.

import { flushCompileCache } from "node:module";
import type { Server } from "node:net";
import pino, { type Logger } from "pino";
import type { InterceptionReply } from "../api/enrollment.ts";
import { IdleHeapCollector } from "../api/idle-heap.ts";
import { Registry } from "../api/prom.ts";
import { parseTraffic, type ServiceTable } from "../api/services.ts";
import { startAdminServer } from "./control/admin.ts";
import type { ChannelSecurity } from "./control/controller-channel.ts";
import type { ControllerStatus } from "./control/controller-client.ts";
import { ControllerLink } from "./control/controller-link.ts";
import { startEnrollmentServer } from "./control/enrollment-server.ts";
import { HANDOVER_OVERLAP_MS, requestHandover } from "./control/handover.ts";
import { HealthChecker } from "./control/health-checks.ts";
import { holdListeners, releaseHeldListeners } from "./control/listener-holder.ts";
import { MemoryReleaser } from "./control/memory-release.ts";
import { PodRegistry } from "./control/pods.ts";
import { loadServiceFile, type VersionedTable } from "./control/service-source.ts";
import { type WorkerCount, WorkerPool } from "./control/workers.ts";
import type { DataplaneSettings } from "./dataplane/settings.ts";
import { ENDPOINT_SLOTS, ROUTE_SLOTS, SharedState, SlotAllocator } from "./dataplane/shared-state.ts";
import { compileSnapshot, type Snapshot, type SnapshotMessage, slotKeys } from "./dataplane/snapshot.ts";

export interface AgentOptions {
  nodeName: string;
  enrollmentSocket: string;
  /** What `nodemesh init --mode node` installs on this node (--interception). */
  interception: InterceptionReply["mode"];
  stateDir: string;
  /**
   * On a stop with no successor beside it, how long the pod listeners are held open for the next
   * agent (control/listener-holder.ts); 0: not held, connections in the gap are refused.
   */
  holdListenersS: number;
  servicesFile: string | undefined;
  /** Take the service table from the controller instead of a file. */
  controller: ControllerOptions | undefined;
  adminAddress: string;
  adminPort: number;
  workers: WorkerCount;
  /** Carried whole to every data-plane worker. */
  dataplane: DataplaneSettings;
  logLevel: string;
}

export interface ControllerOptions {
  /** host:port of the controller's AgentService (gRPC, default port 15012). */
  address: string;
  /** TLS verified with --controller-ca-file, or plaintext (controller-channel.ts decided it may be). */
  security: ChannelSecurity;
  /** Bootstrap token for the controller. */
  token?: string;
  /** Address other nodes reach this one on; default: the first non-loopback IPv4 address. */
  underlayIp?: string;
  reportIntervalMs: number;
}

/**
 * A stop with no successor, once its listeners are held for the next agent: what requests in
 * flight still get. Short, because the connections arriving meanwhile wait until this agent exits
 * and the next one starts (a drain this long had been 3 s of the 6 s gap in the upgrade test).
 */
const FINISH_IN_FLIGHT_MS = 2000;

export class Agent {
  readonly log: Logger;
  private readonly opts: AgentOptions;
  // A reclaimed slot's counters are zeroed before its new owner's first request (the workers
  // see the new owner only in the snapshot that follows).
  private readonly routeSlots = new SlotAllocator(ROUTE_SLOTS, { onReuse: (slot) => this.shared.resetRoute(slot) });
  private readonly endpointSlots = new SlotAllocator(ENDPOINT_SLOTS, {
    onReuse: (slot) => this.shared.resetEndpoint(slot),
  });
  /** The control thread's view of the workers' shared counters (set once the pool exists). */
  private shared!: SharedState;
  // Set in start(), in this order; stop() and the admin listener handle an agent stopped half-way.
  private pool?: WorkerPool;
  private pods?: PodRegistry;
  private controller: ControllerLink | undefined;
  private servers: Server[] = [];
  /** The table in force, and where it came from. */
  private table: VersionedTable = { version: "", table: { services: [] }, source: "none" };
  private started = false;
  /** Peers nearest first, as last sent to the workers. */
  private rttOrder = "";
  /** A successor took over (its listeners are beside ours): nothing to hold for the next agent. */
  private handedOver = false;
  /** After taking over: the previous agent, until it is told to drain (HANDOVER_OVERLAP_MS). */
  private overlap: { pid: number; timer: NodeJS.Timeout } | undefined;
  /** The table in force with its traffic objects parsed, and its endpoints' slots (health checks). */
  private parsedTable: ServiceTable = { services: [] };
  private endpointSlotOf: Record<string, number> = {};
  /** The last snapshot sent to the workers, and its compiled form once asked for (nodemesh explain). */
  private lastSnapshot?: { message: SnapshotMessage; compiled?: Snapshot };
  private healthChecks?: HealthChecker;
  /** The control thread's metrics beside the admin server's own (the health checks'). */
  private readonly controlMetrics = new Registry();
  /** Gives back to the kernel what a burst's Buffers left free in the heaps. */
  private readonly memory = new MemoryReleaser();
  /** Gives back what start-up or a burst of enrollments grew of this thread's heap once it is over. */
  private readonly idleHeap = new IdleHeapCollector({
    onCollect: (r) => this.log.debug(r, "heap reduced after a burst"),
  });

  constructor(opts: AgentOptions) {
    this.opts = opts;
    // Synchronous: the control thread logs little, and its last lines must be out before the
    // process is (an async stream is flushed on exit before later 'exit' handlers run).
    this.log = pino(
      { level: opts.logLevel, base: { component: "agent", node: opts.nodeName } },
      pino.destination({ dest: 1, sync: true }),
    );
  }

  /**
   * All or nothing: the admin port is bound first (a second agent on the node fails there, before
   * it takes the enrollment socket or the controller stream of the running one), and if anything
   * later fails, what already started is stopped before the error is thrown.
   */
  async start(): Promise<void> {
    try {
      await this.#start();
    } catch (err) {
      await this.stop().catch((stopErr) => this.log.error({ err: stopErr }, "stopping an agent that failed to start"));
      throw err;
    }
  }

  async #start(): Promise<void> {
    const o = this.opts;
    // An agent already serving this node hands over to this one (handover.ts): a surge upgrade.
    const previous = await requestHandover(o.enrollmentSocket);
    if (previous) this.log.info({ pid: previous.pid }, "taking over from the agent serving this node");
    this.servers.push(
      await startAdminServer(o.adminAddress, o.adminPort, {
        node: o.nodeName,
        ready: () => this.started,
        workers: () => this.pool?.size ?? 0,
        configInForce: () => ({ version: this.table.version, source: this.table.source }),
        // Until the parts below exist: no pods, no worker metrics, a link not connected yet.
        pods: () => this.pods?.list() ?? [],
        config: () => this.table,
        workerMetrics: async () => (this.pool ? this.pool.metrics() : []),
        health: async () => (this.pool ? this.pool.health() : []),
        metrics: this.controlMetrics,
        controller: o.controller ? () => this.controller?.status() ?? unconnected(o.controller!.address) : undefined,
        diagnosis: () =>
          this.pods && this.lastSnapshot
            ? {
                node: o.nodeName,
                pod: (namespace, name) => this.pods?.get(namespace, name),
                configInForce: () => ({ version: this.table.version, source: this.table.source }),
                controller: o.controller
                  ? () => this.controller?.status() ?? unconnected(o.controller!.address)
                  : undefined,
                snapshot: () => this.compiledSnapshot(),
                health: async () => (this.pool ? this.pool.health() : []),
                shared: () => this.shared,
              }
            : undefined,
      }),
    );
    const pool = await WorkerPool.start(o.workers, { settings: o.dataplane, logLevel: o.logLevel }, this.log);
    this.pool = pool;
    this.shared = new SharedState(pool.shared);
    this.healthChecks = new HealthChecker({
      node: o.nodeName,
      shared: this.shared,
      pods: () => this.pods?.list() ?? [],
      slot: (key) => this.endpointSlotOf[key],
      log: this.log.child({ component: "health-checks" }),
    });
    this.healthChecks.registerMetrics(this.controlMetrics);
    this.memory.registerMetrics(this.controlMetrics);
    this.memory.start();
    this.idleHeap.start();
    if (o.servicesFile) this.applyTable(loadServiceFile(o.servicesFile));
    else this.applyTable({ version: "empty", table: { services: [] }, source: "none" });
    const pods = new PodRegistry(o.stateDir, pool, this.log);
    this.pods = pods;
    if (o.controller) {
      // Serves the cached table (if any) before pods are restored, so they forward as before.
      this.controller = ControllerLink.start(
        { ...o.controller, nodeName: o.nodeName, stateDir: o.stateDir, log: this.log },
        {
          apply: (table) => this.applyTable(table),
          pods: () => pods.list(),
          pod: (key) => pods.byKey(key),
          ready: () => this.started,
          workerMetrics: () => pool.metrics(),
          edges: () => pool.edges(),
        },
      );
    }
    await pods.restore();
    const controller = this.controller;
    if (controller) {
      // The workers present these on the tunnel (mTLS); a renewal replaces the set.
      controller.identities.onChange = (held) =>
        pool.broadcastIdentities(
          held.map(({ namespace, serviceAccount, spiffeId, chainPem, keyPem, trustBundlePem }) => ({
            namespace,
            serviceAccount,
            spiffeId,
            certChainPem: chainPem,
            keyPem,
            trustBundlePem,
          })),
          controller.identities.pending(),
        );
      controller.identities.onChange(controller.identities.list());
      // Locality follows the measured RTTs: resend the snapshot when the nearness order changes.
      controller.onProbes = () => {
        const order = Object.entries(controller.peerRtts())
          .sort(([, a], [, b]) => a - b)
          .map(([node]) => node)
          .join(",");
        if (order === this.rttOrder) return;
        this.rttOrder = order;
        this.broadcast();
      };
      controller.podsChanged();
    }
    pods.onChange = (key) => {
      this.idleHeap.arm();
      if (!controller) return;
      controller.podsChanged(key);
      this.healthChecks?.update(this.parsedTable); // a pod of this node is checked from inside it
    };
    // Our listeners are open in every pod, and the pods' first certificates are known to be on
    // their way (their tunnels wait for them): what waited in a stopped agent's listeners is ours.
    releaseHeldListeners(o.stateDir, this.log);
    this.servers.push(
      await startEnrollmentServer(
        o.enrollmentSocket,
        pods,
        { handOver: () => this.handOver() },
        { mode: o.interception },
      ),
    );
    // As the workers do (worker.ts): the module compile cache is written now, not only at exit.
    flushCompileCache();
    this.started = true;
    this.idleHeap.arm(); // start-up's garbage
    this.log.info(
      { workers: o.workers, socket: o.enrollmentSocket, admin: `${o.adminAddress}:${o.adminPort}` },
      "agent ready",
    );
    // Our listeners are in every pod beside its: once ours have served beside its for a while, it
    // closes them and drains.
    if (previous) {
      const { pid } = previous;
      this.overlap = { pid, timer: setTimeout(() => this.relieve(pid), HANDOVER_OVERLAP_MS) };
    }
  }

  /** The previous agent, still serving beside us after a handover, is told to drain and exit. */
  private relieve(pid: number): void {
    this.overlap = undefined;
    try {
      process.kill(pid, "SIGTERM");
      this.log.info({ pid }, "took over; the previous agent drains and exits");
    } catch (err) {
      this.log.warn({ pid, err: (err as Error).message }, "the previous agent could not be told to stop");
    }
  }

  /**
   * A new agent takes over this node: no more enrollments (the enrollment server closed itself)
   * and off the controller stream, which is the new agent's now; traffic is still served until
   * the new agent's SIGTERM starts the drain.
   */
  private handOver(): void {
    this.handedOver = true;
    this.log.info("a new agent takes over this node: enrollment closed, leaving the controller");
    void this.controller?.stop();
  }

  /** Re-reads the service file; an invalid file leaves the current table in force. */
  reloadServices(): void {
    if (!this.opts.servicesFile || this.controller) return;
    try {
      this.applyTable(loadServiceFile(this.opts.servicesFile));
    } catch (err) {
      this.log.error({ err: (err as Error).message }, "service table rejected; keeping the previous one");
    }
  }

  /** Puts a table in force; when it throws, the previous table stays in force. */
  private applyTable(table: VersionedTable): void {
    this.broadcast(table);
    this.table = table;
    this.log.info({ version: table.version, services: table.table.services.length }, "service table applied");
  }

  /** Sends the workers a snapshot of `table` with the current slots, node and RTTs. */
  private broadcast(table: VersionedTable = this.table): void {
    const keys = slotKeys(table.table);
    // Slots of routes and endpoints gone from this table go into quarantine, then to new keys.
    this.routeSlots.retainOnly(new Set(keys.routes));
    this.endpointSlots.retainOnly(new Set(keys.endpoints));
    // Parsed here, once, with their defaults filled in: the workers never load the schemas.
    const parsed = { ...table.table, traffic: parseTraffic(table.table) };
    this.endpointSlotOf = Object.fromEntries(keys.endpoints.map((k) => [k, this.endpointSlots.slot(k)]));
    const message: SnapshotMessage = {
      version: table.version,
      table: parsed,
      routeSlots: Object.fromEntries(keys.routes.map((k) => [k, this.routeSlots.slot(k)])),
      endpointSlots: this.endpointSlotOf,
      node: this.opts.nodeName,
      rttMs: this.controller?.peerRtts() ?? {},
    };
    this.pool!.broadcastSnapshot(message); // set before the first table is applied
    this.lastSnapshot = { message };
    this.parsedTable = parsed;
    this.healthChecks?.update(parsed);
  }

  /** The workers' snapshot, compiled here from the same message by the same function. */
  private compiledSnapshot(): { snapshot: Snapshot; traffic: NonNullable<ServiceTable["traffic"]> } {
    const last = this.lastSnapshot!;
    last.compiled ??= compileSnapshot(last.message);
    return { snapshot: last.compiled, traffic: last.message.table.traffic ?? [] };
  }

  /**
   * Stops listening. Enrolled pods stay recorded so a restarted agent takes them back. In this
   * order: the controller stream (the node's endpoints leave other agents' tables), the admin and
   * enrollment listeners (no pod arrives during the drain), then the workers, which stop accepting
   * and dialling and drain before their threads are terminated (WorkerPool.stop).
   *
   * With no successor beside us (stop, then start), the pods' traffic is served on for as long as
   * opaque TCP streams keep their drain (up to --drain-timeout-s). Only then are the listeners
   * handed to the holder, so connections arriving until the next agent starts wait instead of being
   * refused, and requests in flight get FINISH_IN_FLIGHT_MS: the gap the next agent must cover is
   * then that and its own start, not the drain and its start.
   */
  async stop(): Promise<void> {
    this.started = false;
    // Stopped while the previous agent still serves beside us: it is told to stop now.
    if (this.overlap) {
      clearTimeout(this.overlap.timer);
      this.relieve(this.overlap.pid);
    }
    this.healthChecks?.stop();
    this.memory.stop();
    this.idleHeap.stop();
    await this.controller?.stop();
    await Promise.all(this.servers.map((s) => new Promise((resolve) => s.close(resolve))));
    let drainMs = this.opts.dataplane.drainMs;
    if (this.pool && !this.handedOver) {
      const deadline = Date.now() + drainMs;
      await this.pool.outlastStreams(deadline).catch(() => {});
      if (this.opts.holdListenersS > 0) {
        const fds = await this.pool.listenerFds().catch(() => []);
        holdListeners(this.opts.stateDir, fds, this.opts.holdListenersS, this.log);
      }
      drainMs = Math.min(drainMs, FINISH_IN_FLIGHT_MS);
    }
    // Without a successor beside us, the workers keep the drain short (Dataplane.stop).
    await this.pool?.stop(drainMs, !this.handedOver);
  }
}

/** The controller link's status before the link exists. */
function unconnected(address: string): ControllerStatus {
  return { address, connected: false, appliedVersion: undefined, lastNack: undefined, lastError: undefined };
}
