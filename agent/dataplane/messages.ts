// Messages between the control thread and the data-plane workers.

import type { EnrolledPod } from "../../api/enrollment.ts";
import type { WorkerIdentity } from "./mtls.ts";
import type { DataplaneSettings } from "./settings.ts";
import type { SharedBuffers } from "./shared-state.ts";
import type { SnapshotMessage } from "./snapshot.ts";

export interface WorkerInit {
  index: number;
  shared: SharedBuffers;
  /**
   * One BigInt64 per worker: the time (ms since epoch) its event loop last ran its heartbeat. The
   * control thread reads it without asking, so a worker stuck in a loop is seen as stuck.
   */
  heartbeats: SharedArrayBuffer;
  settings: DataplaneSettings;
  logLevel: string;
}

export type ToWorker =
  | { type: "snapshot"; snapshot: SnapshotMessage }
  | { type: "identities"; identities: WorkerIdentity[]; pending: string[] }
  | { type: "add-pod"; id: number; pod: EnrolledPod }
  | { type: "remove-pod"; id: number; key: string }
  | { type: "metrics"; id: number }
  | { type: "edges"; id: number }
  | { type: "health"; id: number }
  | { type: "listener-fds"; id: number }
  | { type: "outlast-streams"; id: number; deadline: number }
  | { type: "stop"; id: number; drainMs?: number; noSuccessor?: boolean }
  /** The control thread's answer to an "export": the collector's, or why the batch is dropped. */
  | { type: "exported"; id: number; status?: number; body?: Uint8Array; error?: string };

export type FromWorker =
  | { type: "ready" }
  | { type: "reply"; id: number; error?: string; value?: unknown }
  /** An encoded span batch for the control thread to post to the collector (otlp-exporter.ts). */
  | { type: "export"; id: number; body: Uint8Array };

/** A worker's answer to "health": the enrolled pods whose listeners it holds, and those it lost. */
export interface WorkerHealth {
  pods: string[];
  /** "namespace/name:port" of each listener whose socket is no longer listening in the kernel. */
  lostListeners: string[];
}

/** How often a worker writes its heartbeat. */
export const HEARTBEAT_INTERVAL_MS = 1000;
