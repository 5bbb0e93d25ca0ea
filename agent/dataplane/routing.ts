// HTTPRoute and GRPCRoute → an ordered list of match entries per service port, compiled once per
// snapshot. A request takes the first entry that matches, in Gateway API precedence order:
// exact path, then the longest prefix, then regex; then method; then more header matches; then
// more query matches; then route namespace/name and rule order.

import { durationMs } from "../../api/duration.ts";
import { byCodeUnits } from "../../api/order.ts";
import { fullMatch } from "../../api/regex.ts";
import type {
  BackendRef,
  GRPCRouteMatch,
  GRPCRouteSpec,
  HTTPRouteMatch,
  HTTPRouteSpec,
  RouteFilter,
  TrafficObject,
} from "../../api/traffic.ts";
import { headerTest } from "./policy.ts";

/** What matching reads from a request; headers are lower-case names. */
export interface RequestFacts {
  readonly method: string;
  /** The path without the query string. */
  readonly path: string;
  readonly query: string;
  header(name: string): string | undefined;
}

export interface HeaderOps {
  readonly set: readonly [string, string][];
  readonly add: readonly [string, string][];
  readonly remove: readonly string[];
}

/** A backend before it is bound to a service route: a Service by id, and the port to use. */
export interface BackendSpec {
  /** "name.namespace" */
  readonly service: string;
  readonly port?: number;
  readonly weight: number;
}

export interface RuleSpec {
  /** "namespace/route-name#rule-index", for logs and metrics. */
  readonly name: string;
  /** Absent: the rule has no backendRefs, which Gateway API answers with 500. */
  readonly backends: readonly BackendSpec[];
  readonly requestHeaders?: HeaderOps;
  readonly responseHeaders?: HeaderOps;
  readonly mirror?: { readonly backend: BackendSpec; readonly ratio: number };
  readonly requestTimeoutMs?: number;
  readonly perTryTimeoutMs?: number;
}

export interface MatchEntry {
  readonly matches: (req: RequestFacts) => boolean;
  readonly rule: RuleSpec;
  /** Sort key, smaller first. */
  readonly rank: readonly (number | string)[];
}

/** A parent Service port the rules apply to: "name.namespace" plus the port, or every port. */
export interface ParentKey {
  readonly service: string;
  readonly port?: number;
}

function headerOps(m: {
  set?: { name: string; value: string }[];
  add?: { name: string; value: string }[];
  remove?: string[];
}): HeaderOps {
  return {
    set: (m.set ?? []).map((h) => [h.name.toLowerCase(), h.value]),
    add: (m.add ?? []).map((h) => [h.name.toLowerCase(), h.value]),
    remove: (m.remove ?? []).map((n) => n.toLowerCase()),
  };
}

function backend(ref: Omit<BackendRef, "weight"> & { weight?: number }, namespace: string): BackendSpec {
  return { service: `${ref.name}.${ref.namespace ?? namespace}`, port: ref.port, weight: ref.weight ?? 1 };
}

function ruleSpec(
  name: string,
  namespace: string,
  rule: {
    backendRefs?: BackendRef[];
    filters?: RouteFilter[];
    timeouts?: { request?: string; backendRequest?: string };
  },
): RuleSpec {
  let requestHeaders: HeaderOps | undefined;
  let responseHeaders: HeaderOps | undefined;
  let mirror: RuleSpec["mirror"];
  for (const f of rule.filters ?? []) {
    if (f.type === "RequestHeaderModifier") requestHeaders = headerOps(f.requestHeaderModifier);
    else if (f.type === "ResponseHeaderModifier") responseHeaders = headerOps(f.responseHeaderModifier);
    else {
      const m = f.requestMirror;
      const ratio = m.fraction ? m.fraction.numerator / m.fraction.denominator : (m.percent ?? 100) / 100;
      mirror = { backend: backend(m.backendRef, namespace), ratio };
    }
  }
  return {
    name,
    backends: (rule.backendRefs ?? []).map((b) => backend(b, namespace)),
    requestHeaders,
    responseHeaders,
    mirror,
    requestTimeoutMs: rule.timeouts?.request ? durationMs(rule.timeouts.request) : undefined,
    perTryTimeoutMs: rule.timeouts?.backendRequest ? durationMs(rule.timeouts.backendRequest) : undefined,
  };
}

function headerMatchers(headers: HTTPRouteMatch["headers"]): ((req: RequestFacts) => boolean)[] {
  return (headers ?? []).map((h) => {
    const name = h.name.toLowerCase();
    const test = headerTest(h.type, h.value);
    return (req) => {
      const v = req.header(name);
      return v !== undefined && test(v);
    };
  });
}

function queryValue(query: string, name: string): string | undefined {
  // First occurrence wins, as Gateway API specifies.
  return new URLSearchParams(query).get(name) ?? undefined;
}

