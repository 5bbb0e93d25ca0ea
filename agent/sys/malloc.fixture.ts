// Run by malloc.test.ts with --expose-gc: frees 200 MB of Buffers below one that stays, then
// prints the resident growth kept after collection and what is left after glibcHeap.release().
import { glibcHeap } from "./malloc.ts";

const gc = (globalThis as { gc?: () => void }).gc!;
const base = process.memoryUsage.rss();
let chunks: Buffer[] = [];
// 64 kB each: below glibc's mmap threshold, so in the heap, as the chunks a socket read fills.
for (let i = 0; i < 3200; i++) chunks.push(Buffer.alloc(64 * 1024, 1));
// Allocated after them and kept: glibc cannot shrink its heap's top past it on its own.
const pinned = Buffer.alloc(1024, 2);
chunks = [];
gc();
await new Promise((resolve) => setTimeout(resolve, 50));
gc();
const kept = process.memoryUsage.rss() - base;
const free = glibcHeap?.freeBytes();
glibcHeap?.release();
const left = process.memoryUsage.rss() - base;
console.log(JSON.stringify({ supported: glibcHeap !== undefined, kept, free, left, pinned: pinned.length }));
