// How the controller's Node process is started. The Kubernetes install (deploy/kubernetes/base/
// controller.yaml: its container's command and env), the demo, the tests (test/e2e/mesh.ts) and
// the benchmark start it with these; kubernetes.test.ts checks the manifest against them.
//
// Why: after 1000 agents synced 10,000 Services the controller's live memory was ~160 MB (heap
// snapshot: 110 MB of JavaScript objects, 28 MB of Buffers, 23 MB of nghttp2 sessions) but its RSS
// was 440 MB. Two things held the rest (test/bench/control-plane.ts, docs/benchmarks.md):
// - glibc kept the Configs' freed buffers (grpc-js copies each ~150 kB message to frame it) in its
//   heap, fragmented, because its mmap threshold rises to the largest buffer freed so far; a fixed
//   128 kB threshold maps each large buffer on its own and returns it on free;
// - V8 let the young generation grow to tens of MB, so the Buffers' wrappers (and the native
//   memory behind them) lived on between scavenges; 4 MB semi-spaces collect them sooner.
// Together: 250–330 MB after sync instead of 400–460, at a few tenths of a second more CPU in the sync.

/** V8 flags, before the script on node's command line. */
export const CONTROLLER_NODE_FLAGS: readonly string[] = ["--max-semi-space-size=4"];

/** Added to the controller's environment (read by glibc at process start). */
export const CONTROLLER_ENV: Readonly<Record<string, string>> = { MALLOC_MMAP_THRESHOLD_: "131072" };
