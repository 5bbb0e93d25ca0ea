import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { AGENT_PROCESS } from "../../api/process-settings.ts";
import { type IdleCollection, IdleHeapCollector } from "./idle-heap.ts";

const MB = 2 ** 20;
const FIXTURE = fileURLToPath(new URL("./idle-heap.fixture.ts", import.meta.url));

/** A thread whose heap commits `committed` bytes and is `busy` of the time; a collection takes it to `live`. */
function threadOf(state: { committed: number; live: number; busy: number }) {
  const collected: IdleCollection[] = [];
  const collector = new IdleHeapCollector({
    collect: () => {
      state.committed = state.live;
    },
    committed: () => state.committed,
    utilization: () => state.busy,
    minGrowthBytes: 4 * MB,
    onCollect: (c) => collected.push(c),
  });
  return { collector, collected };
}

describe("the idle heap collector", () => {
  it("collects at the first quiet look, then only after the heap grew again", () => {
    const state = { committed: 30 * MB, live: 20 * MB, busy: 0.01 };
    const { collector, collected } = threadOf(state);
    expect(collector.check()).toBe(true);
    expect(collected).toEqual([{ committedBeforeMB: 30, committedAfterMB: 20, ms: expect.any(Number) }]);
    // Grown by less than the minimum since: not worth a collection.
    state.committed = 23 * MB;
    expect(collector.check()).toBe(false);
    // Grown enough, but during a burst: not yet.
    state.busy = 0.4;
    state.committed = 26 * MB;
    expect(collector.check()).toBe(false);
    state.busy = 0.01;
    state.committed = 26 * MB;
    expect(collector.check()).toBe(true);
    expect(state.committed).toBe(20 * MB);
    expect(collected).toHaveLength(2);
  });

  it("never collects while the thread is busy, however much its heap grew", () => {
    const state = { committed: 200 * MB, live: 20 * MB, busy: 0.05 };
    const { collector, collected } = threadOf(state);
    for (let i = 0; i < 5; i++) expect(collector.check()).toBe(false);
    expect(state.committed).toBe(200 * MB);
    state.busy = 0.02; // the burst is over
    expect(collector.check()).toBe(true);
    expect(collected[0]).toMatchObject({ committedBeforeMB: 200, committedAfterMB: 20 });
  });

  it("does nothing where node does not expose gc", () => {
    const collector = new IdleHeapCollector({ collect: undefined, committed: () => 100 * MB, utilization: () => 0 });
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
