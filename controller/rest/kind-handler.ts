// The verbs of one kind over the store, generic over KINDS: a new kind needs no code here. This
// layer decides what is written (validation, URL/body agreement, server-owned fields, optimistic
// concurrency); it knows nothing of HTTP beyond throwing RestErrors.

import {
  apiVersionOf,
  type KindInfo,
  objectSchema,
  type PropagationStatus,
  type Resource,
} from "../../api/resources.ts";
import { vipPortConflicts } from "../config/analysis.ts";
import { type Admission, type ObjectKey, type Store, StoreConflictError, type WriteOptions } from "../store/store.ts";
import { RestError, type StatusCause } from "./errors.ts";
import { isPlainObject } from "./http-io.ts";
import { applyMergePatch } from "./merge-patch.ts";
import { causesOf, invalidMessage } from "./validation.ts";

/** The URL an operation is about. */
export interface Target {
  namespace?: string;
  name?: string;
}

export interface ResourceList {
  apiVersion: string;
  kind: string;
  metadata: { resourceVersion: string };
  items: Resource[];
}

/** Fills `status` on reads (the config stream knows how many agents applied each generation). */
export type StatusFor = (resource: Resource) => PropagationStatus | undefined;

/** A write, for a dry run's preview: the object as it would be stored (or as it is, when deleted). */
export interface ProposedChange {
  object: Resource;
  deleted: boolean;
}

/**
 * A dry run's status: the conditions the object would get and what the agents' tables would
 * gain and lose (controller/config/object-status.ts).
 */
export type Preview = (change: ProposedChange) => PropagationStatus;

export interface KindHandlerOptions {
  statusFor?: StatusFor;
  preview?: Preview;
}

/** A merge patch that does not name a resourceVersion is retried this often on a concurrent write. */
const PATCH_ATTEMPTS = 5;

type Operation = "create" | "update" | "patch";

export class KindHandler {
  readonly kind: KindInfo;
  readonly #store: Store;
  readonly #statusFor: StatusFor | undefined;
  readonly #preview: Preview | undefined;
  readonly #schema: ReturnType<typeof objectSchema>;
  readonly #admit: Admission | undefined;

  constructor(kind: KindInfo, store: Store, options: KindHandlerOptions = {}) {
    this.kind = kind;
    this.#store = store;
    this.#statusFor = options.statusFor;
    this.#preview = options.preview;
    this.#schema = objectSchema(kind);
    this.#admit = ADMISSION[kind.kind];
  }

  get apiVersion(): string {
    return apiVersionOf(this.kind);
  }

  get(target: Target): Resource {
    return this.present(this.#existing(target));
  }

  list(target: Target): ResourceList {
    return {
      apiVersion: this.apiVersion,
      kind: `${this.kind.kind}List`,
      metadata: { resourceVersion: this.#store.resourceVersion() },
      items: this.#store.list(this.kind.plural, target.namespace).map((o) => this.present(o)),
    };
  }

  async create(target: Target, body: Record<string, unknown>, dryRun = false): Promise<Resource> {
    const obj = this.#validate(target, body, "create");
    return this.#answer(await this.#store.create(obj, this.#writeOptions(dryRun)), dryRun);
  }

  /** PUT: a resourceVersion in the body is a precondition. */
  async replace(target: Target, body: Record<string, unknown>, dryRun = false): Promise<Resource> {
    const obj = this.#validate(target, body, "update");
    return this.#answer(
      await this.#store.update(obj, obj.metadata.resourceVersion, this.#writeOptions(dryRun)),
      dryRun,
    );
  }

  /**
   * PATCH (RFC 7386). A resourceVersion in the patch is a precondition; without one the patch
   * applies to whatever is current, re-applied if another write lands in between.
   */
  async patch(target: Target, patch: Record<string, unknown>, dryRun = false): Promise<Resource> {
    const patchMeta = patch["metadata"];
    const pinned = isPlainObject(patchMeta) && typeof patchMeta["resourceVersion"] === "string";
    for (let attempt = 1; ; attempt++) {
      const current = this.#existing(target);
      const obj = this.#validate(
        target,
        applyMergePatch(withoutStatus(current), patch) as Record<string, unknown>,
        "patch",
      );
      const expected = pinned ? obj.metadata.resourceVersion : current.metadata.resourceVersion;
      try {
        return this.#answer(await this.#store.update(obj, expected, this.#writeOptions(dryRun)), dryRun);
      } catch (err) {
        if (pinned || !(err instanceof StoreConflictError) || attempt >= PATCH_ATTEMPTS) throw err;
      }
    }
  }

