// The control thread's handle on the data-plane workers: starts them, broadcasts snapshots and
// pod changes, and gathers replies. A pod is enrolled only once every worker has its listeners.
// A worker that fails (an uncaught exception) is logged and replaced; its siblings keep serving.

import { availableParallelism } from "node:os";
import { extname } from "node:path";
import type { EventLoopUtilization } from "node:perf_hooks";
import { setFlagsFromString } from "node:v8";
import { Worker } from "node:worker_threads";
import type { Logger } from "pino";
import type { EnrolledPod } from "../../api/enrollment.ts";
import type { EdgeSample } from "../../api/service-graph.ts";
import { mergeEdges } from "../dataplane/edges.ts";
import type { FromWorker, ToWorker, WorkerHealth, WorkerInit } from "../dataplane/messages.ts";
import type { WorkerIdentity } from "../dataplane/mtls.ts";
import type { OtlpTransport } from "../dataplane/otlp-exporter.ts";
import { allocateSharedBuffers } from "../dataplane/shared-state.ts";
import type { SnapshotMessage } from "../dataplane/snapshot.ts";

/** worker.ts when running from source, worker.js when built (npm run build: dist/). */
const WORKER_MODULE = new URL(`../dataplane/worker${extname(import.meta.url)}`, import.meta.url);

/**
 * V8 lets each thread's young generation grow to tens of MB under load. Capped at 3 × 8 MB
 * (semi-spaces of 8 MB), the loaded agents' peak RSS went from about 450 to 290 MB in an A/B of the
 * benchmark (docs/benchmarks.md) at the same throughput: a proxy's garbage dies young, so smaller,
 * more frequent scavenges cost little.
 */
/**
 * Old generation: a worker holds its pods, the compiled configuration and the connections in
 * flight. Without a cap V8 lets it grow by hundreds of MB under a flood of short-lived streams
 * before collecting (test/e2e/floods.test.ts: 177 → 374 MB in a rapid reset; 261–287 with a 128 MB
 * cap, 279 with 256). 256 rather than 128: the tighter cap's extra collections cost HTTP CPU in
 * the benchmark (0.26–0.33 s per 1000 requests against 0.20 without a cap; noisy). A worker that
 * truly needs more is replaced as one that failed.
 */
const WORKER_OLD_GENERATION_MB = 256;
export const WORKER_HEAP_LIMITS = { maxYoungGenerationSizeMb: 24, maxOldGenerationSizeMb: WORKER_OLD_GENERATION_MB };

/**
 * The least a worker's new space shrinks to: what a worker starts with anyway. A memory-reducing
 * collection (api/idle-heap.ts, after a burst of enrollments) otherwise took it to 1 MB, and
 * garbage that dies young, as a proxy's does, grew it back only to 4 MB, not to the 16 a loaded
 * worker has (bulk TCP 8 % slower, sixteenth session). From this floor it grows to 16 again.
 */
const WORKER_MIN_SEMI_SPACE_MB = 4;

/**
 * The control thread runs with 1 MB semi-spaces (api/process-settings.ts AGENT_PROCESS), a V8
 * flag, and V8 flags are the process's: a worker isolate created while it is set takes 1 MB
 * semi-spaces too, whatever its resourceLimits say (2 MB of new space instead of 16; so it was
 * from the seventh session to the twelfth, collecting eight times as often). The control
 * thread's isolate already has its heap, so the flag is cleared before any worker starts and the
 * workers get WORKER_HEAP_LIMITS; their new space also gets its floor (WORKER_MIN_SEMI_SPACE_MB).
 */
export function letWorkersSizeTheirOwnHeaps(): void {
  setFlagsFromString("--max-semi-space-size=0");
  setFlagsFromString(`--min-semi-space-size=${WORKER_MIN_SEMI_SPACE_MB}`);
}

export function defaultWorkerCount(): number {
  return Math.max(1, Math.min(availableParallelism(), 8));
}

/**
 * How many workers: `{ min: n, max: n }` for a fixed count (--workers N), or start with `min`
 * and add one while the running ones are busy, up to `max` (--workers auto, the default).
 */
export interface WorkerCount {
  readonly min: number;
  readonly max: number;
}

/**
 * Workers by load rather than by core count: each is an isolate of ~25 MB idle, which a node
 * whose pods send little never needs. Every second the running workers' event-loop utilization
 * is sampled; when their mean is above `utilization` for `samples` seconds in a row, one more is
 * started (as a replacement is: it opens every enrolled pod's listeners, and the kernel spreads
 * new connections over all of them). Workers are not stopped when load falls: connections
 * would have to move, and a node that was busy once is likely to be again.
 */
