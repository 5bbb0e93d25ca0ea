// The store's bookkeeping, in memory: metadata stamping, optimistic concurrency, one write at a
// time, watch fan-out. Used as is by tests and simulations; FileStore extends it with `persist`
// (make a change durable before it becomes visible) and `load` (start from what is on disk).

import { randomUUID } from "node:crypto";
import { isDeepStrictEqual } from "node:util";
import { byCodeUnits } from "../../api/order.ts";
import { kindOf, objectSchema, type Resource } from "../../api/resources.ts";
import {
  type ObjectKey,
  type Store,
  StoreAlreadyExistsError,
  StoreConflictError,
  StoreNotFoundError,
  type WatchEvent,
  type WriteOptions,
} from "./store.ts";

/** A write was refused because the object does not satisfy its kind's schema (callers validate first). */
export class StoreInvalidObjectError extends Error {}
/** The store cannot take writes: it is closed, or a write failed half-way and memory may differ from disk. */
export class StoreUnavailableError extends Error {}

export function keyOf(obj: Resource): ObjectKey {
  const info = kindOf(obj);
  if (!info) throw new StoreInvalidObjectError(`unknown kind ${unknownKind(obj)}`);
  // Cluster-scoped kinds have no namespace; their key uses "".
  return { plural: info.plural, namespace: obj.metadata.namespace ?? "", name: obj.metadata.name };
}

/**
 * Why `obj` cannot be a stored object, or undefined if it can: it must pass its kind's schema and
 * carry every server-assigned field. The file store applies the same test when it loads.
 */
