// The control thread's handle on the data-plane workers: starts them, broadcasts snapshots and
// pod changes, and gathers replies. A pod is enrolled only once every worker has its listeners.

import { availableParallelism } from "node:os";
import { extname } from "node:path";
import { Worker } from "node:worker_threads";
import type { EnrolledPod } from "../../api/enrollment.ts";
import type { EdgeSample } from "../../api/service-graph.ts";
import { mergeEdges } from "../dataplane/edges.ts";
import type { FromWorker, ToWorker, WorkerInit } from "../dataplane/messages.ts";
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
const WORKER_HEAP_LIMITS = { maxYoungGenerationSizeMb: 24 };

export function defaultWorkerCount(): number {
  return Math.max(1, Math.min(availableParallelism(), 8));
}

type Pending = { resolve: (v: unknown) => void; reject: (e: Error) => void };
type Request =
  | { type: "add-pod"; pod: EnrolledPod }
  | { type: "remove-pod"; key: string }
  | { type: "metrics" }
  | { type: "edges" }
  | { type: "stop" };

export class WorkerPool {
  private readonly workers: Worker[] = [];
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private lastSnapshot: SnapshotMessage | undefined;
  /** Counters every worker sees (round robin, limits, budgets, ejections): shared-state.ts. */
  readonly shared = allocateSharedBuffers();

  static async start(count: number, opts: Omit<WorkerInit, "index" | "shared">): Promise<WorkerPool> {
    const pool = new WorkerPool();
    await Promise.all(Array.from({ length: count }, (_, index) => pool.spawn({ index, shared: pool.shared, ...opts })));
    return pool;
  }

  get size(): number {
    return this.workers.length;
  }

  private spawn(init: WorkerInit): Promise<void> {
    const worker = new Worker(WORKER_MODULE, { workerData: init, resourceLimits: WORKER_HEAP_LIMITS });
    this.workers.push(worker);
    worker.on("message", (msg: FromWorker) => {
      if (msg.type !== "reply") return;
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      if (msg.error) p.reject(new Error(msg.error));
      else p.resolve(msg.value);
    });
    // A dead worker would silently drop a share of connections: fail loudly instead.
    worker.on("error", (err) => {
      process.emitWarning(`data-plane worker ${init.index} failed: ${err.stack ?? err.message}`);
      process.exit(70);
    });
    return new Promise((resolve, reject) => {
      worker.once("message", (msg: FromWorker) => (msg.type === "ready" ? resolve() : reject(new Error("bad start"))));
      worker.once("error", reject);
    });
  }

  private ask(worker: Worker, req: Request): Promise<unknown> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      worker.postMessage({ ...req, id } as ToWorker);
    });
  }

  private askAll(req: Request): Promise<unknown[]> {
    return Promise.all(this.workers.map((w) => this.ask(w, req)));
  }

  broadcastSnapshot(snapshot: SnapshotMessage): void {
    this.lastSnapshot = snapshot;
    for (const w of this.workers) w.postMessage({ type: "snapshot", snapshot } satisfies ToWorker);
  }

  get snapshot(): SnapshotMessage | undefined {
    return this.lastSnapshot;
  }

  /** Opens the pod's listeners in every worker; on any failure, none stays open. */
  async addPod(pod: EnrolledPod): Promise<void> {
    const results = await Promise.allSettled(this.workers.map((w) => this.ask(w, { type: "add-pod", pod })));
    const failed = results.find((r) => r.status === "rejected");
    if (failed) {
      await this.removePod(`${pod.namespace}/${pod.name}`);
      throw (failed as PromiseRejectedResult).reason;
    }
  }

  async removePod(key: string): Promise<void> {
    await this.askAll({ type: "remove-pod", key });
  }

  /** Each worker's prom-client registry as JSON, for aggregation at scrape time. */
  async metrics(): Promise<unknown[]> {
    return this.askAll({ type: "metrics" });
  }

  /** Every worker's edge samples since the last call, summed per edge (the service graph). */
  async edges(): Promise<EdgeSample[]> {
    return mergeEdges((await this.askAll({ type: "edges" })) as EdgeSample[][]);
  }

  async stop(): Promise<void> {
    await this.askAll({ type: "stop" }).catch(() => {});
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
