import { describe, expect, it } from "vitest";
import { LATENCY_BUCKETS_MS, quantileMs } from "./service-graph.ts";

/** Counts with `n` requests in the bucket whose upper bound is `upperMs`, and none elsewhere. */
function buckets(entries: Record<number, number>): number[] {
  const counts = LATENCY_BUCKETS_MS.map(() => 0);
  for (const [upper, n] of Object.entries(entries)) {
    const i = LATENCY_BUCKETS_MS.indexOf(Number(upper) as (typeof LATENCY_BUCKETS_MS)[number]);
    if (i < 0) throw new Error(`no bucket ${upper}`);
    counts[i] = n;
  }
  return counts;
}

describe("LATENCY_BUCKETS_MS", () => {
  it("rises strictly and ends open-ended", () => {
    for (let i = 1; i < LATENCY_BUCKETS_MS.length; i++) {
      expect(LATENCY_BUCKETS_MS[i]).toBeGreaterThan(LATENCY_BUCKETS_MS[i - 1]!);
    }
    expect(LATENCY_BUCKETS_MS.at(-1)).toBe(Number.POSITIVE_INFINITY);
    expect(LATENCY_BUCKETS_MS.length).toBe(15);
  });
});

describe("quantileMs", () => {
  it("is null without requests", () => {
    expect(quantileMs([], 0.5)).toBeNull();
    expect(
      quantileMs(
        LATENCY_BUCKETS_MS.map(() => 0),
        0.99,
      ),
    ).toBeNull();
  });

  it("interpolates linearly within a single bucket", () => {
    // 10 requests in (2.5, 5]: the median is half way, p99 at 99 %.
    const b = buckets({ 5: 10 });
    expect(quantileMs(b, 0.5)).toBeCloseTo(3.75, 10);
    expect(quantileMs(b, 0.99)).toBeCloseTo(4.975, 10);
    expect(quantileMs(b, 1)).toBeCloseTo(5, 10);
    expect(quantileMs(b, 0)).toBe(2.5); // the bucket's lower bound
  });

  it("starts the first bucket at 0 ms", () => {
    const b = buckets({ 0.5: 4 });
    expect(quantileMs(b, 0.5)).toBeCloseTo(0.25, 10);
    expect(quantileMs(b, 0.25)).toBeCloseTo(0.125, 10);
  });

  it("finds the bucket the rank falls in when counts are spread", () => {
    // 10 fast (≤ 0.5 ms), 10 in (5, 10].
    const b = buckets({ 0.5: 10, 10: 10 });
    expect(quantileMs(b, 0.5)).toBeCloseTo(0.5, 10); // rank 10: the end of the first bucket
    expect(quantileMs(b, 0.75)).toBeCloseTo(7.5, 10); // rank 15: half way through (5, 10]
    expect(quantileMs(b, 0.99)).toBeCloseTo(9.9, 10); // rank 19.8: 98 % through (5, 10]
  });

  it("skips empty buckets between filled ones", () => {
    // 90 in (10, 25], 10 in (1000, 2500]
    const b = buckets({ 25: 90, 2500: 10 });
    expect(quantileMs(b, 0.5)).toBeCloseTo(10 + (15 * 50) / 90, 10);
    expect(quantileMs(b, 0.9)).toBeCloseTo(25, 10);
    expect(quantileMs(b, 0.95)).toBeCloseTo(1000 + (1500 * 5) / 10, 10);
    expect(quantileMs(b, 0.99)).toBeCloseTo(1000 + (1500 * 9) / 10, 10);
  });

  it("reports the open-ended bucket at its lower bound (10 s)", () => {
    expect(quantileMs(buckets({ [Number.POSITIVE_INFINITY]: 3 }), 0.5)).toBe(10000);
    const b = buckets({ 1: 99, [Number.POSITIVE_INFINITY]: 1 });
    expect(quantileMs(b, 0.5)).toBeCloseTo(0.5 + (0.5 * 50) / 99, 10);
    expect(quantileMs(b, 0.999)).toBe(10000);
  });

  it("accepts bucket arrays shorter than the bounds", () => {
    expect(quantileMs([0, 2], 0.5)).toBeCloseTo(0.75, 10); // (0.5, 1], half way
  });

  it("is monotonic in q", () => {
    const b = buckets({ 0.5: 3, 2.5: 7, 50: 11, 500: 5, 5000: 2 });
    let last = -1;
    for (let q = 0; q <= 1.0001; q += 0.01) {
      const v = quantileMs(b, Math.min(q, 1))!;
      expect(v).toBeGreaterThanOrEqual(last);
      last = v;
    }
    expect(last).toBeCloseTo(5000, 10);
  });
});
