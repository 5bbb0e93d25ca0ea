// What every connection handler of a data-plane worker can reach.

import type { Logger } from "pino";
import type { EnrolledPod } from "../../api/enrollment.ts";
import type { Netns } from "../sys/linux.ts";
import type { AccessLog } from "./access-log.ts";
import type { EndpointPicker } from "./balancer.ts";
import type { EdgeAggregator } from "./edges.ts";
import type { HttpFrontend } from "./http/frontend.ts";
import type { DataplaneMetrics } from "./metrics.ts";
import type { SharedState } from "./shared-state.ts";
import type { Snapshot } from "./snapshot.ts";

/** An enrolled pod as a worker sees it: its namespace is held open for the pod's lifetime. */
export interface PodContext {
  readonly key: string; // "namespace/name"
  readonly pod: EnrolledPod;
  readonly netns: Netns;
  /** The pod's workload (its `app` label, else its name) and namespace: metrics, per-source limits. */
  readonly workload: { readonly name: string; readonly namespace: string };
}

export interface DataplaneContext {
  snapshot(): Snapshot;
  readonly shared: SharedState;
  readonly picker: EndpointPicker;
  readonly frontend: HttpFrontend;
  readonly metrics: DataplaneMetrics;
  readonly edges: EdgeAggregator;
  readonly accessLog: AccessLog;
  readonly log: Logger;
  /** Budget for one upstream attempt: TCP connect plus, through the tunnel, its handshake. */
  readonly connectTimeoutMs: number;
  /** How long an undeclared port waits for the client's first bytes before it is opaque TCP. */
  readonly detectTimeoutMs: number;
}
