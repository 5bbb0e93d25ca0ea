// Run by idle-heap.test.ts with the agent's node flags: an IdleHeapCollector runs (looking every
// 100 ms, a burst over 200 ms after it armed it); start-up and then a burst arm it, and the thread,
// quiet again, reports the collections it saw.
import { type IdleCollection, IdleHeapCollector } from "./idle-heap.ts";

const collections: IdleCollection[] = [];
const collector = new IdleHeapCollector({
  intervalMs: 100,
  burstOverMs: 200,
  onCollect: (c) => collections.push(c),
});
collector.start();
const waitFor = async (n: number) => {
  for (let waited = 0; collections.length < n && waited < 3_000; waited += 50) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
};
collector.arm(); // start-up
if (collector.enabled) await waitFor(1);
// A burst: about 40 MB of objects alive at once, then dropped.
let kept: { i: number; s: string }[][] | undefined = [];
for (let i = 0; i < 400; i++) kept.push(Array.from({ length: 1_000 }, (_, j) => ({ i: j, s: `burst ${i} ${j}` })));
kept = undefined;
collector.arm();
if (collector.enabled) await waitFor(2);
else await new Promise((resolve) => setTimeout(resolve, 500));
collector.stop();
console.log(JSON.stringify({ enabled: collector.enabled, collections }));
