import { describe, expect, it } from "vitest";
import { Registry } from "../../api/prom.ts";
import { MemoryReleaser } from "./memory-release.ts";

const MB = 2 ** 20;

/** A heap holding `free` bytes free, whose release takes `rss` down by that much. */
function heapOf(state: { free: number | undefined; rss: number }) {
  return {
    heap: {
      freeBytes: () => state.free,
      release: () => {
        state.rss -= state.free ?? 4 * MB;
        state.free = 0;
      },
    },
    rss: () => state.rss,
  };
}

describe("the agent's memory release", () => {
  it("releases only when enough is free, and counts what the resident size lost", async () => {
    const state = { free: (8 * MB) as number | undefined, rss: 300 * MB };
    const releaser = new MemoryReleaser({ ...heapOf(state), minFreeBytes: 16 * MB });
    const registry = new Registry();
    releaser.registerMetrics(registry);
    expect(releaser.releaseNow()).toBe(0);
    expect(state.rss).toBe(300 * MB);
    state.free = 70 * MB;
    expect(releaser.releaseNow()).toBe(70 * MB);
    expect(state.rss).toBe(230 * MB);
    const metric = (await registry.getMetricsAsJSON()).find(
      (m) => m.name === "nodemesh_agent_memory_released_bytes_total",
    );
    expect(metric?.values[0]?.value).toBe(70 * MB);
  });

  it("releases every time where glibc cannot say how much is free (before 2.33)", () => {
    const state = { free: undefined as number | undefined, rss: 100 * MB };
    const releaser = new MemoryReleaser(heapOf(state));
    expect(releaser.releaseNow()).toBe(4 * MB);
  });

  it("does nothing, and starts no timer, without glibc's calls", () => {
    const releaser = new MemoryReleaser({ heap: undefined });
    releaser.start();
    expect(releaser.releaseNow()).toBe(0);
    releaser.stop();
  });

  it("releases on its interval once started, until stopped", async () => {
    const state = { free: (32 * MB) as number | undefined, rss: 200 * MB };
    const releaser = new MemoryReleaser({ ...heapOf(state), intervalMs: 20 });
    releaser.start();
    for (let i = 0; i < 50 && state.rss === 200 * MB; i++) await new Promise((r) => setTimeout(r, 10));
    releaser.stop();
    expect(state.rss).toBe(168 * MB);
    state.free = 32 * MB;
    await new Promise((r) => setTimeout(r, 60));
    expect(state.rss).toBe(168 * MB);
  });
});
