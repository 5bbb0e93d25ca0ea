import { describe, expect, it } from "vitest";
import { delayAtLeast } from "./fault-delay.ts";

describe("delayAtLeast", () => {
  it("never ends before its time, started at any point within a millisecond", async () => {
    // Start 200 delays at spread-out moments so some begin late in a loop millisecond, where a
    // plain timer ends early.
    const elapsed: number[] = [];
    await Promise.all(
      Array.from({ length: 200 }, async (_, i) => {
        const start = performance.now();
        while (performance.now() - start < (i % 10) / 10) {} // spread the starts over a millisecond
        const from = performance.now();
        await delayAtLeast(5);
        elapsed.push(performance.now() - from);
      }),
    );
    expect(elapsed).toHaveLength(200);
    expect(Math.min(...elapsed)).toBeGreaterThanOrEqual(5);
  });
});
