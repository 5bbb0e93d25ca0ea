import { describe, expect, it } from "vitest";
import { EndpointPicker } from "./balancer.ts";
import type { Endpoint } from "./endpoint.ts";
import { buildHashRing, hash32 } from "./hash-ring.ts";
import { type CompiledPolicy, DEFAULT_POLICY, type LbType } from "./policy.ts";
import { allocateSharedBuffers, SharedState } from "./shared-state.ts";
import { type Backend, localityTiers, type ServiceRoute } from "./snapshot.ts";

const NOW = 1_700_000_000_000;

const ep = (n: number, node = ""): Endpoint => ({
  ip: `10.0.0.${n}`,
  port: 80,
  meshed: true,
  pod: `p${n}`,
  node,
  workload: "w",
  namespace: "default",
  slot: n,
});

function policy(type: LbType, localityToleranceMs?: number): CompiledPolicy {
  return { ...DEFAULT_POLICY, lb: { type, hashSourceIp: false, localityToleranceMs } };
}

function backend(endpoints: Endpoint[], opts: { type?: LbType; slot?: number; tiers?: Endpoint[][] } = {}): Backend {
  const p = policy(opts.type ?? "RoundRobin");
  const route = { id: "svc.default", port: 80, endpoints, slot: opts.slot ?? 0, policy: p } as Partial<ServiceRoute>;
  return {
    route: route as ServiceRoute,
    weight: 1,
    policy: p,
    ring: p.lb.type === "ConsistentHash" ? buildHashRing(endpoints) : undefined,
    tiers: opts.tiers,
  };
}

function setup() {
  const buffers = allocateSharedBuffers();
  const shared = new SharedState(buffers);
  return { buffers, shared, picker: new EndpointPicker(shared) };
}

const pods = (xs: (Endpoint | undefined)[]) => xs.map((e) => e?.pod);

function counts(picks: (Endpoint | undefined)[]): Map<string | undefined, number> {
  const out = new Map<string | undefined, number>();
  for (const e of picks) out.set(e?.pod, (out.get(e?.pod) ?? 0) + 1);
  return out;
}

describe("round robin", () => {
  it("produces one exact rotation across two workers sharing the counters", () => {
    const { buffers } = setup();
    const workers = [new EndpointPicker(new SharedState(buffers)), new EndpointPicker(new SharedState(buffers))];
    const b = backend([ep(1), ep(2), ep(3)]);
    const picks = Array.from({ length: 12 }, (_, i) => workers[i % 2]!.pick(b, { tried: [], nowMs: NOW }));
    expect(pods(picks)).toEqual(["p1", "p2", "p3", "p1", "p2", "p3", "p1", "p2", "p3", "p1", "p2", "p3"]);
  });

  it("keeps routes' rotations apart by slot", () => {
    const { picker } = setup();
    const a = backend([ep(1), ep(2)], { slot: 0 });
    const b = backend([ep(3), ep(4)], { slot: 1 });
    const none = { tried: [], nowMs: NOW };
    expect(pods([picker.pick(a, none), picker.pick(b, none), picker.pick(a, none), picker.pick(b, none)])).toEqual([
      "p1",
      "p3",
      "p2",
      "p4",
    ]);
  });

  it("skips endpoints the request already tried and gives up when all were", () => {
    const { picker } = setup();
    const endpoints = [ep(1), ep(2), ep(3)];
    const b = backend(endpoints);
    for (let i = 0; i < 6; i++) {
      expect(picker.pick(b, { tried: [endpoints[0]!, endpoints[1]!], nowMs: NOW })?.pod).toBe("p3");
      expect(picker.pick(b, { tried: [endpoints[2]!], nowMs: NOW })?.pod).not.toBe("p3");
    }
    expect(picker.pick(b, { tried: endpoints, nowMs: NOW })).toBeUndefined();
    expect(picker.pick(backend([]), { tried: [], nowMs: NOW })).toBeUndefined();
  });

  it("does not double the load of a dead endpoint's neighbour: retries re-pick from the rotation", () => {
    const { picker } = setup();
    const b = backend([ep(1), ep(2), ep(3), ep(4)]);
    // p1 fails every attempt; each request retries until an endpoint answers.
    const served: (Endpoint | undefined)[] = [];
    for (let i = 0; i < 300; i++) {
      const tried: Endpoint[] = [];
      for (;;) {
        const e = picker.pick(b, { tried, nowMs: NOW })!;
        tried.push(e);
        if (e.pod !== "p1") break;
      }
      served.push(tried.at(-1));
    }
    const c = counts(served);
    expect([c.get("p2"), c.get("p3"), c.get("p4")]).toEqual([100, 100, 100]);
  });
});

