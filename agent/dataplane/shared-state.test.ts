import { describe, expect, it } from "vitest";
import { allocateSharedBuffers, ENDPOINT_SLOTS, ROUTE_SLOTS, SharedState, SlotAllocator } from "./shared-state.ts";

/** Two workers' views of the same shared memory. */
function twoWorkers(): [SharedState, SharedState] {
  const buffers = allocateSharedBuffers();
  return [new SharedState(buffers), new SharedState(buffers)];
}

describe("round robin counter", () => {
  it("gives one exact rotation across two workers over the same buffers", () => {
    const [a, b] = twoWorkers();
    const picks = Array.from({ length: 12 }, (_, i) => (i % 3 === 0 ? a : b).nextRoundRobin(7) % 3);
    expect(picks).toEqual([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2]);
  });

  it("keeps route slots apart, up to the last slot", () => {
    const [a, b] = twoWorkers();
    a.nextRoundRobin(1);
    a.nextRoundRobin(1);
    expect(b.nextRoundRobin(2)).toBe(0);
    expect(b.nextRoundRobin(1)).toBe(2);
    expect(a.nextRoundRobin(ROUTE_SLOTS - 1)).toBe(0);
    expect(b.nextRoundRobin(ROUTE_SLOTS - 1)).toBe(1);
  });
});

describe("retry budget", () => {
  it("allows minConcurrency retries when few requests are active", () => {
    const [a, b] = twoWorkers();
    for (let i = 0; i < 5; i++) a.routeRequestStarted(3);
    // 20% of 5 is 1; the floor of 3 wins. Retries count across workers.
    expect(a.tryStartRetry(3, 20, 3)).toBe(true);
    expect(b.tryStartRetry(3, 20, 3)).toBe(true);
    expect(a.tryStartRetry(3, 20, 3)).toBe(true);
    expect(b.tryStartRetry(3, 20, 3)).toBe(false);
    expect(a.tryStartRetry(3, 20, 3)).toBe(false);
    b.retryEnded(3);
    expect(a.tryStartRetry(3, 20, 3)).toBe(true);
    expect(a.tryStartRetry(3, 20, 3)).toBe(false);
  });

  it("allows percent% of the active requests when that is more", () => {
    const [a, b] = twoWorkers();
    for (let i = 0; i < 50; i++) (i % 2 ? a : b).routeRequestStarted(4);
    const allowed = Array.from({ length: 15 }, (_, i) => (i % 2 ? a : b).tryStartRetry(4, 20, 3)).filter(Boolean);
    expect(allowed).toHaveLength(10);
    // Fewer active requests shrink the budget: with 30 active, 10 retries in flight are too many.
    for (let i = 0; i < 20; i++) a.routeRequestEnded(4);
    expect(a.tryStartRetry(4, 20, 3)).toBe(false);
    for (let i = 0; i < 5; i++) b.retryEnded(4);
    expect(a.tryStartRetry(4, 20, 3)).toBe(true); // 5 in flight < 6 = 20% of 30
    expect(a.tryStartRetry(4, 20, 3)).toBe(false);
  });

  it("refuses every retry with a zero budget", () => {
    const [a] = twoWorkers();
    for (let i = 0; i < 4; i++) a.routeRequestStarted(5);
    expect(a.tryStartRetry(5, 20, 0)).toBe(false); // floor(0.8) = 0
  });

  it("keeps route counters apart", () => {
    const [a] = twoWorkers();
    expect(a.tryStartRetry(8, 0, 1)).toBe(true);
    expect(a.tryStartRetry(8, 0, 1)).toBe(false);
    expect(a.tryStartRetry(9, 0, 1)).toBe(true);
  });
});

