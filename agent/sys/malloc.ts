// glibc's allocator, where Node keeps the bytes of Buffers: how much it holds free, and giving
// that back to the kernel. Through koffi, as linux.ts does; on a libc without these calls (musl)
// `glibcHeap` is undefined and nothing is released.
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const koffi = require("koffi") as typeof import("koffi");

export interface FreeHeap {
  /** Bytes glibc holds free in its heaps (mallinfo2's fordblks), or undefined before glibc 2.33. */
  freeBytes(): number | undefined;
  /** Returns the free pages of every heap to the kernel (malloc_trim(0)). */
  release(): void;
}

function load(): FreeHeap | undefined {
  let libc: ReturnType<typeof koffi.load>;
  let trim: (pad: number) => number;
  try {
    libc = koffi.load("libc.so.6");
    trim = libc.func("int malloc_trim(size_t pad)");
  } catch {
    return undefined;
  }
  let info: (() => { fordblks: number | bigint }) | undefined;
  try {
    const fields = ["arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks"];
    const struct = koffi.struct("nodemesh_mallinfo2", {
      ...Object.fromEntries(fields.map((f) => [f, "size_t"])),
      keepcost: "size_t",
    });
    info = libc.func("mallinfo2", struct, []);
  } catch {
    info = undefined; // glibc before 2.33
  }
  return {
    freeBytes: () => (info ? Number(info().fordblks) : undefined),
    release: () => void trim(0),
  };
}

export const glibcHeap: FreeHeap | undefined = load();