export const GROW_WHEN_BUSY = { utilization: 0.5, samples: 2, intervalMs: 1000 };

/** Whether the last samples (mean utilization of the running workers, newest last) call for one more worker. */
export function busyEnoughToGrow(recent: readonly number[]): boolean {
  const last = recent.slice(-GROW_WHEN_BUSY.samples);
  return last.length === GROW_WHEN_BUSY.samples && last.every((u) => u > GROW_WHEN_BUSY.utilization);
}

/**
 * A data-plane worker that failed is replaced at once; if it fails again soon, after 1 s, 2 s, 4 s …
 * up to 30 s, so a bug that kills every new worker cannot spin. One that ran for a minute starts over.
 */
const RESPAWN = { initialMs: 1000, maxMs: 30_000, stableMs: 60_000 };

/** The wait before replacing a worker that has now failed `crashes` times in a row (1 = the first). */
export function respawnDelayMs(crashes: number): number {
  return crashes <= 1 ? 0 : Math.min(RESPAWN.maxMs, RESPAWN.initialMs * 2 ** Math.min(crashes - 2, 30));
}

/** A worker whose heartbeat is older than this is stuck: /healthz fails (docs/operations.md). */
export const WORKER_STALL_MS = 5000;
/** How long a live worker has to answer a health check. */
const HEALTH_ANSWER_MS = 2000;

/** `promise`'s value, or undefined if it takes longer than `ms`. */
function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Beyond the drain (Dataplane.stop), how long a worker has to stop before it is terminated anyway. */
const STOP_MARGIN_MS = 5000;

type Pending = { worker: Worker; resolve: (v: unknown) => void; reject: (e: Error) => void };
type Request =
  | { type: "add-pod"; pod: EnrolledPod }
  | { type: "remove-pod"; key: string }
  | { type: "metrics" }
  | { type: "edges" }
  | { type: "health" }
  | { type: "listener-fds" }
  | { type: "outlast-streams"; deadline: number }
  | { type: "stop"; drainMs?: number; noSuccessor?: boolean };

class WorkerExited extends Error {
  constructor(index: number, code: number) {
    super(`data-plane worker ${index} exited (${code})`);
  }
}

/** One worker position: its current thread (none while a replacement waits) and its failures in a row. */
interface Slot {
  readonly init: WorkerInit;
  /** Started once (a slot --workers auto has not needed yet is not down). */
  started: boolean;
  worker: Worker | undefined;
  startedAt: number;
  crashes: number;
  respawnTimer: NodeJS.Timeout | undefined;
  /** The event-loop utilization at the last load sample (GROW_WHEN_BUSY). */
  utilization: EventLoopUtilization | undefined;
}

export class WorkerPool {
  private readonly slots: Slot[] = [];
  private readonly pending = new Map<number, Pending>();
  /** Enrolled pods, so that a replacement worker opens their listeners too. */
  private readonly pods = new Map<string, EnrolledPod>();
  private nextId = 1;
  private lastSnapshot: SnapshotMessage | undefined;
  private lastIdentities: { identities: WorkerIdentity[]; pending: string[] } = { identities: [], pending: [] };
  private running = false;
  private readonly log: Logger;
  /** Posts every worker's encoded span batches to the collector (loaded with the first batch). */
  private spanTransport: Promise<{ send: OtlpTransport; close: () => void }> | undefined;
  /** Counters every worker sees (round robin, limits, budgets, ejections): shared-state.ts. */
  readonly shared = allocateSharedBuffers();
  /** Each worker's heartbeat (WorkerInit.heartbeats). */
  private readonly heartbeats: BigInt64Array;
  /** Mean utilization of the running workers, one per load sample, newest last (GROW_WHEN_BUSY). */
  private readonly load: number[] = [];
  private loadTimer: NodeJS.Timeout | undefined;
  private growing = false;

  private constructor(log: Logger, count: number) {
    this.log = log;
    this.heartbeats = new BigInt64Array(new SharedArrayBuffer(8 * count));
  }

  static async start(
    count: WorkerCount,
    opts: Omit<WorkerInit, "index" | "shared" | "heartbeats">,
    log: Logger,
  ): Promise<WorkerPool> {
    letWorkersSizeTheirOwnHeaps();
    const pool = new WorkerPool(log, count.max);
    for (let index = 0; index < count.max; index++) {
      pool.slots.push({
        init: { index, shared: pool.shared, heartbeats: pool.heartbeats.buffer as SharedArrayBuffer, ...opts },
        started: false,
        worker: undefined,
        startedAt: 0,
        crashes: 0,
        respawnTimer: undefined,
        utilization: undefined,
      });
    }
    await Promise.all(pool.slots.slice(0, count.min).map((slot) => pool.spawn(slot)));
    pool.running = true;
    if (count.max > count.min) {
      pool.loadTimer = setInterval(() => pool.sampleLoad(), GROW_WHEN_BUSY.intervalMs);
      pool.loadTimer.unref();
    }
    return pool;
  }