describe("circuit breaker counters", () => {
  it("tryStartRequest enforces max exactly across workers and releases", () => {
    const [a, b] = twoWorkers();
    expect(a.tryStartRequest(11, 3)).toBe(true);
    expect(b.tryStartRequest(11, 3)).toBe(true);
    expect(a.tryStartRequest(11, 3)).toBe(true);
    expect(b.tryStartRequest(11, 3)).toBe(false);
    expect(a.activeRequests(11)).toBe(3); // a refusal leaves no trace
    expect(b.activeRequests(11)).toBe(3);
    a.requestEnded(11);
    expect(b.activeRequests(11)).toBe(2);
    expect(b.tryStartRequest(11, 3)).toBe(true);
    expect(a.tryStartRequest(11, 3)).toBe(false);
    expect(a.activeRequests(12)).toBe(0);
  });

  it("tryOpenConnection and tryStartPending enforce their own max", () => {
    const [a, b] = twoWorkers();
    expect(a.tryOpenConnection(20, 2)).toBe(true);
    expect(b.tryOpenConnection(20, 2)).toBe(true);
    expect(a.tryOpenConnection(20, 2)).toBe(false);
    b.connectionClosed(20);
    expect(a.tryOpenConnection(20, 2)).toBe(true);

    expect(a.tryStartPending(20, 1)).toBe(true);
    expect(b.tryStartPending(20, 1)).toBe(false);
    a.pendingEnded(20);
    expect(b.tryStartPending(20, 1)).toBe(true);
    expect(a.tryStartPending(20, 0)).toBe(false);

    // The fields are separate: none of this counted as requests in flight.
    expect(a.activeRequests(20)).toBe(0);
    expect(a.tryStartRequest(20, 1)).toBe(true);
  });

  it("uses the last endpoint slot without touching its neighbour", () => {
    const [a] = twoWorkers();
    const last = ENDPOINT_SLOTS - 1;
    expect(a.tryStartRequest(last, 1)).toBe(true);
    expect(a.activeRequests(last)).toBe(1);
    expect(a.activeRequests(last - 1)).toBe(0);
  });
});

describe("GCRA rate limiter", () => {
  const T0 = 1_700_000_000_000_000; // µs since epoch
  const INTERVAL = 100_000; // 10 requests per second

  it("admits exactly burst requests at once, then reports the wait", () => {
    const [a, b] = twoWorkers();
    const admitted = Array.from({ length: 5 }, (_, i) => (i % 2 ? a : b).rateLimit(1, T0, INTERVAL, 5));
    expect(admitted).toEqual([0, 0, 0, 0, 0]);
    const wait = a.rateLimit(1, T0, INTERVAL, 5);
    expect(wait).toBeGreaterThan(0);
    expect(Math.abs(wait - INTERVAL)).toBeLessThanOrEqual(1);
    // A refusal consumes nothing: asking again at the same time gets the same answer.
    expect(b.rateLimit(1, T0, INTERVAL, 5)).toBe(wait);
  });

  it("admits one more after an interval, and the wait shrinks as time passes", () => {
    const [a] = twoWorkers();
    for (let i = 0; i < 3; i++) expect(a.rateLimit(2, T0, INTERVAL, 3)).toBe(0);
    expect(a.rateLimit(2, T0 + 40_000, INTERVAL, 3)).toBe(60_000);
    expect(a.rateLimit(2, T0 + INTERVAL, INTERVAL, 3)).toBe(0);
    expect(a.rateLimit(2, T0 + INTERVAL, INTERVAL, 3)).toBe(INTERVAL);
    // After a quiet period the whole burst is back, and no more.
    const later = T0 + 10 * INTERVAL;
    for (let i = 0; i < 3; i++) expect(a.rateLimit(2, later, INTERVAL, 3)).toBe(0);
    expect(a.rateLimit(2, later, INTERVAL, 3)).toBeGreaterThan(0);
  });

  it("with burst 1 spaces requests one interval apart", () => {
    const [a] = twoWorkers();
    expect(a.rateLimit(3, T0, INTERVAL, 1)).toBe(0);
    expect(a.rateLimit(3, T0 + 1, INTERVAL, 1)).toBe(INTERVAL - 1);
    expect(a.rateLimit(3, T0 + INTERVAL, INTERVAL, 1)).toBe(0);
    expect(a.rateLimit(3, T0 + 2 * INTERVAL - 1, INTERVAL, 1)).toBe(1);
  });

  it("keeps buckets apart and accepts fractional intervals", () => {
    const [a] = twoWorkers();
    const interval = 1_000_000 / 3; // 3 per second
    expect(a.rateLimit(4, T0, interval, 1)).toBe(0);
    expect(a.rateLimit(5, T0, interval, 1)).toBe(0);
    expect(a.rateLimit(4, T0, interval, 1)).toBe(333_333);
  });
});

