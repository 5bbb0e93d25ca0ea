// Cross-object validation: what no single object's schema can see. Pure: stored objects in,
// verdicts out, for three users —
// - the REST API's admission (a Service whose VIP:port another Service holds is refused, 409),
// - the table builder (where a write could not be refused, as in Kubernetes, the later of two such
//   Services is left out of the agents' tables instead of breaking them),
// - every object's status: Accepted (and ResolvedRefs for routes) as the Gateway API words them.
//
// The rules, and which object wins where two meet:
// - Service: two Services on one VIP:port → the older (creationTimestamp, then namespace/name)
//   keeps it; the other is Conflicted and left out.
// - HTTPRoute/GRPCRoute: a parentRef naming no Service (or a port it lacks) → NoMatchingParent
//   (Accepted False when no parent matches); a backendRef or mirror naming no Service →
//   ResolvedRefs False, BackendNotFound (its share of requests gets a 500).
// - TrafficPolicy: a target that does not exist → TargetNotFound; two policies on one Service →
//   the first by namespace and name applies there (as the agents pick it), the other is Conflicted.
// - AuthorizationPolicy, RequestAuthentication: a target that does not exist → TargetNotFound.
//   Several on one workload are not a conflict: they combine (DENY first, then ALLOW; every JWT rule).
// - PeerAuthentication: a target that does not exist → TargetNotFound; two at one level (the same
//   Service, or namespace-wide in one namespace) that both set a mode → the first by name applies.

import { type Condition, pluralOf, type Resource, type ServiceSpec } from "../../api/resources.ts";
import { resourceKey } from "./service-table.ts";

export interface VipPortConflict {
  /** The index of the port in the candidate's spec.ports. */
  readonly portIndex: number;
  readonly vipPort: string;
  /** "namespace/name" of the Service holding it. */
  readonly holder: string;
}

/** Conditions without generation and times: the caller stamps them. */
export type ObjectCondition = Pick<Condition, "type" | "status" | "reason" | "message">;

export interface ConfigAnalysis {
  /** By resourceKey ("plural/namespace/name"): Accepted, and ResolvedRefs for routes. */
  readonly conditions: ReadonlyMap<string, ObjectCondition[]>;
  /** resourceKeys of the objects left out of the agents' tables. */
  readonly excluded: ReadonlySet<string>;
}

type AnyResource = Pick<Resource, "kind" | "metadata" | "spec">;

interface Ref {
  name: string;
  namespace?: string;
  port?: number;
}

const name = (o: AnyResource) => `${o.metadata.namespace}/${o.metadata.name}`;
const byAge = (a: AnyResource, b: AnyResource) =>
  (a.metadata.creationTimestamp ?? "").localeCompare(b.metadata.creationTimestamp ?? "") ||
  name(a).localeCompare(name(b));
/** The agents' order for policies (policy.ts policiesByService, peer-authentication.ts). */
const byName = (a: AnyResource, b: AnyResource) =>
  (a.metadata.namespace + a.metadata.name).localeCompare(b.metadata.namespace + b.metadata.name);

function vipPorts(service: AnyResource): string[] {
  const spec = service.spec as Partial<ServiceSpec>;
  return (spec.ports ?? []).map((p) => `${spec.vip}:${p.port}`);
}

/**
 * The VIP:ports of `candidate` that another of `services` holds. (A Service replacing itself is not
 * a conflict.) The REST API's admission refuses a write that has any.
 */
export function vipPortConflicts(candidate: AnyResource, services: Iterable<AnyResource>): VipPortConflict[] {
  const mine = vipPorts(candidate);
  const conflicts: VipPortConflict[] = [];
  for (const other of services) {
    if (name(other) === name(candidate)) continue;
    const theirs = new Set(vipPorts(other));
    mine.forEach((vipPort, portIndex) => {
      if (theirs.has(vipPort)) conflicts.push({ portIndex, vipPort, holder: name(other) });
    });
  }
  return conflicts;
}

/** Services that lose a VIP:port to an older one: "plural/namespace/name" → the conflict. */
export function vipPortLosers(services: readonly AnyResource[]): Map<string, VipPortConflict> {
  const holders = new Map<string, string>();
  const losers = new Map<string, VipPortConflict>();
  for (const service of [...services].sort(byAge)) {
    const ports = vipPorts(service);
    const taken = ports.findIndex((vp) => holders.has(vp));
    if (taken >= 0) {
      const vipPort = ports[taken]!;
      losers.set(resourceKey("services", service.metadata.namespace, service.metadata.name), {
        portIndex: taken,
        vipPort,
        holder: holders.get(vipPort)!,
      });
      continue;
    }
    for (const vp of ports) holders.set(vp, name(service));
  }
  return losers;
}

