// State that every data-plane worker must see the same way, in shared memory: a limit enforced
// per worker would be wrong as soon as connections spread unevenly over the workers (one
// keep-alive connection lands on one worker). Plain integers updated with Atomics; no locks.
//
// Routes (a service port) and endpoints (ip:port) get stable slots from the control thread
// (SlotAllocator), so counters survive configuration changes; slots of keys that left the
// configuration are reclaimed after a quarantine.

export const ROUTE_SLOTS = 16_384;
export const ENDPOINT_SLOTS = 65_536;
/** Rate-limit buckets, addressed by hash(route, source workload); a collision shares a bucket. */
export const RATE_BUCKETS = 16_384;

const ROUTE_FIELDS = 4;
const RouteField = { RoundRobin: 0, ActiveRequests: 1, ActiveRetries: 2 } as const;

const ENDPOINT_FIELDS = 6;
const EndpointField = {
  ActiveRequests: 0,
  OpenConnections: 1,
  ConsecutiveFailures: 2,
  Ejections: 3,
  /** Requests waiting for a new connection to the endpoint. */
  Pending: 4,
  /** 1 while the endpoint fails its active health check (control/health-checks.ts). */
  Unhealthy: 5,
} as const;

export interface SharedBuffers {
  routes: SharedArrayBuffer;
  endpoints: SharedArrayBuffer;
  /** Per endpoint: ejected until (ms since epoch). */
  ejectedUntil: SharedArrayBuffer;
  /** Per bucket: GCRA theoretical arrival time (µs since epoch). */
  rateBuckets: SharedArrayBuffer;
}

export function allocateSharedBuffers(): SharedBuffers {
  return {
    routes: new SharedArrayBuffer(ROUTE_SLOTS * ROUTE_FIELDS * 4),
    endpoints: new SharedArrayBuffer(ENDPOINT_SLOTS * ENDPOINT_FIELDS * 4),
    ejectedUntil: new SharedArrayBuffer(ENDPOINT_SLOTS * 8),
    rateBuckets: new SharedArrayBuffer(RATE_BUCKETS * 8),
  };
}

export class SharedState {
  private readonly routes: Int32Array;
  private readonly endpoints: Int32Array;
  private readonly ejected: BigInt64Array;
  private readonly buckets: BigInt64Array;

  constructor(buffers: SharedBuffers) {
    this.routes = new Int32Array(buffers.routes);
    this.endpoints = new Int32Array(buffers.endpoints);
    this.ejected = new BigInt64Array(buffers.ejectedUntil);
    this.buckets = new BigInt64Array(buffers.rateBuckets);
  }

  // ---- routes

  nextRoundRobin(routeSlot: number): number {
    return Atomics.add(this.routes, routeSlot * ROUTE_FIELDS + RouteField.RoundRobin, 1) >>> 0;
  }

  /** The rotation's next position without taking it (nodemesh explain: what the next pick would be). */
  roundRobinPosition(routeSlot: number): number {
    return Atomics.load(this.routes, routeSlot * ROUTE_FIELDS + RouteField.RoundRobin) >>> 0;
  }

  /** Counts a request in flight on the route (the retry budget's denominator). */
  routeRequestStarted(routeSlot: number): void {
    Atomics.add(this.routes, routeSlot * ROUTE_FIELDS + RouteField.ActiveRequests, 1);
  }
  routeRequestEnded(routeSlot: number): void {
    Atomics.sub(this.routes, routeSlot * ROUTE_FIELDS + RouteField.ActiveRequests, 1);
  }

  /**
   * Envoy's retry budget: retries in flight may be at most `percent` of the active requests, or
   * `minConcurrency`, whichever is larger. Takes a retry token if allowed.
   */
  tryStartRetry(routeSlot: number, percent: number, minConcurrency: number): boolean {
    const base = routeSlot * ROUTE_FIELDS;
    const active = Atomics.load(this.routes, base + RouteField.ActiveRequests);
    const limit = Math.max(minConcurrency, Math.floor((active * percent) / 100));
    const retries = Atomics.add(this.routes, base + RouteField.ActiveRetries, 1);
    if (retries < limit) return true;
    Atomics.sub(this.routes, base + RouteField.ActiveRetries, 1);
    return false;
  }
  retryEnded(routeSlot: number): void {
    Atomics.sub(this.routes, routeSlot * ROUTE_FIELDS + RouteField.ActiveRetries, 1);
  }

  // ---- endpoints