describe("outlier ejection", () => {
  const NOW = 1_700_000_000_000; // ms since epoch
  const BASE = 1000;
  const MAX = 3500;

  it("ejects for base × times, capped at max, and refuses a double ejection", () => {
    const [a, b] = twoWorkers();
    const slot = 30;
    const durations: number[] = [];
    let t = NOW;
    for (let i = 0; i < 6; i++) {
      expect(a.isEjected(slot, t)).toBe(false);
      expect((i % 2 ? a : b).eject(slot, t, BASE, MAX)).toBe(true);
      // Another worker that saw the same failures cannot eject it again meanwhile.
      expect((i % 2 ? b : a).eject(slot, t + 1, BASE, MAX)).toBe(false);
      let d = 1;
      while (b.isEjected(slot, t + d)) d++;
      expect(a.isEjected(slot, t + d - 1)).toBe(true);
      durations.push(d);
      t += d; // back in exactly when the ejection ends, then fails again
    }
    expect(durations).toEqual([1000, 2000, 3000, 3500, 3500, 3500]);
  });

  it("starts the count over once the endpoint stayed in for max", () => {
    const [a] = twoWorkers();
    const slot = 31;
    expect(a.eject(slot, NOW, BASE, MAX)).toBe(true); // until NOW+1000
    expect(a.eject(slot, NOW + 1000, BASE, MAX)).toBe(true); // 2nd: until NOW+3000
    // In for exactly max: not long enough, the count goes on (3rd: 3000).
    expect(a.eject(slot, NOW + 3000 + MAX, BASE, MAX)).toBe(true);
    const third = NOW + 3000 + MAX;
    expect(a.isEjected(slot, third + 2999)).toBe(true);
    expect(a.isEjected(slot, third + 3000)).toBe(false);
    // In for longer than max: back to base.
    const fourth = third + 3000 + MAX + 1;
    expect(a.eject(slot, fourth, BASE, MAX)).toBe(true);
    expect(a.isEjected(slot, fourth + BASE - 1)).toBe(true);
    expect(a.isEjected(slot, fourth + BASE)).toBe(false);
  });

  it("resets the run of consecutive failures on ejection and on success", () => {
    const [a, b] = twoWorkers();
    expect(a.recordFailure(40)).toBe(1);
    expect(b.recordFailure(40)).toBe(2);
    expect(a.recordFailure(40)).toBe(3);
    a.recordSuccess(40);
    expect(b.recordFailure(40)).toBe(1);
    expect(b.recordFailure(40)).toBe(2);
    expect(a.eject(40, NOW, BASE, MAX)).toBe(true);
    expect(b.recordFailure(40)).toBe(1);
    expect(b.recordFailure(41)).toBe(1);
  });

  it("never ejects for less than base even when max is smaller", () => {
    const [a] = twoWorkers();
    expect(a.eject(50, NOW, 2000, 500)).toBe(true);
    expect(a.isEjected(50, NOW + 1999)).toBe(true);
    expect(a.isEjected(50, NOW + 2000)).toBe(false);
  });
});

describe("SlotAllocator", () => {
  it("gives a key the same slot for ever and distinct keys distinct slots", () => {
    const slots = new SlotAllocator(100);
    const a = slots.slot("10.96.0.10:80");
    const b = slots.slot("10.96.0.11:80");
    expect(a).not.toBe(b);
    expect(slots.slot("10.96.0.10:80")).toBe(a);
    expect(slots.slot("10.96.0.11:80")).toBe(b);
  });

  it("never hands out slot 0 (the no-route slot) and shares slots past capacity, staying within range", () => {
    const slots = new SlotAllocator(4);
    const got = Array.from({ length: 10 }, (_, i) => slots.slot(`k${i}`));
    expect(got).toEqual([1, 2, 3, 1, 2, 3, 1, 2, 3, 1]);
    expect(slots.slot("k5")).toBe(3);
  });
});

