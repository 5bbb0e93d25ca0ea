// Messages between the control thread and the data-plane workers.

import type { EnrolledPod } from "../../api/enrollment.ts";
import type { WorkerIdentity } from "./mtls.ts";
import type { DataplaneSettings } from "./settings.ts";
import type { SharedBuffers } from "./shared-state.ts";
import type { SnapshotMessage } from "./snapshot.ts";

export interface WorkerInit {
  index: number;
  shared: SharedBuffers;
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
  | { type: "stop"; id: number };

export type FromWorker = { type: "ready" } | { type: "reply"; id: number; error?: string; value?: unknown };
