// Run by worker-heap.test.ts with the agent's node flags: prints the control thread's and a
// worker's new-space size (MB) after some garbage, once the pool's flag reset has run or not; and
// the worker's after a memory-reducing collection (api/idle-heap.ts), then after more garbage.
import { getHeapSpaceStatistics } from "node:v8";
import { isMainThread, parentPort, Worker } from "node:worker_threads";
import { letWorkersSizeTheirOwnHeaps, WORKER_HEAP_LIMITS } from "./workers.ts";

function newSpaceMbAfterGarbage(): number {
  let kept: object[] = [];
  for (let i = 0; i < 1_000_000; i++) {
    kept.push({ i, s: `x${i}` });
    if (kept.length > 50_000) kept = [];
  }
  return newSpaceMb();
}

function newSpaceMb(): number {
  const space = getHeapSpaceStatistics().find((s) => s.space_name === "new_space")!;
  return space.space_size / 2 ** 20;
}

if (isMainThread) {
  if (process.argv[2] === "reset") letWorkersSizeTheirOwnHeaps();
  const control = newSpaceMbAfterGarbage();
  const worker = new Worker(new URL(import.meta.url), { resourceLimits: WORKER_HEAP_LIMITS });
  worker.once("message", (sizes: { worker: number; collected: number; regrown: number }) => {
    console.log(JSON.stringify({ control, ...sizes }));
    void worker.terminate();
  });
} else {
  const worker = newSpaceMbAfterGarbage();
  globalThis.gc!({ type: "major", execution: "sync", flavor: "last-resort" });
  const collected = newSpaceMb();
  let regrown = 0;
  for (let i = 0; i < 5; i++) regrown = newSpaceMbAfterGarbage();
  parentPort!.postMessage({ worker, collected, regrown });
}
