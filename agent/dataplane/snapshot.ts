// A configuration snapshot compiled for the data plane: built once when configuration changes,
// then only read. Lookups on the connection path are one Map.get; nothing there parses
// configuration: routes, policies, regexes, hash rings and locality tiers are all prepared here.

import type { PortProtocol, ServiceTable } from "../../api/services.ts";
import type { TrafficObject } from "../../api/traffic.ts";
import { type AuthorizationIndex, compileAuthorization, NO_AUTHORIZATION } from "./authz/authorization.ts";
import {
  compileRequestAuthentication,
  NO_REQUEST_AUTHENTICATION,
  type RequestAuthenticationIndex,
} from "./authz/request-authentication.ts";
import type { Endpoint } from "./endpoint.ts";
import { buildHashRing, type HashRing } from "./hash-ring.ts";
import { UNKNOWN } from "./metrics.ts";
import { ALL_PERMISSIVE, compilePeerAuthentication, type PeerAuthenticationIndex } from "./peer-authentication.ts";
import { type CompiledPolicy, DEFAULT_POLICY, policiesByService } from "./policy.ts";
import {
  type BackendSpec,
  compareRank,
  compileRoutes,
  type MatchEntry,
  parentKey,
  type RequestFacts,
  type RuleSpec,
} from "./routing.ts";

/** A backend of a rule: a service port, and the policy its endpoints are picked and guarded by. */
export interface Backend {
  readonly route: ServiceRoute;
  readonly weight: number;
  /** The backend Service's own TrafficPolicy if it has one, else the parent Service's. */
  readonly policy: CompiledPolicy;
  readonly ring?: HashRing;
  /** Endpoints grouped nearest first (locality load balancing); absent when locality is off. */
  readonly tiers?: readonly (readonly Endpoint[])[];
}

export interface Rule extends Omit<RuleSpec, "backends" | "mirror"> {
  readonly backends: readonly Backend[];
  /**
   * All weights, those of backendRefs that name no known Service port included: that share of
   * requests gets a 500 (Gateway API); with no valid backend, all of them do.
   */
  readonly totalWeight: number;
  readonly mirror?: { readonly backend: Backend; readonly ratio: number };
}

export interface ServiceRoute {
  /** "name.namespace", the value of the destination_service label. */
  readonly id: string;
  readonly port: number;
  /** Declared protocol; undefined means detect. */
  readonly protocol: PortProtocol | undefined;
  readonly endpoints: readonly Endpoint[];
  /** Index of this route's shared counters (round robin, retry budget), stable across swaps. */
  readonly slot: number;
  /** This Service's TrafficPolicy, or the defaults. */
  readonly policy: CompiledPolicy;
  readonly hasPolicy: boolean;
  /** The route's own service as a backend: what requests use when no rule applies. */
  readonly self: Backend;
  /** Compiled HTTPRoute / GRPCRoute rules, in precedence order. */
  readonly httpRules: readonly { matches: MatchEntry["matches"]; rule: Rule }[];
  readonly grpcRules: readonly { matches: MatchEntry["matches"]; rule: Rule }[];
}

export interface Snapshot {
  readonly version: string;
  /** Keyed by "vip:port". */
  readonly routes: ReadonlyMap<string, ServiceRoute>;
  /** Keyed by "endpoint ip:port": the service an inbound connection to a pod port belongs to. */
  readonly inbound: ReadonlyMap<string, ServiceRoute>;
  /**
   * Keyed by "name.namespace|endpoint ip:port": the route of a Service a source agent named for a
   * request (a pod can serve several Services on one port: reviews and reviews-v2).
   */
  readonly inboundByService: ReadonlyMap<string, ServiceRoute>;
  /** The AuthorizationPolicies that select each pod (evaluated where the pod is). */
  readonly authorization: AuthorizationIndex;
  /** The JWT rules of the RequestAuthentications that select each pod. */
  readonly requestAuthentication: RequestAuthenticationIndex;
  /** Each pod port's mTLS mode (PeerAuthentication). */
  readonly mtlsMode: PeerAuthenticationIndex;
  /** This agent's node name (locality). */
  readonly node: string;
}

