// What a client reads in an object's `status`: how far its generation propagated (propagation.ts),
// what the cross-object checks say of it (analysis.ts: Accepted, ResolvedRefs), and Applied, which
// names the agents that refused it. The analysis is redone only after a write.

import { KINDS, type PropagationStatus, pluralOf, type Resource } from "../../api/resources.ts";
import { TRAFFIC_KINDS } from "../../api/traffic.ts";
import type { ProposedChange } from "../rest/kind-handler.ts";
import type { ObjectKey, Store } from "../store/store.ts";
import { analyzeConfig, type ConfigAnalysis, type ObjectCondition } from "./analysis.ts";
import { resourceKey } from "./service-table.ts";

const TRAFFIC_PLURALS = KINDS.filter((k) => Object.hasOwn(TRAFFIC_KINDS, k.kind)).map((k) => k.plural);

/** The cross-object analysis of everything a store holds. */
export function analyzeStore(store: Pick<Store, "list">): ConfigAnalysis {
  return analyzeConfig({
    services: store.list("services"),
    traffic: TRAFFIC_PLURALS.flatMap((plural) => store.list(plural)),
  });
}

/** The Applied condition of a propagation status. */
export function appliedCondition(p: PropagationStatus): ObjectCondition {
  const applied = p.agentsApplied ?? 0;
  const total = p.agentsTotal ?? 0;
  if (p.rejections && p.rejections.length > 0) {
    return {
      type: "Applied",
      status: "False",
      reason: "Rejected",
      message: `${applied} of ${total} connected agents applied it; refused by ${p.rejections
        .map((r) => `${r.node}: ${r.reason}`)
        .join("; ")}`.slice(0, 2000),
    };
  }
  const done = total > 0 && applied === total;
  return {
    type: "Applied",
    status: done ? "True" : "False",
    reason: total === 0 ? "NoAgents" : done ? "Applied" : "Pending",
    message: `${applied} of ${total} connected agents applied generation ${p.observedGeneration ?? "?"}`,
  };
}

/** What the agents would get from a store: the connected agents and the table changes. */
export type TablePreview = (view: Pick<Store, "list">) => { agents: string[]; changes: string[] };

/** `store` as it would be after `change`: the object put in (or taken out), everything else as is. */
export function withChange(store: Pick<Store, "list">, change: ProposedChange): Pick<Store, "list"> {
  const { object, deleted } = change;
  const plural = pluralOf(object.kind);
  const same = (o: Resource) =>
    o.metadata.namespace === object.metadata.namespace && o.metadata.name === object.metadata.name;
  return {
    list(kind, namespace) {
      const listed = store.list(kind, namespace);
      if (kind !== plural || (namespace !== undefined && namespace !== object.metadata.namespace)) return listed;
      return [...listed.filter((o) => !same(o)), ...(deleted ? [] : [object])];
    },
  };
}

export class ObjectStatuses {
  readonly #store: Store;
  readonly #propagation: (key: ObjectKey) => PropagationStatus | undefined;
  readonly #tables: TablePreview | undefined;
  #analysis: { version: string; analysis: ConfigAnalysis } | undefined;

  constructor(store: Store, propagation: (key: ObjectKey) => PropagationStatus | undefined, tables?: TablePreview) {
    this.#store = store;
    this.#propagation = propagation;
    this.#tables = tables;
  }

  /**
   * A dry run's status: the conditions the object would have after the change (none once deleted)
   * and what each connected agent's table would gain and lose.
   */
  preview(change: ProposedChange): PropagationStatus {
    const view = withChange(this.#store, change);
    const plural = pluralOf(change.object.kind) ?? "";
    const { namespace, name, generation } = change.object.metadata;
    const conditions = change.deleted
      ? []
      : (analyzeStore(view).conditions.get(resourceKey(plural, namespace, name)) ?? []).map((c) => ({
          ...c,
          observedGeneration: generation,
        }));
    return { conditions, dryRun: this.#tables?.(view) ?? { agents: [], changes: [] } };
  }

  analysis(): ConfigAnalysis {
    const version = this.#store.resourceVersion();
    if (this.#analysis?.version !== version) this.#analysis = { version, analysis: analyzeStore(this.#store) };
    return this.#analysis.analysis;
  }

  /** status() of the stored object at `key`. */
  statusOfKey(key: ObjectKey): PropagationStatus | undefined {
    const obj = this.#store.get(key);
    return obj && this.status(obj);
  }

  /** Propagation, Accepted/ResolvedRefs and Applied for a stored object. */
  status(obj: Pick<Resource, "kind" | "metadata">): PropagationStatus | undefined {
    const plural = pluralOf(obj.kind);
    if (!plural) return undefined;
    const key = resourceKey(plural, obj.metadata.namespace, obj.metadata.name);
    const propagation = this.#propagation({ plural, namespace: obj.metadata.namespace, name: obj.metadata.name });
    const checks = this.analysis().conditions.get(key) ?? [];
    const conditions = [...checks, ...(propagation ? [appliedCondition(propagation)] : [])];
    if (!propagation && conditions.length === 0) return undefined;
    const generation = obj.metadata.generation;
    return {
      ...propagation,
      conditions: conditions.map((c) => ({ ...c, observedGeneration: generation })),
    };
  }
}
