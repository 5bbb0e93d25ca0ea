// The controller's store: where resources live. The embedded default is the file store; a
// Kubernetes-backed store (CRDs) can replace it behind this interface.

import type { Resource } from "../../api/resources.ts";

export interface ObjectKey {
  /** The kind's plural, e.g. "services" (unique across API groups, see KINDS). */
  plural: string;
  namespace: string;
  name: string;
}

export type WatchEventType = "ADDED" | "MODIFIED" | "DELETED";
export interface WatchEvent {
  type: WatchEventType;
  object: Resource;
}

export class StoreConflictError extends Error {}
export class StoreNotFoundError extends Error {}
export class StoreAlreadyExistsError extends Error {}
/** The objects come from elsewhere (Kubernetes) and are changed there, not through this store. */
export class StoreReadOnlyError extends Error {}

/**
 * A check of a write against everything else stored (a Service's VIP:port another holds). It runs
 * in the store's write order, so what it reads is what the write lands on; throwing refuses the
 * write (the error reaches the caller as thrown).
 */
export type Admission = (candidate: Resource, store: Pick<Store, "get" | "list">) => void;

export interface WriteOptions {
  admit?: Admission;
  /**
   * Every check of the write (preconditions, admission, the stored shape) and the object it would
   * store, resourceVersion aside; nothing is stored or announced (Kubernetes' dryRun=All).
   */
  dryRun?: boolean;
}

export interface Store {
  /** Loads the store; a corrupt store throws with a clear message, never starts empty. */
  open(): Promise<void>;
  close(): Promise<void>;
  get(key: ObjectKey): Resource | undefined;
  /** Namespace undefined = all namespaces. Sorted by namespace, then name. */
  list(plural: string, namespace?: string): Resource[];
  /** The store's current resourceVersion (a decimal string that only grows). */
  resourceVersion(): string;
  /**
   * Writes are durable when the promise resolves. `create` fails if the object exists; `update`
   * fails with StoreConflictError when `expectedResourceVersion` is given and is not current;
   * each assigns the next resourceVersion.
   */
  create(obj: Resource, options?: WriteOptions): Promise<Resource>;
  update(obj: Resource, expectedResourceVersion?: string, options?: WriteOptions): Promise<Resource>;
  delete(key: ObjectKey, expectedResourceVersion?: string, options?: WriteOptions): Promise<Resource>;
  /** Every change after this call, in order. Returns the unsubscribe function. */
  watch(listener: (event: WatchEvent) => void): () => void;
}
