import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { type IdleCollection, IdleHeapCollector, type IdleHeapOptions } from "./idle-heap.ts";
import { AGENT_PROCESS } from "./process-settings.ts";

const MB = 2 ** 20;
const FIXTURE = fileURLToPath(new URL("./idle-heap.fixture.ts", import.meta.url));

/**
 * A thread whose heap commits `committed` bytes and is `busy` of the time, on a clock at `now` ms;
 * a collection takes its heap to `live`. Bursts are over 3 s after the last arm().
 */
function threadOf(
  state: { committed: number; live: number; busy: number; now: number },
  options: Pick<IdleHeapOptions, "quietUtilization" | "armWhenBusy"> = {},
) {
  const collected: IdleCollection[] = [];
  const collector = new IdleHeapCollector({
    collect: () => {
      state.committed = state.live;
    },
    committed: () => state.committed,
    utilization: () => state.busy,
    now: () => state.now,
    burstOverMs: 3_000,
    minGrowthBytes: 4 * MB,
    ...options,
    onCollect: (c) => collected.push(c),
  });
  return { collector, collected };
}

describe("the idle heap collector", () => {
  it("collects once a burst is over and the thread quiet, then not until the next burst", () => {
    const state = { committed: 30 * MB, live: 20 * MB, busy: 0.01, now: 0 };
    const { collector, collected } = threadOf(state);
    collector.arm(); // start-up
    state.now = 2_000;
    expect(collector.check()).toBe(false); // armed 2 s ago: the burst may go on
    state.now = 3_000;
    expect(collector.check()).toBe(true);
    expect(collected).toEqual([{ committedBeforeMB: 30, committedAfterMB: 20, ms: expect.any(Number) }]);
    // Traffic grows the heap, but nothing armed the collector: it stays out of the way.
    state.committed = 60 * MB;
    state.now = 10_000;
    expect(collector.check()).toBe(false);
    expect(state.committed).toBe(60 * MB);
    // Enrollments arm it again; each one pushes the end of the burst further.
    collector.arm();
    state.now = 12_000;
    collector.arm();
    state.now = 14_000;
    expect(collector.check()).toBe(false);
    state.now = 15_000;
    expect(collector.check()).toBe(true);
    expect(state.committed).toBe(20 * MB);
    expect(collected).toHaveLength(2);
  });

  it("waits for the thread to be quiet after a burst, however much its heap grew", () => {
    const state = { committed: 200 * MB, live: 20 * MB, busy: 0.05, now: 0 };
    const { collector, collected } = threadOf(state);
    collector.arm();
    for (let i = 0; i < 5; i++) {
      state.now += 3_000;
      expect(collector.check()).toBe(false);
    }
    expect(state.committed).toBe(200 * MB);
    state.busy = 0.02;
    expect(collector.check()).toBe(true);
    expect(collected[0]).toMatchObject({ committedBeforeMB: 200, committedAfterMB: 20 });
  });

  it("takes a thread busier than the default as quiet when told (the controller under its agents' reports)", () => {
    const state = { committed: 400 * MB, live: 220 * MB, busy: 0.3, now: 0 };
    const { collector } = threadOf(state, { quietUtilization: 0.5 });
    collector.arm();
    state.now = 3_000;
    state.busy = 0.6;
    expect(collector.check()).toBe(false);
    state.busy = 0.3;
    expect(collector.check()).toBe(true);
    expect(state.committed).toBe(220 * MB);
  });

  it("skips a burst that grew the heap by less than the minimum, and does not hold on to it", () => {
    const state = { committed: 30 * MB, live: 20 * MB, busy: 0.01, now: 0 };
    const { collector } = threadOf(state);
    collector.arm();
    state.now = 3_000;
    expect(collector.check()).toBe(true); // baseline: 20 MB
    collector.arm();
    state.committed = 23 * MB; // one enrollment: +3 MB
    state.now = 6_000;
    expect(collector.check()).toBe(false);
    // Later growth (traffic) does not make that burst's look collect.
    state.committed = 40 * MB;
    state.now = 9_000;
    expect(collector.check()).toBe(false);
    expect(state.committed).toBe(40 * MB);
  });

  it("with armWhenBusy, load arms it: collects once the load is over, never under it", () => {
    const state = { committed: 16 * MB, live: 16 * MB, busy: 0.01, now: 0 };
    const { collector, collected } = threadOf(state, { armWhenBusy: 0.25 });
    // A light trickle (a tenth busy) is not load: the heap it grows stays, as before.
    state.busy = 0.1;
    state.committed = 24 * MB;
    for (let i = 0; i < 10; i++, state.now += 1_000) expect(collector.check()).toBe(false);
    // A saturation grows the young generation; every look under it arms the collector again.
    state.busy = 0.9;
    state.committed = 56 * MB;
    for (let i = 0; i < 10; i++, state.now += 1_000) expect(collector.check()).toBe(false);
    // The load ends: quiet looks within the burst's tail wait, then one collection gives it back.
    state.busy = 0.01;
    for (let i = 0; i < 2; i++, state.now += 1_000) expect(collector.check()).toBe(false);
    state.now += 1_000;
    expect(collector.check()).toBe(true);
    expect(collected).toEqual([{ committedBeforeMB: 56, committedAfterMB: 16, ms: expect.any(Number) }]);
    // Quiet from then on: nothing more.
    for (let i = 0; i < 10; i++, state.now += 1_000) expect(collector.check()).toBe(false);
    expect(collected).toHaveLength(1);
  });

  it("does nothing where node does not expose gc", () => {
    const collector = new IdleHeapCollector({ collect: undefined, committed: () => 100 * MB, utilization: () => 0 });
    collector.arm();
    expect(collector.enabled).toBe(false);
    expect(collector.check()).toBe(false);
  });

  it("gives back what a burst grew of a thread's heap, under the agent's node flags", () => {
    const run = (flags: readonly string[]): { enabled: boolean; collections: IdleCollection[] } =>
      JSON.parse(
        execFileSync(process.execPath, [...flags, FIXTURE], { encoding: "utf8" })
          .trim()
          .split("\n")
          .at(-1)!,
      );
    const { enabled, collections } = run(AGENT_PROCESS.nodeFlags);
    expect(enabled).toBe(true);
    expect(collections).toHaveLength(2);
    // The burst held ~40 MB at once: most of what it committed is returned.
    const afterBurst = collections[1]!;
    expect(afterBurst.committedBeforeMB - afterBurst.committedAfterMB).toBeGreaterThan(20);
    // Without --expose-gc the collector stays off.
    expect(run(AGENT_PROCESS.nodeFlags.filter((f) => f !== "--expose-gc"))).toEqual({
      enabled: false,
      collections: [],
    });
  });
});