describe("SlotAllocator reclaiming slots", () => {
  /** An allocator on a clock the test moves, recording every slot it reuses. */
  function allocator(capacity: number, quarantineMs = 1000) {
    const clock = { ms: 0 };
    const reused: number[] = [];
    const slots = new SlotAllocator(capacity, { quarantineMs, now: () => clock.ms, onReuse: (s) => reused.push(s) });
    return { slots, clock, reused };
  }

  it("keeps a freed slot out of use for the quarantine, then gives it to a new key", () => {
    const { slots, clock, reused } = allocator(4);
    const a = slots.slot("10.244.1.11:8080");
    slots.slot("10.244.1.12:8080");
    slots.retainOnly(new Set(["10.244.1.12:8080"]));
    clock.ms = 999;
    expect(slots.slot("10.244.1.13:8080")).toBe(3); // a fresh slot; a's is still in quarantine
    expect(reused).toEqual([]);
    clock.ms = 1000;
    expect(slots.slot("10.244.1.14:8080")).toBe(a);
    expect(reused).toEqual([a]);
    expect(slots.size).toEqual({ keys: 3, quarantined: 0 });
  });

  it("keeps the slot of a key that stays, and frees a shared slot only when its last key leaves", () => {
    const { slots, clock } = allocator(3, 0);
    const got = ["a", "b", "c"].map((k) => slots.slot(k)); // capacity 3: slots 1, 2, then 1 again
    expect(got).toEqual([1, 2, 1]);
    slots.retainOnly(new Set(["b", "c"]));
    clock.ms = 1;
    expect(slots.slot("d")).toBe(1); // slot 1 is still held by c: shared again, not reused
    slots.retainOnly(new Set(["b", "d"]));
    clock.ms = 2;
    expect(slots.slot("e")).toBe(1); // still held by d: shared
    slots.retainOnly(new Set(["b"]));
    clock.ms = 3;
    expect(slots.slot("f")).toBe(1); // its last keys left: free, and f alone holds it
    expect(slots.size).toEqual({ keys: 2, quarantined: 0 });
    expect(slots.slot("b")).toBe(2);
  });

  it("churns 200k endpoint addresses through 65k slots without sharing and with bounded memory", () => {
    const { slots, clock, reused } = allocator(ENDPOINT_SLOTS, 10 * 60_000);
    const LIVE = 1000; // endpoints in each snapshot
    const ROUNDS = 200; // each snapshot replaces every endpoint: 200k addresses in all
    const everUsed = new Set<number>();
    let maxQuarantined = 0;
    for (let round = 0; round < ROUNDS; round++) {
      clock.ms += 60_000; // a snapshot a minute
      const keys = Array.from({ length: LIVE }, (_, i) => {
        const n = round * LIVE + i;
        return `10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}:8080`;
      });
      slots.retainOnly(new Set(keys));
      const assigned = keys.map((k) => slots.slot(k));
      expect(new Set(assigned).size).toBe(LIVE); // no two live endpoints share a slot
      for (const s of assigned) {
        expect(s).toBeGreaterThan(0);
        expect(s).toBeLessThan(ENDPOINT_SLOTS);
        everUsed.add(s);
      }
      maxQuarantined = Math.max(maxQuarantined, slots.size.quarantined);
      expect(slots.size.keys).toBe(LIVE); // departed keys are forgotten
    }
    // 10 minutes of quarantine at 1000 departures a minute: about 11k slots in use at most.
    expect(everUsed.size).toBeLessThanOrEqual(12 * LIVE);
    expect(maxQuarantined).toBeLessThanOrEqual(11 * LIVE);
    expect(reused.length).toBeGreaterThan(150 * LIVE);
  });
});

describe("SharedState resets a reclaimed slot", () => {
  it("zeroes an endpoint's breaker, failure run and ejection, and a route's counters", () => {
    const [a, b] = twoWorkers();
    expect(a.tryStartRequest(9, 10)).toBe(true);
    a.tryOpenConnection(9, 10);
    a.tryStartPending(9, 10);
    a.recordFailure(9);
    expect(a.eject(9, 1000, 30_000, 300_000)).toBe(true);
    a.routeRequestStarted(5);
    a.nextRoundRobin(5);
    b.resetEndpoint(9);
    b.resetRoute(5);
    expect(a.activeRequests(9)).toBe(0);
    expect(a.isEjected(9, 1001)).toBe(false);
    expect(a.recordFailure(9)).toBe(1);
    expect(a.tryOpenConnection(9, 1)).toBe(true);
    expect(a.tryStartPending(9, 1)).toBe(true);
    expect(a.nextRoundRobin(5)).toBe(0);
    expect(a.tryStartRetry(5, 0, 1)).toBe(true); // no active retries left over
  });
});