  activeRequests(endpointSlot: number): number {
    return Atomics.load(this.endpoints, endpointSlot * ENDPOINT_FIELDS + EndpointField.ActiveRequests);
  }
  /** Takes a request slot unless `max` are in flight already (circuit breaking). */
  tryStartRequest(endpointSlot: number, max: number): boolean {
    const at = endpointSlot * ENDPOINT_FIELDS + EndpointField.ActiveRequests;
    if (Atomics.add(this.endpoints, at, 1) < max) return true;
    Atomics.sub(this.endpoints, at, 1);
    return false;
  }
  requestEnded(endpointSlot: number): void {
    Atomics.sub(this.endpoints, endpointSlot * ENDPOINT_FIELDS + EndpointField.ActiveRequests, 1);
  }

  tryOpenConnection(endpointSlot: number, max: number): boolean {
    const at = endpointSlot * ENDPOINT_FIELDS + EndpointField.OpenConnections;
    if (Atomics.add(this.endpoints, at, 1) < max) return true;
    Atomics.sub(this.endpoints, at, 1);
    return false;
  }
  connectionClosed(endpointSlot: number): void {
    Atomics.sub(this.endpoints, endpointSlot * ENDPOINT_FIELDS + EndpointField.OpenConnections, 1);
  }

  tryStartPending(endpointSlot: number, max: number): boolean {
    const at = endpointSlot * ENDPOINT_FIELDS + EndpointField.Pending;
    if (Atomics.add(this.endpoints, at, 1) < max) return true;
    Atomics.sub(this.endpoints, at, 1);
    return false;
  }
  pendingEnded(endpointSlot: number): void {
    Atomics.sub(this.endpoints, endpointSlot * ENDPOINT_FIELDS + EndpointField.Pending, 1);
  }

  /** Out of load balancing: ejected by outlier detection, or failing its active health check. */
  isEjected(endpointSlot: number, nowMs: number): boolean {
    return Atomics.load(this.ejected, endpointSlot) > BigInt(Math.floor(nowMs)) || this.isUnhealthy(endpointSlot);
  }

  isUnhealthy(endpointSlot: number): boolean {
    return Atomics.load(this.endpoints, endpointSlot * ENDPOINT_FIELDS + EndpointField.Unhealthy) === 1;
  }

  /** The active health check's verdict (the control thread's health checker writes it). */
  setUnhealthy(endpointSlot: number, unhealthy: boolean): void {
    Atomics.store(this.endpoints, endpointSlot * ENDPOINT_FIELDS + EndpointField.Unhealthy, unhealthy ? 1 : 0);
  }

  /** A success resets the endpoint's run of consecutive failures. */
  recordSuccess(endpointSlot: number): void {
    const at = endpointSlot * ENDPOINT_FIELDS + EndpointField.ConsecutiveFailures;
    if (Atomics.load(this.endpoints, at) !== 0) Atomics.store(this.endpoints, at, 0);
  }

  /** Counts a failure; returns the length of the run of consecutive failures it extends. */
  recordFailure(endpointSlot: number): number {
    return Atomics.add(this.endpoints, endpointSlot * ENDPOINT_FIELDS + EndpointField.ConsecutiveFailures, 1) + 1;
  }

  /**
   * Ejects the endpoint for base × (number of times ejected), capped at max; the count starts
   * over once the endpoint has stayed in for `maxMs`. Returns false when another worker ejected
   * it first.
   */
  eject(endpointSlot: number, nowMs: number, baseMs: number, maxMs: number): boolean {
    const previous = Atomics.load(this.ejected, endpointSlot);
    const now = BigInt(Math.floor(nowMs));
    if (previous > now) return false;
    const ejectionsAt = endpointSlot * ENDPOINT_FIELDS + EndpointField.Ejections;
    if (now - previous > BigInt(maxMs)) Atomics.store(this.endpoints, ejectionsAt, 0);
    const times = Atomics.add(this.endpoints, ejectionsAt, 1) + 1;
    const until = now + BigInt(Math.min(baseMs * times, Math.max(baseMs, maxMs)));
    if (Atomics.compareExchange(this.ejected, endpointSlot, previous, until) !== previous) {
      Atomics.sub(this.endpoints, ejectionsAt, 1);
      return false;
    }
    Atomics.store(this.endpoints, endpointSlot * ENDPOINT_FIELDS + EndpointField.ConsecutiveFailures, 0);
    return true;
  }

  /** Zeroes a reclaimed endpoint slot's counters and ejection before a new endpoint owns it. */
  resetEndpoint(endpointSlot: number): void {
    for (let field = 0; field < ENDPOINT_FIELDS; field++)
      Atomics.store(this.endpoints, endpointSlot * ENDPOINT_FIELDS + field, 0);
    Atomics.store(this.ejected, endpointSlot, 0n);
  }

  /** Zeroes a reclaimed route slot's counters before a new route owns it. */
  resetRoute(routeSlot: number): void {
    for (let field = 0; field < ROUTE_FIELDS; field++) Atomics.store(this.routes, routeSlot * ROUTE_FIELDS + field, 0);
  }

  // ---- rate limiting