export function analyzeConfig(input: {
  services: readonly AnyResource[];
  traffic: readonly AnyResource[];
}): ConfigAnalysis {
  const conditions = new Map<string, ObjectCondition[]>();
  const losers = vipPortLosers(input.services);
  /** "namespace/name" → the Service's ports, for the Services that are in the tables. */
  const services = new Map<string, number[]>();
  for (const s of input.services) {
    const key = resourceKey("services", s.metadata.namespace, s.metadata.name);
    const lost = losers.get(key);
    if (lost) {
      conditions.set(key, [
        notAccepted(
          "Conflicted",
          `VIP:port ${lost.vipPort} is already Service ${lost.holder}'s; this Service is left out of the agents' tables`,
        ),
      ]);
      continue;
    }
    services.set(
      name(s),
      ((s.spec as Partial<ServiceSpec>).ports ?? []).map((p) => p.port),
    );
    conditions.set(key, [accepted("Accepted", "valid; no other Service holds its VIP:ports")]);
  }
  const missing = (o: AnyResource, refs: readonly Ref[]) =>
    refs.map((r) => `${r.namespace ?? o.metadata.namespace}/${r.name}`).filter((s) => !services.has(s));

  const policyHolders = new Map<string, string>();
  const peerLevels = new Map<string, string>();
  for (const o of [...input.traffic].sort(byName)) {
    const key = resourceKey(pluralOf(o.kind) ?? o.kind.toLowerCase(), o.metadata.namespace, o.metadata.name);
    const spec = o.spec as Record<string, unknown>;
    if (o.kind === "HTTPRoute" || o.kind === "GRPCRoute") {
      conditions.set(key, routeConditions(o, services));
      continue;
    }
    const targets = (spec["targetRefs"] as Ref[] | undefined)?.map((t) => ({ name: t.name })) ?? [];
    const absent = missing(o, targets);
    if (targets.length > 0 && absent.length === targets.length) {
      conditions.set(key, [notAccepted("TargetNotFound", `no such Service: ${absent.join(", ")}`)]);
      continue;
    }
    const present = targets.map((t) => `${o.metadata.namespace}/${t.name}`).filter((s) => services.has(s));
    let overriddenBy: string[] = [];
    if (o.kind === "TrafficPolicy") {
      overriddenBy = claim(present, policyHolders, name(o));
    } else if (o.kind === "PeerAuthentication" && spec["mtls"] !== undefined) {
      const levels = present.length > 0 ? present.map((s) => `service ${s}`) : [`namespace ${o.metadata.namespace}`];
      overriddenBy = claim(levels, peerLevels, name(o));
    }
    const notes = [
      ...(absent.length > 0 ? [`no such Service: ${absent.join(", ")}`] : []),
      ...overriddenBy.map((w) => `overridden by ${o.kind} ${w}`),
    ];
    const levels = present.length || 1;
    conditions.set(key, [
      overriddenBy.length >= levels
        ? notAccepted("Conflicted", `${notes.join("; ")} (the first by namespace and name applies)`)
        : accepted("Accepted", notes.length > 0 ? `accepted in part: ${notes.join("; ")}` : "valid; its targets exist"),
    ]);
  }
  return { conditions, excluded: new Set(losers.keys()) };
}

/** Claims each of `targets` for `owner` unless held; returns what held the others ("X at target"). */
function claim(targets: readonly string[], holders: Map<string, string>, owner: string): string[] {
  const lost: string[] = [];
  for (const t of targets) {
    const holder = holders.get(t);
    if (holder === undefined) holders.set(t, owner);
    else lost.push(`${holder} at ${t}`);
  }
  return lost;
}

function routeConditions(o: AnyResource, services: ReadonlyMap<string, number[]>): ObjectCondition[] {
  const spec = o.spec as {
    parentRefs?: Ref[];
    rules?: { backendRefs?: Ref[]; filters?: { requestMirror?: { backendRef: Ref } }[] }[];
  };
  const ns = (r: Ref) => `${r.namespace ?? o.metadata.namespace}/${r.name}`;
  const unmatched: string[] = [];
  for (const parent of spec.parentRefs ?? []) {
    const ports = services.get(ns(parent));
    if (!ports) unmatched.push(`no such Service: ${ns(parent)}`);
    else if (parent.port !== undefined && !ports.includes(parent.port)) {
      unmatched.push(`Service ${ns(parent)} has no port ${parent.port}`);
    }
  }
  const backends = (spec.rules ?? []).flatMap((rule) => [
    ...(rule.backendRefs ?? []),
    ...(rule.filters ?? []).flatMap((f) => (f.requestMirror ? [f.requestMirror.backendRef] : [])),
  ]);
  const absent = [...new Set(backends.map(ns).filter((s) => !services.has(s)))];
  const parents = spec.parentRefs?.length ?? 0;
  return [
    unmatched.length === parents
      ? notAccepted("NoMatchingParent", unmatched.join("; "))
      : accepted("Accepted", unmatched.length > 0 ? `accepted in part: ${unmatched.join("; ")}` : "its parents exist"),
    absent.length > 0
      ? {
          type: "ResolvedRefs",
          status: "False",
          reason: "BackendNotFound",
          message: `no such Service: ${absent.join(", ")} (its share of requests gets a 500)`,
        }
      : { type: "ResolvedRefs", status: "True", reason: "ResolvedRefs", message: "every backend exists" },
  ];
}

function accepted(reason: string, message: string): ObjectCondition {
  return { type: "Accepted", status: "True", reason, message };
}

function notAccepted(reason: string, message: string): ObjectCondition {
  return { type: "Accepted", status: "False", reason, message };
}