  /** The workers started so far (running, or failed and being replaced). */
  get size(): number {
    return this.slots.filter((s) => s.started).length;
  }

  /** One load sample; starts the next worker when the running ones have been busy (GROW_WHEN_BUSY). */
  private sampleLoad(): void {
    const utilizations: number[] = [];
    for (const slot of this.slots) {
      if (!slot.worker) continue;
      const now = slot.worker.performance.eventLoopUtilization();
      if (slot.utilization)
        utilizations.push(slot.worker.performance.eventLoopUtilization(now, slot.utilization).utilization);
      slot.utilization = now;
    }
    if (utilizations.length === 0) return;
    this.load.push(utilizations.reduce((a, b) => a + b, 0) / utilizations.length);
    if (this.load.length > GROW_WHEN_BUSY.samples) this.load.shift();
    const next = this.slots.find((s) => !s.started);
    if (!next || this.growing || !busyEnoughToGrow(this.load)) return;
    this.growing = true;
    this.load.length = 0;
    this.log.info({ worker: next.init.index, utilization: utilizations }, "data-plane workers busy: starting another");
    void this.startInSlot(next, "data-plane worker started").finally(() => {
      this.growing = false;
      if (this.slots.every((s) => s.started)) clearInterval(this.loadTimer);
    });
  }

  /** The workers running now (a failed one is absent until its replacement starts). */
  private get workers(): Worker[] {
    return this.slots.flatMap((s) => (s.worker ? [s.worker] : []));
  }

  /**
   * A worker's encoded span batch, posted from this thread: an HTTP client in the worker made the
   * stream and HTTP functions its requests run slower (docs/benchmarks.md, twenty-eighth session).
   */
  private exportSpans(worker: Worker, endpoint: string | undefined, id: number, body: Uint8Array): void {
    const answer = (msg: ToWorker) => {
      try {
        worker.postMessage(msg);
      } catch {} // the worker has gone meanwhile
    };
    if (!endpoint) {
      answer({ type: "exported", id, error: "export_failed" });
      return;
    }
    this.spanTransport ??= import("../dataplane/otlp-exporter.ts").then(
      ({ httpTransport, tracesUrl, EXPORTER_DEFAULTS }) =>
        httpTransport(tracesUrl(endpoint), EXPORTER_DEFAULTS.timeoutMs),
    );
    this.spanTransport
      .then((transport) => transport.send(body))
      .then(
        (a) => answer({ type: "exported", id, status: a.status, body: a.body }),
        (err: Error) => answer({ type: "exported", id, error: err.message }),
      );
  }

  private spawn(slot: Slot): Promise<void> {
    const worker = new Worker(WORKER_MODULE, { workerData: slot.init, resourceLimits: WORKER_HEAP_LIMITS });
    slot.worker = worker;
    slot.started = true;
    slot.utilization = undefined;
    slot.startedAt = Date.now();
    // Its predecessor's last heartbeat would make a starting worker look stuck.
    Atomics.store(this.heartbeats, slot.init.index, BigInt(slot.startedAt));
    worker.on("message", (msg: FromWorker) => {
      if (msg.type === "export") {
        this.exportSpans(worker, slot.init.settings.tracing.otlpEndpoint, msg.id, msg.body);
        return;
      }
      if (msg.type !== "reply") return;
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      if (msg.error) p.reject(new Error(msg.error));
      else p.resolve(msg.value);
    });
    // An uncaught exception in the worker: it is logged here, and "exit" follows.
    worker.on("error", (err) => this.log.error({ worker: slot.init.index, err }, "data-plane worker failed"));
    worker.on("exit", (code) => this.onExit(slot, worker, code));
    // Messages queue until the worker listens: it gets the configuration before any pod.
    if (this.lastSnapshot) worker.postMessage({ type: "snapshot", snapshot: this.lastSnapshot } satisfies ToWorker);
    if (this.lastIdentities.identities.length || this.lastIdentities.pending.length) {
      worker.postMessage({ type: "identities", ...this.lastIdentities } satisfies ToWorker);
    }
    return new Promise((resolve, reject) => {
      worker.once("message", (msg: FromWorker) => (msg.type === "ready" ? resolve() : reject(new Error("bad start"))));
      worker.once("error", reject);
      worker.once("exit", (code) => reject(new WorkerExited(slot.init.index, code)));
    });
  }

