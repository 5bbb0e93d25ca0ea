// How the agent's and the controller's Node processes are started. The Kubernetes install
// (deploy/kubernetes/base: each container's command and env), the demo, the tests
// (test/e2e/mesh.ts) and the benchmarks start them with these; kubernetes.test.ts checks the
// manifests against them. Figures: docs/benchmarks.md ("Memory: process settings").

export interface ProcessSettings {
  /** V8 flags, before the script on node's command line. */
  readonly nodeFlags: readonly string[];
  /** Added to the environment (glibc reads its tunables at process start). */
  readonly env: Readonly<Record<string, string>>;
}

/**
 * After 1000 agents synced 10,000 Services the controller's live memory was ~160 MB (heap
 * snapshot: 110 MB of JavaScript objects, 28 MB of Buffers, 23 MB of nghttp2 sessions) but its RSS
 * 440 MB (test/bench/control-plane.ts). Two things held the rest:
 * - glibc kept the Configs' freed buffers (grpc-js copies each ~150 kB message to frame it) in its
 *   heap, fragmented, because its mmap threshold rises to the largest buffer freed so far; a fixed
 *   128 kB threshold maps each large buffer on its own and returns it on free;
 * - V8 let the young generation grow to tens of MB, so the Buffers' wrappers (and the native
 *   memory behind them) lived on between scavenges; 4 MB semi-spaces collect them sooner.
 * Together: 245–335 MB after sync instead of 400–460, for a few tenths of a second more CPU in the sync.
 */
export const CONTROLLER_PROCESS: ProcessSettings = {
  // --expose-gc: gives back what a fleet's arrival grew of the heap once it is over (api/idle-heap.ts).
  nodeFlags: ["--max-semi-space-size=4", "--expose-gc"],
  env: { MALLOC_MMAP_THRESHOLD_: "131072" },
};

/**
 * The agent's main thread only controls (enrollment, configuration, admin; the data plane is in
 * worker threads, whose heaps are set in agent/control/workers.ts). Left to itself V8 grew its
 * young generation to 32 MB of garbage on an idle agent: 1 MB semi-spaces keep it at what it
 * holds (idle RSS 134 → 114 MB with one worker; part of that was the worker's, which took the flag
 * too until the twelfth session: V8's flags are the process's, so the worker pool clears this one
 * before the first worker starts, workers.ts letWorkersSizeTheirOwnHeaps).
 */
export const AGENT_PROCESS: ProcessSettings = {
  // --expose-gc: the control thread and the workers give back what a burst of enrollments grew of
  // their heaps once the burst is over (api/idle-heap.ts); the workers collect the read buffers
  // of what they forward young (agent/dataplane/read-buffers.ts).
  nodeFlags: ["--max-semi-space-size=1", "--expose-gc"],
  env: {},
};
