// Waiting for the mesh to converge: the end-to-end tests poll a check until it yields a value.
import { vi } from "vitest";

/** Polls `check` every 100 ms until it returns a value; fails after `ms` naming `what`. */
export function eventually<T>(
  what: string,
  ms: number,
  check: () => Promise<T | undefined> | T | undefined,
): Promise<T> {
  return vi.waitFor(
    async () => {
      const value = await check();
      if (value === undefined) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
      return value;
    },
    { timeout: ms, interval: 100 },
  );
}
