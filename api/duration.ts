// Gateway API durations ("1h", "30s", "500ms", "1m30s") in milliseconds. Apart from the schemas
// (traffic.ts) so that the agent's data-plane threads can use it without loading zod.

const UNIT_MS: Record<string, number> = { h: 3_600_000, m: 60_000, s: 1000, ms: 1 };

/** The milliseconds of a duration already validated by `Duration` (api/traffic.ts). */
export function durationMs(duration: string): number {
  let total = 0;
  for (const m of duration.matchAll(/([0-9]+)(ms|h|m|s)/g)) total += Number(m[1]) * UNIT_MS[m[2]!]!;
  return total;
}