  /**
   * A worker is gone: what it was asked fails, and unless the pool is stopping it is replaced. Its
   * listeners closed with it; the kernel spreads new connections over the siblings' meanwhile.
   */
  private onExit(slot: Slot, worker: Worker, code: number): void {
    for (const [id, p] of this.pending) {
      if (p.worker !== worker) continue;
      this.pending.delete(id);
      p.reject(new WorkerExited(slot.init.index, code));
    }
    if (slot.worker !== worker) return;
    slot.worker = undefined;
    if (!this.running) return;
    slot.crashes = Date.now() - slot.startedAt >= RESPAWN.stableMs ? 1 : slot.crashes + 1;
    const delayMs = respawnDelayMs(slot.crashes);
    this.log.error(
      { worker: slot.init.index, code, crashes: slot.crashes, delayMs },
      "data-plane worker exited; replacing it",
    );
    slot.respawnTimer = setTimeout(() => {
      slot.respawnTimer = undefined;
      void this.startInSlot(slot, "data-plane worker replaced");
    }, delayMs);
  }

  /** Starts a new worker in `slot` (a replacement, or one more for the load) and opens every enrolled pod's listeners in it. */
  private async startInSlot(slot: Slot, started: string): Promise<void> {
    try {
      await this.spawn(slot);
    } catch {
      return; // its exit schedules the next attempt
    }
    const worker = slot.worker!;
    const pods = [...this.pods.values()];
    const results = await Promise.allSettled(pods.map((pod) => this.ask(worker, { type: "add-pod", pod })));
    const failed = pods.filter((_, i) => results[i]!.status === "rejected").map((p) => `${p.namespace}/${p.name}`);
    if (failed.length > 0)
      this.log.error({ worker: slot.init.index, failed }, "replacement worker could not open some pods' listeners");
    this.log.info({ worker: slot.init.index, pods: pods.length - failed.length }, started);
  }