describe("outlier ejection in picking", () => {
  it("skips ejected endpoints", () => {
    const { picker, shared } = setup();
    const endpoints = [ep(1), ep(2), ep(3)];
    const b = backend(endpoints);
    shared.eject(endpoints[1]!.slot, NOW, 30_000, 300_000);
    const picks = Array.from({ length: 30 }, () => picker.pick(b, { tried: [], nowMs: NOW + 1000 }));
    const c = counts(picks);
    expect(c.get("p2")).toBeUndefined();
    expect(c.get("p1")).toBe(15);
    expect(c.get("p3")).toBe(15);
    // Once the ejection ends it is picked again.
    const later = Array.from({ length: 30 }, () => picker.pick(b, { tried: [], nowMs: NOW + 30_000 }));
    expect(counts(later).get("p2")).toBe(10);
  });

  it("picks ejected endpoints (panic) when every endpoint is ejected", () => {
    const { picker, shared } = setup();
    const endpoints = [ep(1), ep(2)];
    const b = backend(endpoints);
    for (const e of endpoints) shared.eject(e.slot, NOW, 30_000, 300_000);
    const picks = Array.from({ length: 4 }, () => picker.pick(b, { tried: [], nowMs: NOW + 1 }));
    expect(pods(picks).sort()).toEqual(["p1", "p1", "p2", "p2"]);
    // Panic still honours what the request tried.
    expect(picker.pick(b, { tried: [endpoints[0]!], nowMs: NOW + 1 })?.pod).toBe("p2");
    expect(picker.pick(b, { tried: endpoints, nowMs: NOW + 1 })).toBeUndefined();
  });

  it("prefers an ejected endpoint over nothing only when the rest were tried", () => {
    const { picker, shared } = setup();
    const endpoints = [ep(1), ep(2), ep(3)];
    const b = backend(endpoints);
    shared.eject(endpoints[2]!.slot, NOW, 30_000, 300_000);
    expect(picker.pick(b, { tried: [endpoints[0]!], nowMs: NOW + 1 })?.pod).toBe("p2");
    expect(picker.pick(b, { tried: [endpoints[0]!, endpoints[1]!], nowMs: NOW + 1 })?.pod).toBe("p3");
  });
});