const PATH_RANK = { Exact: 0, PathPrefix: 1, RegularExpression: 2 } as const;

function httpEntry(m: HTTPRouteMatch, rule: RuleSpec, order: string, ruleIndex: number): MatchEntry {
  const tests: ((req: RequestFacts) => boolean)[] = [];
  const path = m.path ?? { type: "PathPrefix" as const, value: "/" };
  if (path.type === "Exact") tests.push((req) => req.path === path.value);
  else if (path.type === "PathPrefix") {
    // Prefix matching is by path element: /foo matches /foo and /foo/bar, not /foobar.
    const prefix = path.value.endsWith("/") && path.value !== "/" ? path.value.slice(0, -1) : path.value;
    if (prefix !== "/") {
      tests.push((req) => req.path === prefix || req.path.startsWith(`${prefix}/`));
    }
  } else {
    const test = fullMatch(path.value);
    tests.push((req) => test(req.path));
  }
  if (m.method) {
    const method = m.method;
    tests.push((req) => req.method === method);
  }
  tests.push(...headerMatchers(m.headers));
  for (const q of m.queryParams ?? []) {
    const test = headerTest(q.type, q.value);
    tests.push((req) => {
      const v = queryValue(req.query, q.name);
      return v !== undefined && test(v);
    });
  }
  return {
    matches: (req) => tests.every((t) => t(req)),
    rule,
    rank: [
      PATH_RANK[path.type],
      -path.value.length,
      m.method ? 0 : 1,
      -(m.headers?.length ?? 0),
      -(m.queryParams?.length ?? 0),
      order,
      ruleIndex,
    ],
  };
}

function grpcEntry(m: GRPCRouteMatch, rule: RuleSpec, order: string, ruleIndex: number): MatchEntry {
  const tests = headerMatchers(m.headers);
  const method = m.method;
  if (method) {
    const service = method.service === undefined ? undefined : headerTest(method.type, method.service);
    const name = method.method === undefined ? undefined : headerTest(method.type, method.method);
    tests.push((req) => {
      // gRPC paths are /package.Service/Method.
      const slash = req.path.lastIndexOf("/");
      if (slash <= 0) return false;
      return (!service || service(req.path.slice(1, slash))) && (!name || name(req.path.slice(slash + 1)));
    });
  }
  return {
    matches: (req) => tests.every((t) => t(req)),
    rule,
    // Gateway API: most characters in the matching service, then in the method, then headers.
    rank: [
      -(method?.service?.length ?? 0),
      -(method?.method?.length ?? 0),
      -(m.headers?.length ?? 0),
      order,
      ruleIndex,
    ],
  };
}

export interface CompiledRoutes {
  /** HTTPRoute entries by parent, in precedence order. */
  readonly http: Map<string, MatchEntry[]>;
  readonly grpc: Map<string, MatchEntry[]>;
}

/** Key of a parent in CompiledRoutes: "name.namespace" or "name.namespace:port". */
export function parentKey(service: string, port?: number): string {
  return port === undefined ? service : `${service}:${port}`;
}

export function compileRoutes(traffic: readonly TrafficObject[]): CompiledRoutes {
  const out: CompiledRoutes = { http: new Map(), grpc: new Map() };
  for (const obj of traffic) {
    if (obj.kind !== "HTTPRoute" && obj.kind !== "GRPCRoute") continue;
    const order = `${obj.namespace}/${obj.name}`;
    const target = obj.kind === "HTTPRoute" ? out.http : out.grpc;
    const spec = obj.spec as HTTPRouteSpec | GRPCRouteSpec;
    const entries: MatchEntry[] = [];
    spec.rules.forEach((rule, i) => {
      const compiled = ruleSpec(`${order}#${rule.name ?? i}`, obj.namespace, rule as Parameters<typeof ruleSpec>[2]);
      for (const m of rule.matches) {
        entries.push(
          obj.kind === "HTTPRoute"
            ? httpEntry(m as HTTPRouteMatch, compiled, order, i)
            : grpcEntry(m as GRPCRouteMatch, compiled, order, i),
        );
      }
    });
    for (const parent of spec.parentRefs) {
      const key = parentKey(`${parent.name}.${parent.namespace ?? obj.namespace}`, parent.port);
      const list = target.get(key) ?? [];
      list.push(...entries);
      target.set(key, list);
    }
  }
  for (const map of [out.http, out.grpc]) for (const list of map.values()) list.sort(compareRank);
  return out;
}

export function compareRank(a: MatchEntry, b: MatchEntry): number {
  for (let i = 0; i < Math.max(a.rank.length, b.rank.length); i++) {
    const x = a.rank[i]!;
    const y = b.rank[i]!;
    if (x === y) continue;
    return typeof x === "number" && typeof y === "number" ? x - y : byCodeUnits(String(x), String(y));
  }
  return 0;
}
