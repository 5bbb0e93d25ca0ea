import { describe, expect, it } from "vitest";
import { busyEnoughToGrow, GROW_WHEN_BUSY, respawnDelayMs } from "./workers.ts";

describe("respawnDelayMs", () => {
  it("replaces a failed worker at once, then waits twice as long after each failure in a row, up to 30 s", () => {
    expect([1, 2, 3, 4, 5, 6, 7, 8, 100].map(respawnDelayMs)).toEqual([
      0, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000,
    ]);
  });
});

describe("busyEnoughToGrow", () => {
  const busy = GROW_WHEN_BUSY.utilization + 0.1;
  const calm = GROW_WHEN_BUSY.utilization - 0.1;
  it("grows only after enough busy samples in a row", () => {
    expect(GROW_WHEN_BUSY.samples).toBe(2);
    expect(busyEnoughToGrow([])).toBe(false);
    expect(busyEnoughToGrow([busy])).toBe(false);
    expect(busyEnoughToGrow([busy, busy])).toBe(true);
    expect(busyEnoughToGrow([calm, busy, busy])).toBe(true);
  });

  it("does not grow on a single spike, or at exactly the threshold", () => {
    expect(busyEnoughToGrow([busy, calm])).toBe(false);
    expect(busyEnoughToGrow([calm, busy])).toBe(false);
    expect(busyEnoughToGrow([GROW_WHEN_BUSY.utilization, GROW_WHEN_BUSY.utilization])).toBe(false);
  });
});
