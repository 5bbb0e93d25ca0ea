// What every connection handler of a data-plane worker can reach.

import type { Logger } from "pino";
import type { EnrolledPod } from "../../api/enrollment.ts";
import type { Netns } from "../sys/linux.ts";
import type { RoundRobin } from "./balancer.ts";
import type { DataplaneMetrics } from "./metrics.ts";
import type { Snapshot } from "./snapshot.ts";

/** An enrolled pod as a worker sees it: its namespace is held open for the pod's lifetime. */
export interface PodContext {
  readonly key: string; // "namespace/name"
  readonly pod: EnrolledPod;
  readonly netns: Netns;
}

export interface DataplaneContext {
  snapshot(): Snapshot;
  readonly balancer: RoundRobin;
  readonly metrics: DataplaneMetrics;
  readonly log: Logger;
  /** Budget for one upstream attempt: TCP connect plus, through the tunnel, its handshake. */
  readonly connectTimeoutMs: number;
}
