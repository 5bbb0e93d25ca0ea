// Status on Kubernetes objects: how many agents applied each route's and policy's current
// generation, written through the status subresource by the leader only.
// - TrafficPolicy (ours): observedGeneration, agentsApplied/agentsTotal, `applied: "N/M"` (the
//   APPLIED printer column), lastAppliedTime, conditions Accepted (with the cross-object checks of
//   controller/config/analysis.ts) and Applied (naming the agents that refused it).
// - HTTPRoute/GRPCRoute (Gateway API): one `status.parents` entry per parentRef under our
//   controllerName with conditions Accepted, ResolvedRefs and Applied; entries of other
//   controllers are kept as they are.
// A status is written only when it differs from what the object carries (transition times aside).

import { isDeepStrictEqual } from "node:util";
import type { Logger } from "pino";
import type { Condition, KindInfo, PropagationStatus } from "../../api/resources.ts";
import type { ObjectKey } from "../store/store.ts";
import type { KubeClient, KubeJson } from "./kube-client.ts";
import { collectionPath, type KubernetesSource } from "./kubernetes-source.ts";
import { isMeshParent, isMeshRoute, WATCHED_TRAFFIC_KINDS } from "./translate.ts";

export const CONTROLLER_NAME = "nodemesh.io/controller";

export interface StatusWriterOptions {
  client: KubeClient;
  source: KubernetesSource;
  propagation: (key: ObjectKey) => PropagationStatus | undefined;
  log: Logger;
  intervalMs?: number;
  now?: () => Date;
}

interface Applied {
  applied: number;
  total: number;
  lastAppliedTime?: string;
  refusal?: string;
  /** The cross-object checks' Accepted and ResolvedRefs (controller/config/analysis.ts). */
  checks?: Condition[];
  /** Agents that refused the object, and why. */
  rejections?: { node: string; reason: string }[];
}

type Json = Record<string, unknown>;

/** Accepted, ResolvedRefs and Applied, in that order. */
function conditions(generation: number, a: Applied, now: string): [Condition, Condition, Condition] {
  const checked = (type: string) => a.checks?.find((c) => c.type === type);
  const accepted: Condition = a.refusal
    ? { type: "Accepted", status: "False", reason: "Invalid", message: a.refusal.slice(0, 1000) }
    : (checked("Accepted") ?? { type: "Accepted", status: "True", reason: "Accepted", message: "valid" });
  const resolved: Condition = checked("ResolvedRefs") ?? {
    type: "ResolvedRefs",
    status: "True",
    reason: "ResolvedRefs",
    message: "",
  };
  const done = !a.refusal && a.total > 0 && a.applied === a.total;
  const rejected = a.rejections && a.rejections.length > 0;
  const applied: Condition = {
    type: "Applied",
    status: done ? "True" : "False",
    reason: a.refusal ? "Invalid" : rejected ? "Rejected" : a.total === 0 ? "NoAgents" : done ? "Applied" : "Pending",
    message:
      `${a.applied} of ${a.total} connected agents applied generation ${generation}` +
      (rejected ? `; refused by ${a.rejections!.map((r) => `${r.node}: ${r.reason}`).join("; ")}`.slice(0, 1000) : ""),
  };
  const stamp = (c: Condition): Condition => ({
    type: c.type,
    status: c.status,
    ...(c.reason !== undefined ? { reason: c.reason } : {}),
    ...(c.message !== undefined ? { message: c.message } : {}),
    observedGeneration: generation,
    lastTransitionTime: now,
  });
  return [stamp(accepted), stamp(resolved), stamp(applied)];
}

/** Conditions compared without their transition times; an unchanged condition keeps its old time. */
function withoutTimes(value: unknown): unknown {
  return JSON.parse(JSON.stringify(value ?? {}, (k, v) => (k === "lastTransitionTime" ? undefined : v)));
}

function keepTransitionTimes(next: Condition[], previous: unknown): Condition[] {
  const old = Array.isArray(previous) ? (previous as Condition[]) : [];
  return next.map((c) => {
    const before = old.find((o) => o.type === c.type);
    return before?.status === c.status && before.lastTransitionTime
      ? { ...c, lastTransitionTime: before.lastTransitionTime }
      : c;
  });
}

export class StatusWriter {
  readonly #o: StatusWriterOptions;
  #timer?: NodeJS.Timeout;
  #running = false;