  async delete(target: Target, dryRun = false): Promise<Resource> {
    const deleted = await this.#store.delete(this.#key(target), undefined, this.#writeOptions(dryRun));
    return dryRun ? { ...deleted, status: this.#previewOf({ object: deleted, deleted: true }) } : this.present(deleted);
  }

  /**
   * A dry run (`?dryRun=All`, as Kubernetes has it) goes through the store's every check —
   * preconditions, cross-object admission, the stored shape — so it gives a real write's verdicts;
   * it answers the object as it would be stored, with the status it would get and what the
   * agents' tables would gain and lose. Nothing is stored.
   */
  #writeOptions(dryRun: boolean): WriteOptions {
    if (dryRun && !this.#preview) throw new RestError("BadRequest", "this controller offers no dry run");
    return { ...(this.#admit ? { admit: this.#admit } : {}), dryRun };
  }

  #answer(stored: Resource, dryRun: boolean): Resource {
    return dryRun ? { ...stored, status: this.#previewOf({ object: stored, deleted: false }) } : this.present(stored);
  }

  #previewOf(change: ProposedChange): PropagationStatus {
    return this.#preview!(change);
  }

  /** What a client sees of a stored object: the object plus its live status. */
  present(obj: Resource): Resource {
    const status = this.#statusFor?.(obj);
    return status ? { ...obj, status } : obj;
  }

  #key(target: Target): ObjectKey {
    return { plural: this.kind.plural, namespace: target.namespace ?? "", name: target.name ?? "" };
  }

  #existing(target: Target): Resource {
    const obj = this.#store.get(this.#key(target));
    if (!obj) throw new RestError("NotFound", `${this.kind.plural} "${target.name}" not found`);
    return obj;
  }

  /**
   * The object to store, or 422 naming every bad field. `status` is the controller's, so a client's
   * is ignored (as Kubernetes does without a status subresource); identity comes from the URL.
   */
  #validate(target: Target, body: Record<string, unknown>, op: Operation): Resource {
    const input = withoutStatus(body);
    const causes: StatusCause[] = [];
    const meta = isPlainObject(input["metadata"]) ? { ...input["metadata"] } : undefined;
    if (meta) {
      input["metadata"] = meta;
      if (target.namespace !== undefined) {
        meta["namespace"] ??= target.namespace;
        if (meta["namespace"] !== target.namespace) causes.push(mismatch("namespace", target.namespace));
      } else if (meta["namespace"] !== undefined) {
        causes.push({
          field: "metadata.namespace",
          message: `${this.kind.kind} is cluster-scoped`,
          reason: "FieldValueForbidden",
        });
      }
      if (target.name !== undefined && meta["name"] !== undefined && meta["name"] !== target.name) {
        causes.push(mismatch("name", target.name));
      }
      if (op === "create" && meta["resourceVersion"] !== undefined) {
        causes.push({
          field: "metadata.resourceVersion",
          message: "must not be set when creating",
          reason: "FieldValueForbidden",
        });
      }
    }
    const parsed = this.#schema.safeParse(input);
    if (!parsed.success) causes.push(...causesOf(parsed.error.issues, input, this.#schema));
    if (causes.length > 0 || !parsed.success) {
      const name = typeof meta?.["name"] === "string" ? meta["name"] : target.name;
      throw new RestError("Invalid", invalidMessage(this.kind.kind, name, causes), {
        name,
        kind: this.kind.kind,
        causes,
      });
    }
    return parsed.data as Resource;
  }
}

/**
 * Cross-object checks that refuse a write (controller/config/analysis.ts), by kind. Run in the
 * store's write order, so two concurrent writes cannot both pass.
 */
const ADMISSION: Readonly<Record<string, Admission>> = {
  Service: (candidate, store) => {
    const conflicts = vipPortConflicts(candidate, store.list("services"));
    if (conflicts.length === 0) return;
    const name = `${candidate.metadata.namespace}/${candidate.metadata.name}`;
    const causes = conflicts.map((c) => ({
      field: `spec.ports[${c.portIndex}].port`,
      message: `VIP:port ${c.vipPort} is already Service ${c.holder}'s`,
      reason: "FieldValueDuplicate",
    }));
    throw new RestError(
      "Conflict",
      `Service ${name} conflicts: ${causes.map((c) => `${c.field}: ${c.message}`).join("; ")}`,
      {
        name: candidate.metadata.name,
        kind: "Service",
        causes,
      },
    );
  },
};

function mismatch(field: "name" | "namespace", expected: string): StatusCause {
  return {
    field: `metadata.${field}`,
    message: `does not match the ${field} in the URL (${JSON.stringify(expected)})`,
    reason: "FieldValueInvalid",
  };
}

function withoutStatus(obj: object): Record<string, unknown> {
  const { status: _ignored, ...rest } = obj as Record<string, unknown>;
  return rest;
}
