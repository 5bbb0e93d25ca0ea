// Collects the read buffers that forwarding leaves behind: pipes (pipe.ts) and HTTP bodies both
// ways (body.ts, respond.ts) count what they forward here. Every chunk a socket reads is a
// new ArrayBuffer outside V8's heap, held by a JavaScript object of about a hundred bytes. V8
// collects young objects when its young generation fills, which forwarding hardly does (its
// objects are small); it weighs the buffers' own memory only toward a full collection, once
// they pass V8's external-memory soft limit of 64 MB. So under bulk TCP an agent held 60–150 MB
// of dead read buffers at any moment, and ran full collections to free them. A young-generation
// collection after every FORWARDED_BYTES_PER_COLLECTION bytes forwarded frees them while they are
// few, and costs less than the full collections it replaces (docs/benchmarks.md, "Twentieth
// session"). Counted in step with the traffic, not looked for by a timer (tried in the fifteenth
// session: 5 % off bulk), it costs an idle thread nothing.
//
// It needs `gc`, which node exposes with --expose-gc (api/process-settings.ts, the agent's
// flags); without it this counts and does nothing else.

/** Bytes forwarded in this thread between two young-generation collections. */
export const FORWARDED_BYTES_PER_COLLECTION = 8 * 2 ** 20;

const gc = globalThis.gc;
const collectYoung = gc ? () => void gc({ type: "minor" }) : () => {};

let sinceCollection = 0;

/** One chunk forwarded: counted, and the young generation collected every FORWARDED_BYTES_PER_COLLECTION. */
export function countForwarded(chunk: Buffer): void {
  sinceCollection += chunk.length;
  if (sinceCollection < FORWARDED_BYTES_PER_COLLECTION) return;
  sinceCollection = 0;
  collectYoung();
}
