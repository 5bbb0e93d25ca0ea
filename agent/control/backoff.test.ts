import { describe, expect, it } from "vitest";
import { backoffDelay } from "./backoff.ts";

describe("backoffDelay", () => {
  const policy = { initialMs: 100, maxMs: 10_000 };

  it("doubles the bound per attempt up to the cap", () => {
    const highest = (attempt: number) => backoffDelay(attempt, policy, () => 0.999999);
    expect([0, 1, 2, 3].map(highest)).toEqual([99, 199, 399, 799]);
    expect(highest(7)).toBe(9999);
    expect(highest(1000)).toBe(9999);
  });

  it("draws the whole range below the bound (full jitter)", () => {
    expect(backoffDelay(5, policy, () => 0)).toBe(0);
    expect(backoffDelay(5, policy, () => 0.5)).toBe(1600);
  });
});