export const EMPTY_SNAPSHOT: Snapshot = {
  version: "",
  routes: new Map(),
  inbound: new Map(),
  inboundByService: new Map(),
  authorization: NO_AUTHORIZATION,
  mtlsMode: ALL_PERMISSIVE,
  requestAuthentication: NO_REQUEST_AUTHENTICATION,
  node: "",
};

/** What the control thread sends to the data-plane workers: plain data plus the slot assignment. */
export interface SnapshotMessage {
  version: string;
  /** Validated, its traffic objects parsed with their defaults filled in (parseTraffic). */
  table: ServiceTable;
  /** "vip:port" → route slot. */
  routeSlots: Record<string, number>;
  /** "ip:port" → endpoint slot. */
  endpointSlots: Record<string, number>;
  node: string;
  /** Measured RTT to each other node, in ms (locality). */
  rttMs: Record<string, number>;
}

export function routeKey(ip: string, port: number): string {
  return `${ip}:${port}`;
}

/** The routing keys of a table, for slot assignment on the control thread. */
export function slotKeys(table: ServiceTable): { routes: string[]; endpoints: string[] } {
  const routes: string[] = [];
  const endpoints: string[] = [];
  for (const svc of table.services) {
    for (const p of svc.ports) {
      routes.push(routeKey(svc.vip, p.port));
      for (const e of svc.endpoints) endpoints.push(routeKey(e.ip, e.port ?? p.targetPort ?? p.port));
    }
  }
  return { routes, endpoints };
}

type MutableRoute = { -readonly [K in keyof ServiceRoute]: ServiceRoute[K] };

export function compileSnapshot(msg: SnapshotMessage): Snapshot {
  const traffic = msg.table.traffic ?? [];
  const policies = policiesByService(traffic);
  const routes = new Map<string, ServiceRoute>();
  const inbound = new Map<string, ServiceRoute>();
  const inboundByService = new Map<string, ServiceRoute>();
  /** "name.namespace" → port → route: how backendRefs find their service. */
  const byService = new Map<string, Map<number, MutableRoute>>();

  for (const svc of msg.table.services) {
    const id = `${svc.name}.${svc.namespace}`;
    const policy = policies.get(id);
    const ports = new Map<number, MutableRoute>();
    byService.set(id, ports);
    for (const p of svc.ports) {
      const key = routeKey(svc.vip, p.port);
      const endpoints = svc.endpoints.map((e) => {
        const port = e.port ?? p.targetPort ?? p.port;
        const [podNamespace, podName] = e.pod?.includes("/") ? e.pod.split("/", 2) : [svc.namespace, e.pod];
        return {
          ip: e.ip,
          port,
          meshed: e.meshed ?? false,
          pod: e.pod ?? "",
          node: e.node ?? "",
          workload: e.workload ?? podName ?? UNKNOWN,
          namespace: podNamespace ?? UNKNOWN,
          serviceAccount: e.serviceAccount,
          slot: msg.endpointSlots[routeKey(e.ip, port)] ?? 0,
        };
      });
      const route = {
        id,
        port: p.port,
        protocol: p.protocol,
        endpoints,
        slot: msg.routeSlots[key] ?? 0,
        policy: policy ?? DEFAULT_POLICY,
        hasPolicy: policy !== undefined,
        httpRules: [],
        grpcRules: [],
      } as unknown as MutableRoute;
      route.self = backendOf(route, 1, route.policy, msg);
      routes.set(key, route);
      ports.set(p.port, route);
      for (const e of endpoints) {
        const key = routeKey(e.ip, e.port);
        if (!inbound.has(key)) inbound.set(key, route);
        inboundByService.set(`${id}|${key}`, route);
      }
    }
  }

  const compiled = compileRoutes(traffic);
  const bind = (parent: MutableRoute, spec: BackendSpec): Backend | undefined => {
    const route = byService.get(spec.service)?.get(spec.port ?? parent.port);
    if (!route) return undefined;
    return backendOf(route, spec.weight, route.hasPolicy ? route.policy : parent.policy, msg);
  };
  const rulesFor = (parent: MutableRoute, entries: MatchEntry[]) =>
    entries.map(({ matches, rule }) => {
      const valid: Backend[] = [];
      let invalidWeight = 0;
      for (const spec of rule.backends) {
        const b = bind(parent, spec);
        if (!b) invalidWeight += spec.weight;
        else if (b.weight > 0) valid.push(b);
      }
      const mirrorBackend = rule.mirror && bind(parent, rule.mirror.backend);
      return {
        matches,
        rule: {
          ...rule,
          backends: valid,
          totalWeight: valid.reduce((sum, b) => sum + b.weight, invalidWeight),
          mirror: mirrorBackend && rule.mirror ? { backend: mirrorBackend, ratio: rule.mirror.ratio } : undefined,
        } satisfies Rule,
      };
    });
  for (const [id, ports] of byService) {
    for (const route of ports.values()) {
      // Rules for this port and rules for every port of the Service compete in one precedence order.
      const merged = (map: Map<string, MatchEntry[]>) =>
        [...(map.get(parentKey(id, route.port)) ?? []), ...(map.get(id) ?? [])].sort(compareRank);
      const http = merged(compiled.http);
      const grpc = merged(compiled.grpc);
      route.httpRules = rulesFor(route, http);
      route.grpcRules = rulesFor(route, grpc);
    }
  }
  const authorization = compileAuthorization(traffic, msg.table.services);
  const mtlsMode = compilePeerAuthentication(traffic, msg.table.services);
  const requestAuthentication = compileRequestAuthentication(traffic, msg.table.services);
  return {
    version: msg.version,
    routes,
    inbound,
    inboundByService,
    authorization,
    requestAuthentication,
    mtlsMode,
    node: msg.node,
  };
}

