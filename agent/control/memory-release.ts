// Gives the kernel back the memory a burst left behind. The bytes the agent forwards are Buffers
// in glibc's heaps; V8 frees a worker's dead Buffers only at a collection (a worker runs one every
// 8 MB it forwards: dataplane/read-buffers.ts), and glibc keeps what is freed below memory still
// in use, for reuse. Without this an agent keeps the resident size of its busiest moment for good
// (a bulk run: +40 to 70 MB that never came back). Envoy's shrink_heap overload action does the same
// for tcmalloc. One call covers every thread's heap; it runs here, on the control thread, not on
// the workers that serve traffic.
import { Counter, type Registry } from "../../api/prom.ts";
import { type FreeHeap, glibcHeap } from "../sys/malloc.ts";

/**
 * How often the heaps are looked at: soon enough after a burst that the next load starts from
 * less (every 5 s let a saturation right after a bulk run still peak at 325 MB, every second 239).
 * A release took 0.2 to 3 ms in the benchmark's runs.
 */
export const RELEASE_INTERVAL_MS = 1_000;
/** Less than this held free is not worth a release. */
export const RELEASE_MIN_FREE_BYTES = 16 * 2 ** 20;

export interface MemoryReleaseOptions {
  heap?: FreeHeap | undefined;
  intervalMs?: number;
  minFreeBytes?: number;
  /** The resident size now (process.memoryUsage.rss); tests may stand in. */
  rss?: () => number;
}

export class MemoryReleaser {
  readonly #heap: FreeHeap | undefined;
  readonly #intervalMs: number;
  readonly #minFreeBytes: number;
  readonly #rss: () => number;
  #timer: NodeJS.Timeout | undefined;
  #released: Counter | undefined;

  constructor(opts: MemoryReleaseOptions = {}) {
    this.#heap = "heap" in opts ? opts.heap : glibcHeap;
    this.#intervalMs = opts.intervalMs ?? RELEASE_INTERVAL_MS;
    this.#minFreeBytes = opts.minFreeBytes ?? RELEASE_MIN_FREE_BYTES;
    this.#rss = opts.rss ?? (() => process.memoryUsage.rss());
  }

  registerMetrics(registry: Registry): void {
    this.#released = new Counter({
      name: "nodemesh_agent_memory_released_bytes_total",
      help: "Resident memory the agent gave back to the kernel after freeing it (glibc's malloc_trim)",
      registers: [registry],
    });
  }

  start(): void {
    if (!this.#heap || this.#timer) return;
    this.#timer = setInterval(() => this.releaseNow(), this.#intervalMs);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** Releases when the heaps hold enough free; returns how much the resident size went down. */
  releaseNow(): number {
    const heap = this.#heap;
    if (!heap) return 0;
    const free = heap.freeBytes();
    // Before glibc 2.33 there is no count: release every time (cheap when nothing is free).
    if (free !== undefined && free < this.#minFreeBytes) return 0;
    const before = this.#rss();
    heap.release();
    const released = Math.max(0, before - this.#rss());
    this.#released?.inc(released);
    return released;
  }
}