export function storedObjectProblem(obj: unknown): string | undefined {
  const info = kindOf((obj ?? {}) as Resource);
  if (!info) return `unknown kind ${unknownKind(obj as Resource)}`;
  const parsed = objectSchema(info).safeParse(obj);
  if (!parsed.success) {
    return parsed.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`).join("; ");
  }
  const m = parsed.data.metadata;
  const missing = (["uid", "resourceVersion", "generation", "creationTimestamp"] as const).filter(
    (f) => m[f] === undefined,
  );
  if (missing.length > 0) return `metadata lacks ${missing.join(", ")}`;
  if (info.namespaced !== (m.namespace !== undefined)) {
    return info.namespaced ? "metadata lacks namespace" : "metadata.namespace is set on a cluster-scoped kind";
  }
  return undefined;
}

function unknownKind(obj: Resource | undefined): string {
  return `${JSON.stringify(obj?.kind)} in ${JSON.stringify(obj?.apiVersion)}`;
}

function mapKey(key: ObjectKey): string {
  return `${key.namespace}/${key.name}`;
}

/** Stored objects are shared with every reader, so they are frozen rather than copied per read. */
function deepFreeze<T>(value: T): T {
  if (typeof value === "object" && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}

export class MemoryStore implements Store {
  /** plural → "namespace/name" → object. */
  readonly #objects = new Map<string, Map<string, Resource>>();
  readonly #listeners = new Set<(event: WatchEvent) => void>();
  #resourceVersion = 0;
  /** Tail of the write queue: writes run one at a time, in call order. */
  #queue: Promise<unknown> = Promise.resolve();
  #unavailable: string | undefined;

  async open(): Promise<void> {}

  async close(): Promise<void> {
    this.#unavailable ??= "the store is closed";
    await this.#queue.catch(() => {});
  }

  get(key: ObjectKey): Resource | undefined {
    return this.#objects.get(key.plural)?.get(mapKey(key));
  }

  list(plural: string, namespace?: string): Resource[] {
    const all = [...(this.#objects.get(plural)?.values() ?? [])];
    const selected = namespace === undefined ? all : all.filter((o) => o.metadata.namespace === namespace);
    return selected.sort(
      (a, b) =>
        byCodeUnits(a.metadata.namespace, b.metadata.namespace) || byCodeUnits(a.metadata.name, b.metadata.name),
    );
  }

  resourceVersion(): string {
    return String(this.#resourceVersion);
  }

  create(obj: Resource, options: WriteOptions = {}): Promise<Resource> {
    return this.#write(options, () => {
      const key = keyOf(obj);
      if (this.get(key)) throw new StoreAlreadyExistsError(`${obj.kind} ${mapKey(key)} already exists`);
      options.admit?.(obj, this);
      const metadata = {
        ...obj.metadata,
        uid: randomUUID(),
        generation: 1,
        creationTimestamp: new Date().toISOString(),
      };
      return { type: "ADDED", object: { ...obj, metadata } };
    });
  }

  update(obj: Resource, expectedResourceVersion?: string, options: WriteOptions = {}): Promise<Resource> {
    return this.#write(options, () => {
      const key = keyOf(obj);
      const current = this.#existing(key, obj.kind, expectedResourceVersion);
      options.admit?.(obj, this);
      const specChanged = !isDeepStrictEqual(current.spec, obj.spec);
      // Identity fields are the server's: whatever the caller sent, they carry over.
      const metadata = {
        ...obj.metadata,
        uid: current.metadata.uid,
        creationTimestamp: current.metadata.creationTimestamp,
        generation: current.metadata.generation + (specChanged ? 1 : 0),
      };
      return { type: "MODIFIED", object: { ...obj, metadata } };
    });
  }

  delete(key: ObjectKey, expectedResourceVersion?: string, options: WriteOptions = {}): Promise<Resource> {
    return this.#write(options, () => {
      const current = this.#existing(key, key.plural, expectedResourceVersion);
      return { type: "DELETED", object: current };
    });
  }

  watch(listener: (event: WatchEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Makes a change durable before it becomes visible. Runs one at a time. */
  protected async persist(_event: WatchEvent): Promise<void> {}

  /** Starts from objects loaded elsewhere; `resourceVersion` is the highest ever assigned. */
  protected load(objects: Resource[], resourceVersion: number): void {
    for (const obj of objects) this.#apply({ type: "ADDED", object: deepFreeze(obj) });
    this.#resourceVersion = resourceVersion;
  }

  #existing(key: ObjectKey, what: string, expectedResourceVersion: string | undefined): Resource {
    const current = this.get(key);
    if (!current) throw new StoreNotFoundError(`${what} ${mapKey(key)} not found`);
    if (expectedResourceVersion !== undefined && expectedResourceVersion !== current.metadata.resourceVersion) {
      throw new StoreConflictError(
        `${current.kind} ${mapKey(key)}: resourceVersion ${expectedResourceVersion} is stale (current ${current.metadata.resourceVersion})`,
      );
    }
    return current;
  }

  /**
   * Queues one write: `decide` runs once the previous write finished (so preconditions see the
   * latest state) and returns the change; the change is persisted, then applied and announced.
   */
  #write(options: WriteOptions, decide: () => WatchEvent): Promise<Resource> {
    const run = async (): Promise<Resource> => {
      if (this.#unavailable) throw new StoreUnavailableError(this.#unavailable);
      const change = decide();
      const resourceVersion = String(this.#resourceVersion + 1);
      const object = deepFreeze({ ...change.object, metadata: { ...change.object.metadata, resourceVersion } });
      if (change.type !== "DELETED") {
        const problem = storedObjectProblem(object);
        if (problem) throw new StoreInvalidObjectError(`refusing to store an invalid ${object.kind}: ${problem}`);
      }
      if (options.dryRun) {
        // Nothing was assigned: the version is the current one (a delete answers the object as it is).
        return change.type === "DELETED"
          ? change.object
          : { ...object, metadata: { ...object.metadata, resourceVersion: "" } };
      }
      const event = { type: change.type, object };
      try {
        await this.persist(event);
      } catch (err) {
        // The disk may hold the change or not: refuse further writes until a restart reloads it.
        this.#unavailable = `a write failed, restart to reload the store: ${(err as Error).message}`;
        throw err;
      }
      this.#resourceVersion += 1;
      this.#apply(event);
      this.#announce(event);
      return object;
    };
    const result = this.#queue.then(run);
    this.#queue = result.catch(() => {});
    return result;
  }

  #apply(event: WatchEvent): void {
    const key = keyOf(event.object);
    const objects = this.#objects.get(key.plural) ?? new Map<string, Resource>();
    this.#objects.set(key.plural, objects);
    if (event.type === "DELETED") objects.delete(mapKey(key));
    else objects.set(mapKey(key), event.object);
  }

  #announce(event: WatchEvent): void {
    for (const listener of this.#listeners) {
      try {
        listener(event);
      } catch (err) {
        // One broken watcher must not fail a write that is already durable, nor starve the others.
        process.emitWarning(`store watcher failed: ${(err as Error).message}`);
      }
    }
  }
}