/**
 * Why one traffic object, valid by its schema, does not compile for the data plane (undefined: it
 * does). The control thread asks before a table reaches the workers, so an object the compilers
 * refuse is left out of the table instead of failing every worker's snapshot.
 */
export function compileProblem(object: TrafficObject): string | undefined {
  try {
    compileSnapshot({
      version: "",
      table: { services: [], traffic: [object] },
      routeSlots: {},
      endpointSlots: {},
      node: "",
      rttMs: {},
    });
    return undefined;
  } catch (err) {
    return `does not compile: ${(err as Error).message}`;
  }
}

function backendOf(route: ServiceRoute, weight: number, policy: CompiledPolicy, msg: SnapshotMessage): Backend {
  const tolerance = policy.lb.localityToleranceMs;
  return {
    route,
    weight,
    policy,
    ring: policy.lb.type === "ConsistentHash" ? buildHashRing(route.endpoints) : undefined,
    tiers: tolerance === undefined ? undefined : localityTiers(route.endpoints, msg.node, msg.rttMs, tolerance),
  };
}

/**
 * Same node first; then nodes within `toleranceMs` of the nearest remaining one, and so on.
 * Nodes never measured come last.
 */
export function localityTiers(
  endpoints: readonly Endpoint[],
  self: string,
  rttMs: Readonly<Record<string, number>>,
  toleranceMs: number,
): Endpoint[][] {
  const distance = (e: Endpoint) => (e.node === self ? -1 : (rttMs[e.node] ?? Number.POSITIVE_INFINITY));
  const sorted = [...endpoints].sort((a, b) => distance(a) - distance(b));
  const tiers: Endpoint[][] = [];
  let floor = Number.NaN;
  for (const e of sorted) {
    const d = distance(e);
    const last = tiers.at(-1);
    // The same node (-1) is a tier of its own; unmeasured nodes (Infinity) share the last one.
    if (last && (d === floor || (floor !== -1 && d <= floor + toleranceMs))) last.push(e);
    else {
      tiers.push([e]);
      floor = d;
    }
  }
  return tiers;
}

/** The endpoint `ip:port` of `route` (a pod of this node, on the inbound side); undefined if not one. */
export function endpointOf(route: ServiceRoute | undefined, ip: string, port: number): Endpoint | undefined {
  return route?.endpoints.find((e) => e.ip === ip && e.port === port);
}

/** The rule a request takes, or undefined when the port has rules and none matches (404). */
export function selectRule(
  route: ServiceRoute,
  grpc: boolean,
  req: RequestFacts,
): { rule: Rule | undefined; routed: boolean } {
  const rules = grpc && route.grpcRules.length > 0 ? route.grpcRules : route.httpRules;
  if (rules.length === 0) return { rule: undefined, routed: false };
  for (const r of rules) if (r.matches(req)) return { rule: r.rule, routed: true };
  return { rule: undefined, routed: true };
}
