// Gives back the heap a burst grew in a thread, once the burst is over: the agent's control thread
// and its data-plane workers after enrollments, the controller after a fleet of agents connected
// and took their full tables. V8 sizes a heap by what it has seen, and an idle thread runs no
// collection, so what a burst left committed stayed resident for good (V8's own memory reducer
// starts only after a full collection): after a thousand enrollments, 7 to 10 MB of promoted
// garbage in the agent's control thread and a worker's young generation grown from 4 to 16 MB for
// the pods' listeners; 20 to 70 MB in the controller after a 1000-agent sync. So start-up and each
// event of a burst (an enrollment, an agent connecting, a table to every agent) arm this collector;
// once nothing armed it for five seconds, the thread is quiet (under 5 % busy; the controller,
// whose agents' reports keep it busy, under half) and its committed heap grew by 4 MB since
// the last collection, it runs one memory-reducing full collection (V8's "last resort": compacts
// and returns pages): 15–70 ms in the agent's threads; about 180 ms in the controller after a
// 1000-agent sync.
//
// Only bursts arm it, not growth alone: the reports about the traffic grow the agent's heap too,
// and a version that collected whenever the heap had grown did so every few seconds under load,
// which cost opaque TCP a quarter more CPU per request (docs/benchmarks.md, "Sixteenth and
// seventeenth sessions"). In a worker the collection shrinks the young generation only to what a
// worker starts with (agent/control/workers.ts, WORKER_MIN_SEMI_SPACE_MB), from where load grows
// it again: shrunk further, garbage that dies young (a proxy's) did not grow it back, and bulk TCP
// ran 8 % slower.
//
// A data-plane worker is armed by its own load as well (`armWhenBusy`): a saturation grows its
// committed heap to 38–42 MB, two thirds of it young generation, which stayed once the load was
// over, until the next enrollment. A look that finds the worker busy arms the collector, so the
// collection comes once the load is over and the worker quiet again, never under load.
//
// The collection needs `gc`, which node exposes with --expose-gc (api/process-settings.ts);
// without it this does nothing.
import { performance } from "node:perf_hooks";
import { getHeapStatistics } from "node:v8";

/** How often the thread is looked at. */
export const IDLE_CHECK_INTERVAL_MS = 1_000;
/** A burst is over when nothing armed the collector for this long. */
export const BURST_OVER_MS = 5_000;
/** Quiet: busy less than this share of a look's interval (event-loop utilization). */
export const IDLE_UTILIZATION = 0.05;
/** Less growth of the committed heap than this since the last collection is not worth one. */
export const MIN_HEAP_GROWTH_BYTES = 4 * 2 ** 20;
/** A data-plane worker busy this share of a look is under load, which arms its collector. */
export const WORKER_BUSY_ARMS_COLLECTION = 0.25;

export interface IdleHeapOptions {
  /** The memory-reducing collection; undefined (no --expose-gc): nothing is done. */
  collect?: (() => void) | undefined;
  /** Bytes the thread's heap has committed now. */
  committed?: () => number;
  /** The share of time the event loop was busy since the previous call. */
  utilization?: () => number;
  /** Milliseconds on a monotonic clock. */
  now?: () => number;
  intervalMs?: number;
  burstOverMs?: number;
  /** Quiet: busy less than this share of a look's interval; default IDLE_UTILIZATION. */
  quietUtilization?: number;
  minGrowthBytes?: number;
  /** A look that finds the thread at least this busy arms the collector (load as a burst); default: only arm() does. */
  armWhenBusy?: number;
  /** Told of each collection (to log it): the committed heap before and after, and how long it took. */
  onCollect?: (result: IdleCollection) => void;
}

export interface IdleCollection {
  committedBeforeMB: number;
  committedAfterMB: number;
  ms: number;
}

export class IdleHeapCollector {
  readonly #collect: (() => void) | undefined;
  readonly #committed: () => number;
  readonly #utilization: () => number;
  readonly #now: () => number;
  readonly #intervalMs: number;
  readonly #burstOverMs: number;
  readonly #quietUtilization: number;
  readonly #minGrowthBytes: number;
  readonly #armWhenBusy: number;
  readonly #onCollect: IdleHeapOptions["onCollect"];
  /** What the last collection left committed; none yet: the first burst's end collects. */
  #baseline = Number.NEGATIVE_INFINITY;
  /** When a burst last armed the collector; undefined: disarmed (collected since, or never armed). */
  #armedAt: number | undefined;
  #timer: NodeJS.Timeout | undefined;

  constructor(opts: IdleHeapOptions = {}) {
    this.#collect = "collect" in opts ? opts.collect : lastResortCollection();
    this.#committed = opts.committed ?? (() => getHeapStatistics().total_heap_size);
    this.#utilization = opts.utilization ?? loopUtilization();
    this.#now = opts.now ?? (() => performance.now());
    this.#intervalMs = opts.intervalMs ?? IDLE_CHECK_INTERVAL_MS;
    this.#burstOverMs = opts.burstOverMs ?? BURST_OVER_MS;
    this.#quietUtilization = opts.quietUtilization ?? IDLE_UTILIZATION;
    this.#minGrowthBytes = opts.minGrowthBytes ?? MIN_HEAP_GROWTH_BYTES;
    this.#armWhenBusy = opts.armWhenBusy ?? Number.POSITIVE_INFINITY;
    this.#onCollect = opts.onCollect;
  }

  /** Whether collections can run at all (node started with --expose-gc). */
  get enabled(): boolean {
    return this.#collect !== undefined;
  }

  start(): void {
    if (!this.#collect || this.#timer) return;
    this.#timer = setInterval(() => this.check(), this.#intervalMs);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** Something that grows this thread's heap for a while happened (start-up, an enrollment). */
  arm(): void {
    this.#armedAt = this.#now();
  }

  /**
   * One look: collects when a burst armed the collector and is over, the thread is quiet and its
   * heap grew enough; returns whether it did. Either way a quiet look after the burst disarms it
   * until the next one.
   */
  check(): boolean {
    // Read every time, so the next look measures only its own interval.
    const busy = this.#utilization();
    if (busy >= this.#armWhenBusy) this.arm();
    const collect = this.#collect;
    const armedAt = this.#armedAt;
    if (!collect || armedAt === undefined || this.#now() - armedAt < this.#burstOverMs) return false;
    if (busy >= this.#quietUtilization) return false;
    // The burst is over and the thread quiet: collect now or not at all (what grows the heap from
    // here on is traffic's, which collects itself).
    this.#armedAt = undefined;
    const before = this.#committed();
    if (before - this.#baseline < this.#minGrowthBytes) return false;
    const started = performance.now();
    collect();
    const after = this.#committed();
    this.#baseline = after;
    this.#onCollect?.({
      committedBeforeMB: tenths(before / 2 ** 20),
      committedAfterMB: tenths(after / 2 ** 20),
      ms: tenths(performance.now() - started),
    });
    return true;
  }
}

const tenths = (n: number) => Math.round(n * 10) / 10;

/** V8's memory-reducing full collection, when node exposes `gc`. */
function lastResortCollection(): (() => void) | undefined {
  const gc = globalThis.gc;
  return gc ? () => void gc({ type: "major", execution: "sync", flavor: "last-resort" }) : undefined;
}

/** The event loop's busy share between two calls. */
function loopUtilization(): () => number {
  let last = performance.eventLoopUtilization();
  return () => {
    const now = performance.eventLoopUtilization();
    const { utilization } = performance.eventLoopUtilization(now, last);
    last = now;
    return utilization;
  };
}
