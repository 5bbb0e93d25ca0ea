import { describe, expect, it } from "vitest";
import { respawnDelayMs } from "./workers.ts";

describe("respawnDelayMs", () => {
  it("replaces a failed worker at once, then waits twice as long after each failure in a row, up to 30 s", () => {
    expect([1, 2, 3, 4, 5, 6, 7, 8, 100].map(respawnDelayMs)).toEqual([
      0, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000,
    ]);
  });
});
