// Gives back the heap a burst grew in the agent's control thread, once the burst is over. V8
// sizes a thread's heap by what it has seen: a thousand enrollments left the control thread's
// old-generation pages committed around the garbage it promoted (+7 to +10 MB), and an idle thread
// runs no collection, so that memory stayed resident for good (V8's own memory reducer starts only
// after a full collection). So the control thread looks once a second: quiet (under 5 % busy; with
// 1000 pods its reports to the controller keep it 1–3 % busy) and its committed heap grown by
// 4 MB since it last did this, it runs one memory-reducing full collection (V8's "last resort":
// compacts and returns pages), 30–70 ms while nothing else runs there.
//
// Not in the data-plane workers, though it returned more there (their young generation, 8 to 16 MB
// after a burst): a worker whose young generation was shrunk grows it again only slowly, and bulk
// TCP through it ran 8 % slower after a quiet spell, even with ten quiet seconds required first
// (docs/benchmarks.md, "Sixteenth session").
//
// The collection needs `gc`, which node exposes with --expose-gc (api/process-settings.ts
// AGENT_PROCESS); without it this does nothing.
import { performance } from "node:perf_hooks";
import { getHeapStatistics } from "node:v8";

/** How often the thread is looked at. */
export const IDLE_CHECK_INTERVAL_MS = 1_000;
/** Quiet: busy less than this share of a look's interval (event-loop utilization). */
export const IDLE_UTILIZATION = 0.05;
/** Less growth of the committed heap than this since the last collection is not worth one. */
export const MIN_HEAP_GROWTH_BYTES = 4 * 2 ** 20;

export interface IdleHeapOptions {
  /** The memory-reducing collection; undefined (no --expose-gc): nothing is done. */
  collect?: (() => void) | undefined;
  /** Bytes the thread's heap has committed now. */
  committed?: () => number;
  /** The share of time the event loop was busy since the previous call. */
  utilization?: () => number;
  intervalMs?: number;
  minGrowthBytes?: number;
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
  readonly #intervalMs: number;
  readonly #minGrowthBytes: number;
  readonly #onCollect: IdleHeapOptions["onCollect"];
  /** What the last collection left committed; none yet: the first idle moment collects. */
  #baseline = Number.NEGATIVE_INFINITY;
  #timer: NodeJS.Timeout | undefined;

  constructor(opts: IdleHeapOptions = {}) {
    this.#collect = "collect" in opts ? opts.collect : lastResortCollection();
    this.#committed = opts.committed ?? (() => getHeapStatistics().total_heap_size);
    this.#utilization = opts.utilization ?? loopUtilization();
    this.#intervalMs = opts.intervalMs ?? IDLE_CHECK_INTERVAL_MS;
    this.#minGrowthBytes = opts.minGrowthBytes ?? MIN_HEAP_GROWTH_BYTES;
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

  /** One look: collects when the thread is quiet and its heap grew enough; returns whether it did. */
  check(): boolean {
    const collect = this.#collect;
    // Read every time, so the next look measures only its own interval.
    const busy = this.#utilization();
    if (!collect || busy >= IDLE_UTILIZATION) return false;
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
