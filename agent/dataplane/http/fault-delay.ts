import { setTimeout as sleep } from "node:timers/promises";

/**
 * Waits at least `ms` milliseconds of real time: a fault's `fixedDelay` is a floor users test
 * timeouts against. A plain timer can end up to 1 ms early, because libuv counts its start from
 * the loop's clock truncated to whole milliseconds.
 */
export async function delayAtLeast(ms: number): Promise<void> {
  const until = performance.now() + ms;
  await sleep(ms);
  // An extra timer starts just after the loop clock's tick, where timers are nearly exact: one
  // round is the rule, three bound the loop.
  for (let round = 0; round < 3; round++) {
    const left = until - performance.now();
    if (left <= 0) return;
    await sleep(Math.ceil(left));
  }
}
