import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { AGENT_PROCESS } from "../../api/process-settings.ts";

const FIXTURE = fileURLToPath(new URL("./worker-heap.fixture.ts", import.meta.url));

function newSpaces(...args: string[]): { control: number; worker: number; collected: number; regrown: number } {
  const out = execFileSync(process.execPath, [...AGENT_PROCESS.nodeFlags, FIXTURE, ...args], { encoding: "utf8" });
  return JSON.parse(out.trim().split("\n").at(-1)!);
}

describe("the data-plane workers' heaps under the agent's node flags", () => {
  it("are sized by WORKER_HEAP_LIMITS, not by the control thread's semi-space flag", () => {
    // Without the reset the flag wins in the worker too: the defect this guards against.
    // (2 MB of new space on an idle machine; up to 4.5 MB was seen while the unit tests share the cores.)
    const flagged = newSpaces();
    expect(flagged.worker).toBeLessThan(8);
    const reset = newSpaces("reset");
    // 24 MB of young generation: two 8 MB semi-spaces of new space.
    expect(reset.worker).toBeGreaterThanOrEqual(12);
    // The control thread keeps its small semi-spaces.
    expect(reset.control).toBeLessThanOrEqual(4);
  });

  it("shrink no further than a worker starts with after a memory-reducing collection, and grow back", () => {
    // Without the floor a collection took a worker to 1 MB of new space and garbage alone grew it
    // back only to 4: a proxy's garbage dies young, so bulk TCP ran 8 % slower after it.
    const reset = newSpaces("reset");
    expect(reset.collected).toBeGreaterThanOrEqual(4);
    expect(reset.collected).toBeLessThan(reset.worker);
    expect(reset.regrown).toBeGreaterThanOrEqual(12);
  });
});