describe("least request", () => {
  it("gives a slow endpoint a small share (round robin would give it a third)", () => {
    const { picker } = setup();
    const endpoints = [ep(1), ep(2), ep(3)];
    const b = backend(endpoints, { type: "LeastRequest" });
    picker.observeLatency(endpoints[0]!, 5, NOW);
    picker.observeLatency(endpoints[1]!, 5, NOW);
    picker.observeLatency(endpoints[2]!, 200, NOW);
    const c = counts(Array.from({ length: 1000 }, () => picker.pick(b, { tried: [], nowMs: NOW })));
    expect(c.get("p3") ?? 0).toBeLessThan(50);
    // The two fast ones share the rest (ties go to the first of the two choices).
    expect(c.get("p1")).toBeGreaterThan(350);
    expect(c.get("p2")).toBeGreaterThan(350);

    const rr = counts(Array.from({ length: 999 }, () => picker.pick(backend(endpoints), { tried: [], nowMs: NOW })));
    expect(rr.get("p3")).toBe(333);
  });

  it("weighs latency by the requests in flight (latency × (active + 1))", () => {
    const { picker, shared } = setup();
    const endpoints = [ep(1), ep(2)];
    const b = backend(endpoints, { type: "LeastRequest" });
    picker.observeLatency(endpoints[0]!, 10, NOW);
    picker.observeLatency(endpoints[1]!, 30, NOW);
    // 10 × 1 < 30 × 1: the faster one.
    for (let i = 0; i < 20; i++) expect(picker.pick(b, { tried: [], nowMs: NOW })?.pod).toBe("p1");
    // 10 × (3 + 1) = 40 > 30: the slower, idle one.
    for (let i = 0; i < 3; i++) shared.tryStartRequest(endpoints[0]!.slot, 100);
    for (let i = 0; i < 20; i++) expect(picker.pick(b, { tried: [], nowMs: NOW })?.pod).toBe("p2");
    // 10 × (1 + 1) = 20 < 30: back to the faster one.
    shared.requestEnded(endpoints[0]!.slot);
    shared.requestEnded(endpoints[0]!.slot);
    for (let i = 0; i < 20; i++) expect(picker.pick(b, { tried: [], nowMs: NOW })?.pod).toBe("p1");
  });

  it("takes a slow observation at once (peak) and averages faster ones in", () => {
    const { picker } = setup();
    const endpoints = [ep(1), ep(2)];
    const b = backend(endpoints, { type: "LeastRequest" });
    picker.observeLatency(endpoints[0]!, 1, NOW);
    picker.observeLatency(endpoints[1]!, 50, NOW);
    expect(picker.pick(b, { tried: [], nowMs: NOW })?.pod).toBe("p1");
    picker.observeLatency(endpoints[0]!, 100, NOW); // peak: p1 now costs 100
    expect(picker.pick(b, { tried: [], nowMs: NOW })?.pod).toBe("p2");
    picker.observeLatency(endpoints[0]!, 1, NOW); // 0.8 × 100 + 0.2 × 1 = 80.2: still slower than 50
    expect(picker.pick(b, { tried: [], nowMs: NOW })?.pod).toBe("p2");
    for (let i = 0; i < 5; i++) picker.observeLatency(endpoints[0]!, 1, NOW); // ≈ 26.8
    expect(picker.pick(b, { tried: [], nowMs: NOW })?.pod).toBe("p1");
  });

  it("lets an endpoint not measured for a while have another chance (decay)", () => {
    const { picker } = setup();
    const endpoints = [ep(1), ep(2)];
    const b = backend(endpoints, { type: "LeastRequest" });
    picker.observeLatency(endpoints[0]!, 100, NOW);
    picker.observeLatency(endpoints[1]!, 10, NOW + 30_000);
    expect(picker.pick(b, { tried: [], nowMs: NOW + 30_000 })?.pod).toBe("p1"); // 100 × e^-3 ≈ 5 < 10
  });

  it("prefers a never-measured endpoint, and skips tried and ejected ones", () => {
    const { picker, shared } = setup();
    const endpoints = [ep(1), ep(2), ep(3)];
    const b = backend(endpoints, { type: "LeastRequest" });
    picker.observeLatency(endpoints[0]!, 5, NOW);
    picker.observeLatency(endpoints[1]!, 5, NOW);
    const c = counts(Array.from({ length: 300 }, () => picker.pick(b, { tried: [], nowMs: NOW })));
    expect(c.get("p3")).toBeGreaterThan(150); // in every pair it is part of (2 of 3)
    for (let i = 0; i < 20; i++) expect(picker.pick(b, { tried: [endpoints[2]!], nowMs: NOW })?.pod).not.toBe("p3");
    shared.eject(endpoints[2]!.slot, NOW, 30_000, 300_000);
    for (let i = 0; i < 20; i++) expect(picker.pick(b, { tried: [], nowMs: NOW + 1 })?.pod).not.toBe("p3");
    expect(picker.pick(b, { tried: [endpoints[0]!], nowMs: NOW + 1 })?.pod).toBe("p2");
    expect(picker.pick(b, { tried: [endpoints[0]!, endpoints[1]!], nowMs: NOW + 1 })?.pod).toBe("p3"); // panic
    expect(picker.pick(b, { tried: endpoints, nowMs: NOW + 1 })).toBeUndefined();
  });
});