  constructor(options: StatusWriterOptions) {
    this.#o = options;
  }

  start(): void {
    if (this.#timer) return;
    this.#timer = setInterval(() => void this.writeOnce(), this.#o.intervalMs ?? 2000);
    void this.writeOnce();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** One pass over every route and policy; returns how many statuses were written. */
  async writeOnce(): Promise<number> {
    if (this.#running) return 0;
    this.#running = true;
    let written = 0;
    try {
      for (const kind of WATCHED_TRAFFIC_KINDS)
        for (const obj of this.#o.source.kubernetesObjects(kind.plural))
          if (await this.#write(kind, obj).catch((err) => this.#failed(kind, obj, err))) written++;
    } finally {
      this.#running = false;
    }
    return written;
  }

  #failed(kind: KindInfo, obj: KubeJson, err: unknown): false {
    this.#o.log.warn(
      { object: `${kind.plural}/${obj.metadata?.namespace}/${obj.metadata?.name}`, err: (err as Error).message },
      "status write failed",
    );
    return false;
  }

  #applied(kind: KindInfo, namespace: string, name: string): Applied {
    const key = { plural: kind.plural, namespace, name };
    const refusal = this.#o.source.refusal(kind.plural, namespace, name);
    if (refusal) return { applied: 0, total: 0, refusal };
    const mirrored = this.#o.source.store.get(key);
    const p = this.#o.propagation(key);
    // Counts are about the generation the mirror holds now, not one a table carried before.
    const current = mirrored && p?.observedGeneration === mirrored.metadata.generation;
    return {
      applied: current ? (p?.agentsApplied ?? 0) : 0,
      total: p?.agentsTotal ?? 0,
      ...(current && p?.lastAppliedTime ? { lastAppliedTime: p.lastAppliedTime } : {}),
      ...(p?.conditions ? { checks: p.conditions } : {}),
      ...(current && p?.rejections ? { rejections: p.rejections } : {}),
    };
  }

  async #write(kind: KindInfo, obj: KubeJson): Promise<boolean> {
    if (kind.kind !== "TrafficPolicy" && !isMeshRoute(obj)) return false; // a gateway controller's route
    const namespace = obj.metadata?.namespace ?? "";
    const name = obj.metadata?.name ?? "";
    const generation = obj.metadata?.generation ?? 1;
    const a = this.#applied(kind, namespace, name);
    const now = (this.#o.now?.() ?? new Date()).toISOString();
    const previous = (obj as { status?: Json }).status ?? {};
    const status =
      kind.kind === "TrafficPolicy"
        ? policyStatus(generation, a, now, previous)
        : routeStatus(obj, generation, a, now, previous);
    if (isDeepStrictEqual(withoutTimes(status), withoutTimes(previous))) return false;
    const path = `${collectionPath(kind).replace(`/${kind.plural}`, "")}/namespaces/${namespace}/${kind.plural}/${name}/status`;
    await this.#o.client.mergePatch(path, { metadata: { resourceVersion: obj.metadata?.resourceVersion }, status });
    return true;
  }
}

function policyStatus(generation: number, a: Applied, now: string, previous: Json): Json {
  return {
    observedGeneration: generation,
    agentsApplied: a.applied,
    agentsTotal: a.total,
    applied: `${a.applied}/${a.total}`,
    ...(a.lastAppliedTime ? { lastAppliedTime: a.lastAppliedTime } : {}),
    conditions: keepTransitionTimes(
      conditions(generation, a, now).filter((c) => c.type !== "ResolvedRefs"),
      previous.conditions,
    ),
  };
}

function routeStatus(obj: KubeJson, generation: number, a: Applied, now: string, previous: Json): Json {
  const spec = (obj as { spec?: { parentRefs?: Json[] } }).spec;
  const previousParents = Array.isArray(previous.parents) ? (previous.parents as Json[]) : [];
  const others = previousParents.filter((p) => p.controllerName !== CONTROLLER_NAME);
  const ours = (spec?.parentRefs ?? []).filter(isMeshParent).map((parentRef) => {
    const before = previousParents.find(
      (p) => p.controllerName === CONTROLLER_NAME && isDeepStrictEqual(p.parentRef, parentRef),
    );
    return {
      parentRef,
      controllerName: CONTROLLER_NAME,
      conditions: keepTransitionTimes(conditions(generation, a, now), before?.conditions),
    };
  });
  return { parents: [...others, ...ours] };
}