  private ask(worker: Worker, req: Request): Promise<unknown> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { worker, resolve, reject });
      worker.postMessage({ ...req, id } as ToWorker);
    });
  }

  /** Every running worker's answer; a worker that exits meanwhile is left out (it holds nothing any more). */
  private async askAll(req: Request): Promise<unknown[]> {
    const results = await Promise.allSettled(this.workers.map((w) => this.ask(w, req)));
    const failed = results.find((r) => r.status === "rejected" && !(r.reason instanceof WorkerExited));
    if (failed) throw (failed as PromiseRejectedResult).reason;
    return results.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
  }

  broadcastSnapshot(snapshot: SnapshotMessage): void {
    this.lastSnapshot = snapshot;
    for (const w of this.workers) w.postMessage({ type: "snapshot", snapshot } satisfies ToWorker);
  }

  /**
   * The certificates of the node's pods' identities, for mTLS on the tunnel (replaces the last
   * set); `pending`: "namespace/serviceAccount" of those whose first certificate is on its way.
   */
  broadcastIdentities(identities: WorkerIdentity[], pending: string[] = []): void {
    this.lastIdentities = { identities, pending };
    for (const w of this.workers) w.postMessage({ type: "identities", identities, pending } satisfies ToWorker);
  }

  get snapshot(): SnapshotMessage | undefined {
    return this.lastSnapshot;
  }

  /** Opens the pod's listeners in every worker; on any failure, none stays open. */
  async addPod(pod: EnrolledPod): Promise<void> {
    // Recorded first: a worker replaced while this runs opens the pod's listeners too.
    this.pods.set(`${pod.namespace}/${pod.name}`, pod);
    const results = await Promise.allSettled(this.workers.map((w) => this.ask(w, { type: "add-pod", pod })));
    // A worker that exits meanwhile is no refusal: its replacement opens the listeners.
    const failed = results.find((r) => r.status === "rejected" && !(r.reason instanceof WorkerExited));
    if (failed) {
      await this.removePod(`${pod.namespace}/${pod.name}`);
      throw (failed as PromiseRejectedResult).reason;
    }
  }

  async removePod(key: string): Promise<void> {
    this.pods.delete(key);
    await this.askAll({ type: "remove-pod", key });
  }

  /** Every worker's pod listening sockets, as descriptors of this process. */
  async listenerFds(): Promise<number[]> {
    return ((await this.askAll({ type: "listener-fds" })) as number[][]).flat();
  }

  /** Serves on until no worker has an opaque TCP stream open, or `deadline` (Dataplane.outlastStreams). */
  async outlastStreams(deadline: number): Promise<void> {
    // A worker that does not answer must not hold the stop beyond its deadline.
    await withTimeout(this.askAll({ type: "outlast-streams", deadline }), deadline - Date.now() + STOP_MARGIN_MS);
  }

  /** Each worker's prom-client registry as JSON, for aggregation at scrape time. */
  async metrics(): Promise<unknown[]> {
    // A stuck worker must not hang the scrape (/healthz says it is stuck): its share is left out.
    const answers = await Promise.all(
      this.workers.map((w) => withTimeout(this.ask(w, { type: "metrics" }), HEALTH_ANSWER_MS).catch(() => undefined)),
    );
    return answers.filter((a) => a !== undefined);
  }

  /** Every worker's edge samples since the last call, summed per edge (the service graph). */
  async edges(): Promise<EdgeSample[]> {
    return mergeEdges((await this.askAll({ type: "edges" })) as EdgeSample[][]);
  }

  /**
   * What is wrong with the data plane, in words (none: healthy). A worker is down (failed, waiting
   * for its replacement), stuck (its heartbeat older than WORKER_STALL_MS: a busy loop, a
   * synchronous call that never returns), silent (no answer within HEALTH_ANSWER_MS), or it lacks an
   * enrolled pod's listeners or holds one the kernel no longer has listening.
   */
  async health(now = Date.now()): Promise<string[]> {
    const problems: string[] = [];
    const answers: Promise<void>[] = [];
    for (const slot of this.slots) {
      const index = slot.init.index;
      const worker = slot.worker;
      if (!slot.started) continue;
      if (!worker) {
        problems.push(`data-plane worker ${index} is down (failed ${slot.crashes} time(s) in a row; being replaced)`);
        continue;
      }
      const silentMs = now - Number(Atomics.load(this.heartbeats, index));
      if (silentMs > WORKER_STALL_MS) {
        problems.push(
          `data-plane worker ${index} is stuck: its event loop has not run for ${(silentMs / 1000).toFixed(1)} s`,
        );
        continue;
      }
      answers.push(
        withTimeout(this.ask(worker, { type: "health" }) as Promise<WorkerHealth>, HEALTH_ANSWER_MS).then(
          (health) => {
            if (!health) {
              problems.push(`data-plane worker ${index} did not answer within ${HEALTH_ANSWER_MS} ms`);
              return;
            }
            const held = new Set(health.pods);
            for (const pod of this.pods.keys()) {
              if (!held.has(pod)) problems.push(`pod ${pod} has no listeners in data-plane worker ${index}`);
            }
            for (const lost of health.lostListeners) {
              problems.push(
                `pod ${lost.replace(/:(\d+)$/, "")}: worker ${index}'s listener on port ${lost.replace(/^.*:/, "")} is no longer listening`,
              );
            }
          },
          () => {}, // exited meanwhile: its slot says so next time
        ),
      );
    }
    await Promise.all(answers);
    return problems;
  }

  /**
   * In two steps. First every worker stops dialling and accepting and drains (Dataplane.stop: its
   * system calls are refused from then on); only then are the threads terminated. Terminating a
   * worker that is still serving can catch it inside a koffi call, which then cannot throw and
   * aborts the whole process (SIGABRT, issue 21 item 5). A worker that does not answer within the
   * drain plus STOP_MARGIN_MS is terminated anyway. `noSuccessor`: see Dataplane.stop.
   */
  async stop(drainMs = this.slots[0]?.init.settings.drainMs ?? 0, noSuccessor = false): Promise<void> {
    this.running = false;
    clearInterval(this.loadTimer);
    for (const slot of this.slots) clearTimeout(slot.respawnTimer);
    let timer: NodeJS.Timeout | undefined;
    const timeoutMs = drainMs + STOP_MARGIN_MS;
    const timedOut = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), timeoutMs);
    });
    const stopped = await Promise.race([
      this.askAll({ type: "stop", drainMs, noSuccessor }).catch((err: Error) => err),
      timedOut,
    ]);
    clearTimeout(timer);
    if (stopped === "timeout") this.log.warn({ timeoutMs }, "data-plane workers did not stop in time");
    else if (stopped instanceof Error) this.log.warn({ err: stopped.message }, "a data-plane worker failed to stop");
    await Promise.all(this.workers.map((w) => w.terminate()));
    // The workers' last batches went out during their stop: nothing is left to post.
    (await this.spanTransport)?.close();
  }
}