describe("consistent hash", () => {
  const keys = Array.from({ length: 2000 }, (_, i) => `user-${i}`);

  it("sends the same key to the same endpoint, also from another worker", () => {
    const { buffers, picker } = setup();
    const other = new EndpointPicker(new SharedState(buffers));
    const b = backend([ep(1), ep(2), ep(3), ep(4)], { type: "ConsistentHash" });
    for (const key of keys.slice(0, 100)) {
      const first = picker.pick(b, { tried: [], hashKey: key, nowMs: NOW });
      for (let i = 0; i < 3; i++) expect(picker.pick(b, { tried: [], hashKey: key, nowMs: NOW })).toBe(first);
      expect(other.pick(b, { tried: [], hashKey: key, nowMs: NOW })).toBe(first);
    }
  });

  it("spreads keys across the endpoints", () => {
    const { picker } = setup();
    const b = backend([ep(1), ep(2), ep(3), ep(4)], { type: "ConsistentHash" });
    const c = counts(keys.map((k) => picker.pick(b, { tried: [], hashKey: k, nowMs: NOW })));
    expect(c.size).toBe(4);
    for (const n of c.values()) {
      expect(n).toBeGreaterThan(keys.length * 0.12);
      expect(n).toBeLessThan(keys.length * 0.4);
    }
  });

  it("moves only the removed endpoint's keys when an endpoint goes away", () => {
    const { picker } = setup();
    const before = backend([ep(1), ep(2), ep(3), ep(4)], { type: "ConsistentHash" });
    // A new snapshot: new Endpoint objects, p3 gone.
    const after = backend([ep(1), ep(2), ep(4)], { type: "ConsistentHash" });
    let moved = 0;
    for (const k of keys) {
      const a = picker.pick(before, { tried: [], hashKey: k, nowMs: NOW })!.pod;
      const b = picker.pick(after, { tried: [], hashKey: k, nowMs: NOW })!.pod;
      expect(b).not.toBe("p3");
      if (a !== "p3") expect(b).toBe(a);
      else moved++;
    }
    expect(moved).toBeGreaterThan(keys.length * 0.12);
  });

  it("takes the next endpoint on the ring when the owner was tried or is ejected", () => {
    const { picker, shared } = setup();
    const endpoints = [ep(1), ep(2), ep(3)];
    const b = backend(endpoints, { type: "ConsistentHash" });
    const owner = picker.pick(b, { tried: [], hashKey: "k", nowMs: NOW })!;
    const next = picker.pick(b, { tried: [owner], hashKey: "k", nowMs: NOW })!;
    expect(next).not.toBe(owner);
    expect(picker.pick(b, { tried: [owner], hashKey: "k", nowMs: NOW })).toBe(next);
    shared.eject(owner.slot, NOW, 1000, 10_000);
    expect(picker.pick(b, { tried: [], hashKey: "k", nowMs: NOW + 1 })).toBe(next);
    expect(picker.pick(b, { tried: [], hashKey: "k", nowMs: NOW + 1000 })).toBe(owner);
    expect(picker.pick(b, { tried: endpoints, hashKey: "k", nowMs: NOW })).toBeUndefined();
  });

  it("falls back to round robin without a hash key", () => {
    const { picker } = setup();
    const b = backend([ep(1), ep(2), ep(3)], { type: "ConsistentHash" });
    const picks = Array.from({ length: 6 }, () => picker.pick(b, { tried: [], nowMs: NOW }));
    expect(pods(picks)).toEqual(["p1", "p2", "p3", "p1", "p2", "p3"]);
  });

  it("hash32 is deterministic and spreads similar keys", () => {
    expect(hash32("abc")).toBe(hash32("abc"));
    expect(hash32("abc")).not.toBe(hash32("abd"));
    const ring = buildHashRing([ep(1), ep(2)]);
    expect(ring.hashes).toHaveLength(128);
    expect(ring.owners).toHaveLength(128);
    for (let i = 1; i < ring.hashes.length; i++) expect(ring.hashes[i]!).toBeGreaterThanOrEqual(ring.hashes[i - 1]!);
  });
});