  /**
   * GCRA, the token bucket in one word: admits a request at `nowUs` unless the bucket is empty;
   * otherwise returns how long until it would be admitted (µs). One compare-exchange, so exact
   * across workers.
   */
  rateLimit(bucket: number, nowUs: number, intervalUs: number, burst: number): number {
    const now = BigInt(Math.floor(nowUs));
    const interval = BigInt(Math.max(1, Math.round(intervalUs)));
    const tolerance = interval * BigInt(burst - 1);
    for (let i = 0; i < 64; i++) {
      const tat = Atomics.load(this.buckets, bucket);
      const start = tat > now ? tat : now;
      if (start - now > tolerance) return Number(start - now - tolerance);
      if (Atomics.compareExchange(this.buckets, bucket, tat, start + interval) === tat) return 0;
    }
    return Number(interval); // extreme contention: refuse this one rather than spin
  }
}

/**
 * Stable slot numbers for keys (route "vip:port", endpoint "ip:port"): a key keeps its slot while
 * it stays in the configuration, so its counters carry on across snapshots. Slot 0 is never handed
 * out: it is where traffic without a known route or endpoint is counted, apart from everyone else.
 *
 * Pod churn gives every new pod IP a new key, so slots of keys that left the configuration are
 * reclaimed (`retainOnly`). A freed slot is quarantined first: requests still in flight on the
 * departed endpoint end after it left and decrement its counters, which must not land on a new
 * owner. After the quarantine the slot is reused and `onReuse` resets its counters. Only when
 * every slot is live or quarantined do keys share slots (and so their limits and ejections).
 */
export class SlotAllocator {
  private readonly slots = new Map<string, number>();
  /** Keys holding each slot: more than one only past capacity. */
  private readonly holders: Uint32Array;
  /** Freed slots, oldest first, each with the time it was freed. */
  private readonly quarantine: { slot: number; freedAt: number }[] = [];
  private quarantineHead = 0;
  private readonly free: number[] = [];
  /** The next slot never handed out yet. */
  private fresh = 1;
  private readonly capacity: number;
  private readonly quarantineMs: number;
  private readonly now: () => number;
  private readonly onReuse: (slot: number) => void;

  constructor(capacity: number, opts: SlotAllocatorOptions = {}) {
    this.capacity = capacity;
    this.holders = new Uint32Array(capacity);
    this.quarantineMs = opts.quarantineMs ?? SLOT_QUARANTINE_MS;
    this.now = opts.now ?? Date.now;
    this.onReuse = opts.onReuse ?? (() => {});
  }

  slot(key: string): number {
    let slot = this.slots.get(key);
    if (slot !== undefined) return slot;
    slot = this.unusedSlot() ?? 1 + (this.slots.size % (this.capacity - 1));
    this.holders[slot]!++;
    this.slots.set(key, slot);
    return slot;
  }

  /** Frees the slots of every key not in `live` (the keys of the snapshot now in force). */
  retainOnly(live: ReadonlySet<string>): void {
    const freedAt = this.now();
    for (const [key, slot] of this.slots) {
      if (live.has(key)) continue;
      this.slots.delete(key);
      if (--this.holders[slot]! === 0) this.quarantine.push({ slot, freedAt });
    }
  }

  /** Keys holding a slot, and slots waiting out their quarantine (for tests and debugging). */
  get size(): { keys: number; quarantined: number } {
    return { keys: this.slots.size, quarantined: this.quarantine.length - this.quarantineHead };
  }

  private unusedSlot(): number | undefined {
    this.endQuarantines();
    const reused = this.free.pop();
    if (reused !== undefined) {
      this.onReuse(reused);
      return reused;
    }
    return this.fresh < this.capacity ? this.fresh++ : undefined;
  }

  private endQuarantines(): void {
    const cutoff = this.now() - this.quarantineMs;
    while (this.quarantineHead < this.quarantine.length && this.quarantine[this.quarantineHead]!.freedAt <= cutoff) {
      this.free.push(this.quarantine[this.quarantineHead++]!.slot);
    }
    // Compact once the consumed head dominates, so the queue's array stays bounded.
    if (this.quarantineHead > 1024 && this.quarantineHead * 2 > this.quarantine.length) {
      this.quarantine.splice(0, this.quarantineHead);
      this.quarantineHead = 0;
    }
  }
}

/**
 * How long a freed slot waits before reuse: longer than requests normally last after their
 * endpoint left (the upstream pools drain then), so late decrements find no new owner.
 */
export const SLOT_QUARANTINE_MS = 10 * 60_000;

export interface SlotAllocatorOptions {
  quarantineMs?: number;
  /** The clock (ms); tests pass their own. */
  now?: () => number;
  /** Called when a quarantined slot gets a new key: reset its counters. */
  onReuse?: (slot: number) => void;
}
