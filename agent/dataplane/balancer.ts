// Picking an endpoint for a connection or a request attempt. Every algorithm skips endpoints this
// request already tried and endpoints ejected by outlier detection, and with locality on it only
// looks past the nearest tier when that tier has nothing left.
//
// - RoundRobin: one rotation per service port shared by all workers (Atomics), so N workers
//   together produce one exact rotation. A retry re-picks from the rotation rather than taking
//   the failed endpoint's neighbour, so one dead endpoint does not double the load of the next.
// - LeastRequest: power of two choices over peak-EWMA latency × (requests in flight + 1), as
//   Finagle and Linkerd do. In-flight counts are shared; latency estimates are per worker.
// - ConsistentHash: a ring (64 points per endpoint) over a request header or the source address.

import type { Endpoint } from "./endpoint.ts";
import { hash32 } from "./hash-ring.ts";
import { ENDPOINT_SLOTS, type SharedState } from "./shared-state.ts";
import type { Backend } from "./snapshot.ts";

/** Peak-EWMA decay time: an endpoint not picked for a while gets another chance. */
const EWMA_DECAY_MS = 10_000;

export interface PickOptions {
  readonly tried: readonly Endpoint[];
  /** ConsistentHash input; absent falls back to round robin. */
  readonly hashKey?: string;
  readonly nowMs: number;
}

export class EndpointPicker {
  private readonly shared: SharedState;
  private readonly ewma = new Float64Array(ENDPOINT_SLOTS);
  private readonly stamp = new Float64Array(ENDPOINT_SLOTS);

  constructor(shared: SharedState) {
    this.shared = shared;
  }

  pick(backend: Backend, opts: PickOptions): Endpoint | undefined {
    const tiers = backend.tiers ?? [backend.route.endpoints];
    // Ejected endpoints are skipped unless nothing else is left (Envoy's panic routing).
    for (const honourEjection of [true, false]) {
      for (const tier of tiers) {
        const ok = (e: Endpoint) =>
          !opts.tried.includes(e) && !(honourEjection && this.shared.isEjected(e.slot, opts.nowMs));
        const picked = this.pickFrom(backend, tier, ok, opts);
        if (picked) return picked;
      }
    }
    return undefined;
  }

  /** Feeds least-request's latency estimate (ms) for an endpoint. */
  observeLatency(e: Endpoint, ms: number, nowMs: number): void {
    const current = this.decayed(e.slot, nowMs);
    // Peak: a slower observation is taken at once, faster ones are averaged in.
    this.ewma[e.slot] = ms > current ? ms : current * 0.8 + ms * 0.2;
    this.stamp[e.slot] = nowMs;
  }

  private decayed(slot: number, nowMs: number): number {
    const elapsed = nowMs - this.stamp[slot]!;
    return this.ewma[slot]! * Math.exp(-Math.max(0, elapsed) / EWMA_DECAY_MS);
  }

  private pickFrom(
    backend: Backend,
    tier: readonly Endpoint[],
    ok: (e: Endpoint) => boolean,
    opts: PickOptions,
  ): Endpoint | undefined {
    const n = tier.length;
    if (n === 0) return undefined;
    const lb = backend.policy.lb;
    if (lb.type === "ConsistentHash" && opts.hashKey !== undefined && backend.ring) {
      const { hashes, owners } = backend.ring;
      let i = lowerBound(hashes, hash32(opts.hashKey));
      for (let step = 0; step < owners.length; step++, i++) {
        const e = owners[i % owners.length]!;
        if (tier.includes(e) && ok(e)) return e;
      }
      return undefined;
    }
    if (lb.type === "LeastRequest") {
      const available = tier.filter(ok);
      if (available.length <= 1) return available[0];
      const a = available[Math.floor(Math.random() * available.length)]!;
      let b = available[Math.floor(Math.random() * (available.length - 1))]!;
      if (b === a) b = available[available.length - 1]!;
      return this.cost(a, opts.nowMs) <= this.cost(b, opts.nowMs) ? a : b;
    }
    for (let i = 0; i < n; i++) {
      const e = tier[this.shared.nextRoundRobin(backend.route.slot) % n]!;
      if (ok(e)) return e;
    }
    // The rotation may have skipped a free endpoint under concurrent picks; a last sweep finds it.
    return tier.find(ok);
  }

  private cost(e: Endpoint, nowMs: number): number {
    // A never-measured endpoint costs little, so it gets measured soon.
    return (this.decayed(e.slot, nowMs) + 0.001) * (this.shared.activeRequests(e.slot) + 1);
  }
}

function lowerBound(sorted: Uint32Array, value: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid]! < value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