describe("locality", () => {
  const rtt = { "node-b": 0.4, "node-c": 0.9, "node-d": 5, "node-e": 5.5 };

  it("puts the same node first, then the nearest within tolerance, unknown nodes last", () => {
    const endpoints = [
      ep(1, "node-x"), // never measured
      ep(2, "node-d"),
      ep(3, "node-c"),
      ep(4, "node-a"), // this node
      ep(5, "node-b"),
      ep(6, "node-e"),
      ep(7, "node-y"), // never measured
      ep(8, "node-a"),
    ];
    const tiers = localityTiers(endpoints, "node-a", rtt, 1);
    expect(tiers.map((t) => pods(t).sort())).toEqual([
      ["p4", "p8"],
      ["p3", "p5"],
      ["p2", "p6"],
      ["p1", "p7"],
    ]);
  });

  it("makes nodes beyond the tolerance of a tier's nearest node a tier of their own", () => {
    const tiers = localityTiers([ep(1, "b"), ep(2, "c"), ep(3, "d")], "a", { b: 1, c: 1.9, d: 2.5 }, 1);
    expect(tiers.map(pods)).toEqual([["p1", "p2"], ["p3"]]);
    expect(localityTiers([], "a", {}, 1)).toEqual([]);
  });

  it("picks from the nearest tier and falls to the next when it is all tried", () => {
    const { picker } = setup();
    const endpoints = [ep(1, "node-b"), ep(2, "node-a"), ep(3, "node-c"), ep(4, "node-a")];
    const tiers = localityTiers(endpoints, "node-a", { "node-b": 1, "node-c": 20 }, 1);
    const b = backend(endpoints, { tiers });
    const first = Array.from({ length: 10 }, () => picker.pick(b, { tried: [], nowMs: NOW }));
    expect(new Set(pods(first))).toEqual(new Set(["p2", "p4"]));
    const same = endpoints.filter((e) => e.node === "node-a");
    expect(picker.pick(b, { tried: same, nowMs: NOW })?.pod).toBe("p1");
    expect(picker.pick(b, { tried: [...same, endpoints[0]!], nowMs: NOW })?.pod).toBe("p3");
    expect(picker.pick(b, { tried: endpoints, nowMs: NOW })).toBeUndefined();
  });

  it("looks past an all-ejected tier before panicking", () => {
    const { picker, shared } = setup();
    const endpoints = [ep(1, "node-a"), ep(2, "node-b")];
    const b = backend(endpoints, { tiers: localityTiers(endpoints, "node-a", { "node-b": 3 }, 1) });
    shared.eject(endpoints[0]!.slot, NOW, 1000, 10_000);
    expect(picker.pick(b, { tried: [], nowMs: NOW + 1 })?.pod).toBe("p2");
    shared.eject(endpoints[1]!.slot, NOW, 1000, 10_000);
    expect(picker.pick(b, { tried: [], nowMs: NOW + 1 })?.pod).toBe("p1"); // panic keeps the tier order
  });

  it("applies to least request and consistent hash too", () => {
    const { picker } = setup();
    const endpoints = [ep(1, "far"), ep(2, "near"), ep(3, "far"), ep(4, "near")];
    const tiers = localityTiers(endpoints, "near", { far: 10 }, 1);
    const lr = backend(endpoints, { type: "LeastRequest", tiers });
    for (let i = 0; i < 20; i++) expect(picker.pick(lr, { tried: [], nowMs: NOW })?.node).toBe("near");
    const ch = backend(endpoints, { type: "ConsistentHash", tiers });
    for (let i = 0; i < 50; i++)
      expect(picker.pick(ch, { tried: [], hashKey: `k${i}`, nowMs: NOW })?.node).toBe("near");
  });
});
