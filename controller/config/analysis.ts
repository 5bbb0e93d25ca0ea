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
// - HTTPRoute/GRPCRoute: a rule match that can never be taken → RulesReachable False, NeverMatches:
//   the same match as one the agents try first (ties go by route namespace/name, then rule order),
//   a RegularExpression path behind a catch-all (the agents try every path prefix before any
//   regex), or a route whose parent ports are all declared tcp (forwarded as bytes, never read).
// - AuthorizationPolicy, RequestAuthentication: a target that does not exist → TargetNotFound.
//   Several on one workload are not a conflict: they combine (DENY first, then ALLOW; every JWT rule).
// - PeerAuthentication: a target that does not exist → TargetNotFound; two at one level (the same
//   Service, or namespace-wide in one namespace) that both set a mode → the first by name applies.

import { byCodeUnits } from "../../api/order.ts";
import { type Condition, pluralOf, type Resource, type ServiceSpec } from "../../api/resources.ts";
import { selectorMatches } from "./pod-index.ts";
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
  byCodeUnits(a.metadata.creationTimestamp ?? "", b.metadata.creationTimestamp ?? "") || byCodeUnits(name(a), name(b));
/** The agents' order for policies (policy.ts policiesByService, peer-authentication.ts). */
const byName = (a: AnyResource, b: AnyResource) =>
  byCodeUnits(a.metadata.namespace + a.metadata.name, b.metadata.namespace + b.metadata.name);

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
  /** "namespace/name:port" → the port's declared protocol ("" when detected), for the same Services. */
  const protocols = new Map<string, string>();
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
    const ports = (s.spec as Partial<ServiceSpec>).ports ?? [];
    services.set(
      name(s),
      ports.map((p) => p.port),
    );
    for (const p of ports) protocols.set(`${name(s)}:${p.port}`, p.protocol ?? "");
    conditions.set(key, [accepted("Accepted", "valid; no other Service holds its VIP:ports")]);
  }
  const missing = (o: AnyResource, refs: readonly Ref[]) =>
    refs.map((r) => `${r.namespace ?? o.metadata.namespace}/${r.name}`).filter((s) => !services.has(s));

  const neverMatch = neverMatchingRules(input.traffic, services, protocols);
  const policyHolders = new Map<string, string>();
  const peerLevels = new Map<string, string>();
  for (const o of [...input.traffic].sort(byName)) {
    const key = resourceKey(pluralOf(o.kind) ?? o.kind.toLowerCase(), o.metadata.namespace, o.metadata.name);
    const spec = o.spec as Record<string, unknown>;
    if (o.kind === "HTTPRoute" || o.kind === "GRPCRoute") {
      conditions.set(key, [...routeConditions(o, services), reachableCondition(neverMatch.get(key))]);
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

function reachableCondition(problems: readonly string[] | undefined): ObjectCondition {
  return problems && problems.length > 0
    ? { type: "RulesReachable", status: "False", reason: "NeverMatches", message: problems.join("; ").slice(0, 2000) }
    : { type: "RulesReachable", status: "True", reason: "RulesReachable", message: "every rule can match" };
}

interface MatchAt {
  /** resourceKey of the route. */
  readonly key: string;
  /** "namespace/name", the agents' tie-break order. */
  readonly order: string;
  readonly label: string;
  readonly rule: number;
  readonly match: number;
  /** The match's conditions in one canonical form: equal text, equal match. */
  readonly canonical: string;
  readonly regexPath: boolean;
  /** Matches every request (path prefix "/" or none), whatever its other conditions. */
  readonly anyPath: boolean;
  readonly method?: string;
  readonly headers: readonly string[];
  readonly queryParams: readonly string[];
}

type Match = {
  path?: { type?: string; value?: string };
  method?: unknown;
  headers?: { type?: string; name: string; value: string }[];
  queryParams?: { type?: string; name: string; value: string }[];
};

const condition = (c: { type?: string; name: string; value: string }, lower: boolean) =>
  `${lower ? c.name.toLowerCase() : c.name} ${c.type ?? "Exact"} ${c.value}`;

/**
 * Route rule matches that are never taken, by route resourceKey: what the agents' precedence
 * (agent/dataplane/routing.ts) makes unreachable on some Service port they attach to, judged only
 * where the answer does not depend on the requests: an identical match tried first, a regex path
 * behind a match that takes every path with a subset of its other conditions, a tcp port.
 */
export function neverMatchingRules(
  traffic: readonly AnyResource[],
  services: ReadonlyMap<string, number[]>,
  protocols: ReadonlyMap<string, string>,
): Map<string, string[]> {
  const problems = new Map<string, string[]>();
  const report = (key: string, text: string) => problems.set(key, [...(problems.get(key) ?? []), text]);
  /** "kind|namespace/service:port" → the matches tried there. */
  const byPort = new Map<string, MatchAt[]>();
  for (const o of traffic) {
    if (o.kind !== "HTTPRoute" && o.kind !== "GRPCRoute") continue;
    const key = resourceKey(pluralOf(o.kind) ?? "", o.metadata.namespace, o.metadata.name);
    const spec = o.spec as { parentRefs?: Ref[]; rules?: { matches?: Match[] }[] };
    const ports: string[] = [];
    for (const parent of spec.parentRefs ?? []) {
      const service = `${parent.namespace ?? o.metadata.namespace}/${parent.name}`;
      for (const port of services.get(service) ?? []) {
        if (parent.port === undefined || parent.port === port) ports.push(`${service}:${port}`);
      }
    }
    if (ports.length === 0) continue; // NoMatchingParent says why
    const l7 = ports.filter((p) => protocols.get(p) !== "tcp");
    if (l7.length === 0) {
      report(
        key,
        `every parent port (${ports.join(", ")}) is declared tcp: the agents forward it as bytes and never read a request`,
      );
      continue;
    }
    const grpc = o.kind === "GRPCRoute";
    (spec.rules ?? []).forEach((rule, r) => {
      // The schema's defaults: an HTTPRoute rule without matches takes every path, a GRPCRoute's every call.
      (rule.matches ?? [{}]).forEach((m, i) => {
        const path = grpc ? undefined : { type: m.path?.type ?? "PathPrefix", value: m.path?.value ?? "/" };
        const headers = (m.headers ?? []).map((h) => condition(h, true)).sort();
        const queryParams = (m.queryParams ?? []).map((q) => condition(q, false)).sort();
        const at: MatchAt = {
          key,
          order: `${o.metadata.namespace}/${o.metadata.name}`,
          label: `${o.kind} ${o.metadata.namespace}/${o.metadata.name} rule ${r}`,
          rule: r,
          match: i,
          canonical: JSON.stringify([path, grpc ? m.method : (m.method ?? null), headers, queryParams]),
          regexPath: path?.type === "RegularExpression",
          anyPath: path !== undefined && path.type === "PathPrefix" && path.value === "/",
          method: grpc ? undefined : (m.method as string | undefined),
          headers,
          queryParams,
        };
        for (const p of l7) byPort.set(`${o.kind}|${p}`, [...(byPort.get(`${o.kind}|${p}`) ?? []), at]);
      });
    });
  }
  const first = (a: MatchAt, b: MatchAt) => byCodeUnits(a.order, b.order) || a.rule - b.rule;
  const seen = new Set<string>();
  for (const [where, list] of byPort) {
    const port = where.slice(where.indexOf("|") + 1);
    for (const m of list) {
      const shadow = list.find(
        (f) =>
          f !== m &&
          (f.key !== m.key || f.rule !== m.rule) &&
          ((f.canonical === m.canonical && first(f, m) < 0) ||
            (m.regexPath &&
              f.anyPath &&
              (f.method === undefined || f.method === m.method) &&
              f.headers.every((h) => m.headers.includes(h)) &&
              f.queryParams.every((q) => m.queryParams.includes(q)))),
      );
      const id = `${m.key}|${m.rule}|${m.match}`;
      if (!shadow || seen.has(id)) continue;
      seen.add(id);
      const why =
        shadow.canonical === m.canonical
          ? "has the same match, and is tried first (same precedence: ties go by route namespace/name, then rule order)"
          : "takes every path with a subset of its conditions, and every path prefix is tried before a RegularExpression path";
      report(
        m.key,
        `rule ${m.rule} match ${m.match} never matches on ${port}: ${shadow.label} match ${shadow.match} ${why}`,
      );
    }
  }
  return problems;
}

/** An object as a list answers it: what the selection reads. */
type Listed = { kind: string; metadata: { name: string; namespace: string }; spec: unknown };

/** A policy that selects pods but selects none of the enrolled ones: enforced nowhere for now. */
export interface IdlePolicy {
  readonly kind: string;
  readonly namespace: string;
  readonly name: string;
  readonly message: string;
}

/**
 * AuthorizationPolicies, RequestAuthentications and PeerAuthentications that select no enrolled
 * pod: their targets' selectors (or, without targets, their namespace) pick none of `pods`. Not a
 * status condition: pods come and go between writes; `nodemesh check` asks with the pods the
 * agents report. Targets that do not exist are the Accepted condition's (TargetNotFound).
 */
export function policiesSelectingNothing(input: {
  services: readonly Listed[];
  traffic: readonly Listed[];
  pods: readonly { namespace: string; labels: Readonly<Record<string, string>> }[];
}): IdlePolicy[] {
  const selectors = new Map<string, Readonly<Record<string, string>>>(
    input.services.map(
      (s) => [`${s.metadata.namespace}/${s.metadata.name}`, (s.spec as Partial<ServiceSpec>).selector ?? {}] as const,
    ),
  );
  const out: IdlePolicy[] = [];
  for (const o of input.traffic) {
    if (!["AuthorizationPolicy", "RequestAuthentication", "PeerAuthentication"].includes(o.kind)) continue;
    const ns = o.metadata.namespace;
    const inNamespace = input.pods.filter((p) => p.namespace === ns);
    const targets = (o.spec as { targetRefs?: Ref[] }).targetRefs;
    const base = { kind: o.kind, namespace: ns, name: o.metadata.name };
    if (!targets) {
      if (inNamespace.length === 0) out.push({ ...base, message: `no enrolled pod in namespace ${ns}` });
      continue;
    }
    const existing = targets.map((t) => `${ns}/${t.name}`).filter((s) => selectors.has(s));
    if (existing.length === 0) continue;
    const selected = inNamespace.filter((p) => existing.some((s) => selectorMatches(selectors.get(s)!, p.labels)));
    if (selected.length === 0) {
      out.push({ ...base, message: `its targets (${existing.join(", ")}) select no enrolled pod` });
    }
  }
  return out;
}
