// `nodemesh explain`: what the data plane would do with one request from a pod, step by step,
// decided by the data plane's own functions against a snapshot — planOutbound (outbound.ts),
// resolveTarget (http/resolve.ts), selectRule and planRequest (snapshot.ts, http/plan.ts), the
// route compiler (routing.ts) and the balancer (balancer.ts). Nothing here matches, weighs or picks
// on its own; it only calls them and says what they answered.
//
// Why an earlier rule did not match: each of its match conditions is compiled alone by
// compileRoutes (the snapshot's compiler) and tried on the request, so the failing condition is
// named by the same code that failed it. Chance (weights, fault and mirror ratios) is not drawn:
// the heaviest backend is assumed and every weight listed; a fault or mirror below 100 % is given
// as its ratio. Nothing is consumed: no rotation step, no rate-limit token.

import type { ExplainStep, Explanation } from "../../api/diagnosis.ts";
import type { GRPCRouteMatch, HTTPRouteMatch, TrafficObject } from "../../api/traffic.ts";
import { AgentErrors, errorEntry } from "../errors.ts";
import type { Endpoint } from "./endpoint.ts";
import { type Proxying, planRequest } from "./http/plan.ts";
import { resolveTarget } from "./http/resolve.ts";
import { planOutbound } from "./outbound.ts";
import type { PodContext } from "./pod.ts";
import type { CompiledPolicy } from "./policy.ts";
import { compareRank, compileRoutes, type MatchEntry, type RequestFacts } from "./routing.ts";
import { type Backend, type Rule, routeKey, type ServiceRoute, type Snapshot, selectRule } from "./snapshot.ts";

/** The request to explain, its target already split. */
export interface ExplainInput {
  readonly snapshot: Snapshot;
  /** The snapshot's traffic objects (parsed): the route rules' own conditions. */
  readonly traffic: readonly TrafficObject[];
  readonly from: PodContext;
  readonly method: string;
  readonly ip: string;
  readonly port: number;
  /** Path and query as sent, e.g. "/v2?x=1". */
  readonly target: string;
  /** Lower-case names. */
  readonly headers: Readonly<Record<string, string>>;
  /** What the pod's interception rules do with ip:port (diagnose.ts reads them from the pod). */
  readonly interception: { readonly intercepted: boolean; readonly reason: string };
  /** The endpoint the balancer would pick next, without taking the pick; a string: why that is unknowable. */
  nextEndpoint(backend: Backend, hashKey: string | undefined): Endpoint | undefined | string;
  /** Out of load balancing now (outlier ejection, failed health check). */
  ejected(endpoint: Endpoint): boolean;
}

export interface RuleVerdict {
  /** "namespace/route#rule" and the match's index in that rule. */
  readonly rule: string;
  readonly match: number;
  readonly matched: boolean;
  /** The conditions that failed, each with what the request had. */
  readonly failed: readonly string[];
}

export interface BackendShare {
  /** "name.namespace:port" */
  readonly service: string;
  readonly weight: number;
  /** Share of the rule's requests, 0..1. */
  readonly share: number;
  /** The backend this explanation follows. */
  readonly assumed: boolean;
}

export interface EndpointView {
  readonly address: string;
  readonly pod: string;
  readonly node: string;
  readonly ejected: boolean;
  readonly next: boolean;
}

/** The explanation, with the structured parts tests and `-o json` read. */
export interface DetailedExplanation extends Explanation {
  readonly interception: { readonly intercepted: boolean; readonly reason: string };
  readonly service?: { readonly id: string; readonly vipPort: string; readonly protocol: string };
  readonly rules?: readonly RuleVerdict[];
  /** The rule taken ("namespace/route#rule"); absent when no rule applies. */
  readonly matchedRule?: string;
  readonly backends?: readonly BackendShare[];
  /** Weight of backendRefs that name no known Service: that share of requests gets a 500. */
  readonly missingBackendWeight?: number;
  readonly policy?: readonly string[];
  readonly endpoints?: readonly EndpointView[];
  /** The endpoint the balancer picks next ("ip:port"), or why that cannot be known. */
  readonly next?: string;
  readonly refusal?: { readonly code: string; readonly message: string };
}

type Head = Pick<Explanation, "node" | "configVersion" | "pod" | "request">;

export function explainRequest(input: ExplainInput): DetailedExplanation {
  const { snapshot, from } = input;
  const head: Head = {
    node: snapshot.node,
    configVersion: snapshot.version,
    pod: from.key,
    request: {
      method: input.method,
      url: `http://${input.ip}${input.port === 80 ? "" : `:${input.port}`}${input.target}`,
      headers: input.headers,
    },
  };
  const steps: ExplainStep[] = [{ step: "interception", summary: input.interception.reason }];
  const { interception } = input;
  if (!interception.intercepted) return { ...head, outcome: "not intercepted", interception, steps };

  const plan = planOutbound({ ip: input.ip, port: input.port }, snapshot);
  const vipPort = routeKey(input.ip, input.port);
  if (plan.kind === "passthrough") {
    steps.push({
      step: "service",
      summary: `${vipPort} is no Service's address: passthrough, connected as is to ${vipPort} (destination_service="passthrough"); no route or policy applies`,
    });
    return { ...head, outcome: "passthrough", interception, steps };
  }
  if (plan.kind === "refuse") {
    const refusal = { code: plan.reason.code, message: plan.reason.message };
    steps.push({ step: "service", summary: `refused: ${refusal.code} (${refusal.message}); the connection is reset` });
    return { ...head, outcome: "refused", interception, steps, refusal };
  }
  const route = plan.route;
  const protocol = route.protocol ?? "detected (HTTP here)";
  const service = { id: route.id, vipPort, protocol };
  steps.push({
    step: "service",
    summary: `${vipPort} is Service ${route.id} port ${route.port} (protocol ${protocol}), ${route.endpoints.length} endpoint(s)`,
  });
  if (route.protocol === "tcp") {
    steps.push({
      step: "route",
      summary: "the port is declared tcp: forwarded as bytes, no HTTP route or L7 policy applies",
    });
    const picked = endpointsOf(input, route.self, from);
    steps.push(picked.step);
    return { ...head, outcome: "service", interception, service, steps, ...picked.fields };
  }

  const req = requestFacts(input);
  const { rules, rulesStep, matchedRule } = explainRules(input.traffic, route, req);
  steps.push(rulesStep);
  const resolved = resolveTarget(snapshot, { direction: "outbound", from, routeKey: vipPort }, input.headers);
  if (!resolved) throw new Error(`the route of ${vipPort} is gone from the snapshot`);
  const { rule } = selectRule(route, req.grpc, req);
  if (rule?.name !== matchedRule) throw new Error(`the data plane takes ${rule?.name}, the explanation ${matchedRule}`);
  const assumed = rule ? heaviest(rule) : undefined;
  const requestPlan = planRequest(resolved, req, { random: draws(rule, assumed), rateLimitWaitUs: () => 0 });
  const backendsPart = rule ? backendShares(rule, assumed) : undefined;
  if (backendsPart) steps.push(backendsPart.step);
  else steps.push({ step: "backend", summary: `no rule applies: Service ${route.id} itself (weight 1 of 1)` });

  if (requestPlan.kind === "refuse") {
    const refusal = { code: requestPlan.error.code, message: requestPlan.error.message };
    const status = requestPlan.answer?.status ?? errorEntry(requestPlan.error.code)?.status;
    steps.push({
      step: "policy",
      summary: `the source agent answers ${status} itself: ${refusal.code} (${refusal.message})`,
    });
    return {
      ...head,
      outcome: "refused",
      interception,
      service,
      rules,
      matchedRule,
      ...backendsPart?.fields,
      steps,
      refusal,
    };
  }
  const policy = policyLines(requestPlan, route, input.method);
  steps.push({ step: "policy", summary: `policy: ${policyName(route, requestPlan)}`, details: policy });
  const picked = endpointsOf(input, requestPlan.backend ?? route.self, from, requestPlan.hashKey);
  steps.push(picked.step);
  return {
    ...head,
    outcome: "service",
    interception,
    service,
    rules,
    matchedRule,
    ...backendsPart?.fields,
    policy,
    steps,
    ...picked.fields,
  };
}

function requestFacts(input: ExplainInput): RequestFacts & { grpc: boolean } {
  const q = input.target.indexOf("?");
  return {
    grpc: (input.headers["content-type"] ?? "").startsWith("application/grpc"),
    method: input.method,
    path: q < 0 ? input.target : input.target.slice(0, q),
    query: q < 0 ? "" : input.target.slice(q + 1),
    header: (name) => input.headers[name],
  };
}

// ---------------------------------------------------------------- route rules

interface Condition {
  readonly text: string;
  readonly match: HTTPRouteMatch | GRPCRouteMatch;
  /** What the request has for this condition, for the message. */
  readonly actual: (req: RequestFacts) => string;
}

interface Candidate {
  readonly entry: MatchEntry;
  readonly obj: TrafficObject;
  readonly ruleIndex: number;
  readonly match: number;
  readonly conditions: readonly Condition[];
}

/** Every rule of the port in the data plane's precedence order, each with its verdict. */
function explainRules(
  traffic: readonly TrafficObject[],
  route: ServiceRoute,
  req: RequestFacts & { grpc: boolean },
): { rules: RuleVerdict[]; rulesStep: ExplainStep; matchedRule?: string } {
  const grpc = req.grpc && route.grpcRules.length > 0;
  const kind = grpc ? "GRPCRoute" : "HTTPRoute";
  const candidates = candidatesOf(traffic, kind, route).sort((a, b) => compareRank(a.entry, b.entry));
  // The same entries as the snapshot's, or the explanation would be of another configuration.
  const compiled = grpc ? route.grpcRules : route.httpRules;
  if (
    candidates.length !== compiled.length ||
    candidates.some((c, i) => c.entry.rule.name !== compiled[i]!.rule.name)
  ) {
    throw new Error(`the rules of ${route.id}:${route.port} do not match the snapshot's: explain cannot follow them`);
  }
  if (candidates.length === 0) {
    return { rules: [], rulesStep: { step: "route", summary: `no ${kind} on ${route.id}:${route.port}` } };
  }
  const rules: RuleVerdict[] = [];
  let matchedRule: string | undefined;
  for (const c of candidates) {
    const matched = c.entry.matches(req);
    const failed = matched
      ? []
      : c.conditions
          .filter((cond) => !compileMatch(c.obj, c.ruleIndex, cond.match).matches(req))
          .map((cond) => `${cond.text} (request: ${cond.actual(req)})`);
    rules.push({ rule: c.entry.rule.name, match: c.match, matched, failed });
    if (matched) {
      matchedRule = c.entry.rule.name;
      break;
    }
  }
  const details = rules.map((r) =>
    r.matched
      ? `${r.rule} match ${r.match}: matched`
      : `${r.rule} match ${r.match}: did not match: ${r.failed.join("; ")}`,
  );
  const summary = matchedRule
    ? `${kind} rule ${matchedRule} (${rules.length === 1 ? "the first tried" : `after ${rules.length - 1} earlier match(es) that did not match`})`
    : `no ${kind} rule matches: the agent answers 404 (${AgentErrors.NO_ROUTE.code})`;
  return { rules, rulesStep: { step: "route", summary, details }, matchedRule };
}

/** Each match of each rule of the routes attached to this Service port, compiled by the snapshot's compiler. */
function candidatesOf(traffic: readonly TrafficObject[], kind: string, route: ServiceRoute): Candidate[] {
  const out: Candidate[] = [];
  for (const obj of traffic) {
    if (obj.kind !== kind) continue;
    const spec = obj.spec as { parentRefs: { name: string; namespace?: string; port?: number }[]; rules: unknown[] };
    // Attached once per parentRef naming this port (as the snapshot binds them).
    const attached = spec.parentRefs.filter(
      (p) =>
        `${p.name}.${p.namespace ?? obj.namespace}` === route.id && (p.port === undefined || p.port === route.port),
    ).length;
    for (let n = 0; n < attached; n++) {
      spec.rules.forEach((rule, ruleIndex) => {
        const matches = (rule as { matches: (HTTPRouteMatch | GRPCRouteMatch)[] }).matches;
        matches.forEach((m, match) => {
          out.push({
            entry: compileMatch(obj, ruleIndex, m),
            obj,
            ruleIndex,
            match,
            conditions: conditionsOf(kind, m),
          });
        });
      });
    }
  }
  return out;
}

/** One match of one rule as compileRoutes compiles it: its rank and name are those of the snapshot's entry. */
function compileMatch(obj: TrafficObject, ruleIndex: number, match: unknown): MatchEntry {
  const spec = obj.spec as { rules: { matches: unknown[] }[] };
  // Earlier rules stay, with no match: the rule keeps its index (its name and rank).
  const rules = spec.rules.slice(0, ruleIndex + 1).map((r, i) => ({ ...r, matches: i === ruleIndex ? [match] : [] }));
  const parent = { kind: "Service", name: "explain" };
  const compiled = compileRoutes([{ ...obj, spec: { ...obj.spec, parentRefs: [parent], rules } } as TrafficObject]);
  const entries = [...(obj.kind === "GRPCRoute" ? compiled.grpc : compiled.http).values()][0];
  if (entries?.length !== 1) throw new Error(`${obj.namespace}/${obj.name} rule ${ruleIndex}: no single entry`);
  return entries[0]!;
}

/** A match split into its conditions, each a match of its own. */
function conditionsOf(kind: string, m: HTTPRouteMatch | GRPCRouteMatch): Condition[] {
  const out: Condition[] = [];
  if (kind === "HTTPRoute") {
    const h = m as HTTPRouteMatch;
    if (h.path && !(h.path.type === "PathPrefix" && h.path.value === "/")) {
      out.push({ text: `path ${h.path.type} ${h.path.value}`, match: { path: h.path }, actual: (r) => r.path });
    }
    if (h.method) out.push({ text: `method ${h.method}`, match: { method: h.method }, actual: (r) => r.method });
    for (const q of h.queryParams ?? []) {
      out.push({
        text: `query ${q.name} ${q.type === "Exact" ? "=" : "~"} ${q.value}`,
        match: { queryParams: [q] },
        actual: (r) => {
          const v = new URLSearchParams(r.query).get(q.name);
          return v === null ? "none" : JSON.stringify(v);
        },
      });
    }
  } else {
    const g = m as GRPCRouteMatch;
    if (g.method) {
      const text = [g.method.service, g.method.method].filter((x) => x !== undefined).join("/");
      out.push({ text: `gRPC method ${g.method.type} ${text}`, match: { method: g.method }, actual: (r) => r.path });
    }
  }
  for (const header of m.headers ?? []) {
    out.push({
      text: `header ${header.name} ${header.type === "Exact" ? "=" : "~"} ${header.value}`,
      match: { headers: [header] },
      actual: (r) => {
        const v = r.header(header.name.toLowerCase());
        return v === undefined ? "none" : JSON.stringify(v);
      },
    });
  }
  return out;
}

// ---------------------------------------------------------------- backends

function heaviest(rule: Rule): Backend | undefined {
  let best: Backend | undefined;
  for (const b of rule.backends) if (!best || b.weight > best.weight) best = b;
  return best;
}

/**
 * Chance for the plan: its first draw (the rule's weights) lands in the middle of `assumed`'s share;
 * every later draw (fault delay and abort, mirror) is just under 1, so only a 100 % one happens.
 */
function draws(rule: Rule | undefined, assumed: Backend | undefined): () => number {
  const later = 1 - Number.EPSILON;
  if (!rule || !assumed) return () => later;
  let before = 0;
  for (const b of rule.backends) {
    if (b === assumed) break;
    before += b.weight;
  }
  let first = true;
  return () => {
    if (!first) return later;
    first = false;
    return (before + assumed.weight / 2) / rule.totalWeight;
  };
}

function backendShares(rule: Rule, assumed: Backend | undefined) {
  const backends: BackendShare[] = rule.backends.map((b) => ({
    service: `${b.route.id}:${b.route.port}`,
    weight: b.weight,
    share: rule.totalWeight > 0 ? b.weight / rule.totalWeight : 0,
    assumed: b === assumed,
  }));
  const missingBackendWeight = rule.totalWeight - rule.backends.reduce((sum, b) => sum + b.weight, 0);
  const percent = (x: number) => `${Math.round(x * 1000) / 10}%`;
  const details = backends.map(
    (b) =>
      `${b.service} weight ${b.weight} (${percent(b.share)})${b.assumed && backends.length > 1 ? " ← explained below" : ""}`,
  );
  if (missingBackendWeight > 0) {
    details.push(
      `weight ${missingBackendWeight} (${percent(missingBackendWeight / rule.totalWeight)}) names no known Service: those requests get 500 (${AgentErrors.BACKEND_NOT_FOUND.code})`,
    );
  }
  const summary =
    backends.length === 0
      ? `no backend exists: every request gets 500 (${AgentErrors.BACKEND_NOT_FOUND.code})`
      : backends.length === 1 && missingBackendWeight === 0
        ? `backend ${backends[0]!.service} (weight ${backends[0]!.weight}, all requests)`
        : `one of ${backends.length + (missingBackendWeight > 0 ? 1 : 0)} by weight; this explanation follows ${backends.find((b) => b.assumed)?.service} (the heaviest)`;
  const single = backends.length === 1 && missingBackendWeight === 0;
  return {
    step: { step: "backend", summary, ...(single ? {} : { details }) } satisfies ExplainStep,
    fields: { backends, ...(missingBackendWeight > 0 ? { missingBackendWeight } : {}) },
  };
}

// ---------------------------------------------------------------- policy and endpoints

function policyName(route: ServiceRoute, plan: Proxying): string {
  const parent = route.hasPolicy
    ? `TrafficPolicy ${route.policy.name} (of ${route.id})`
    : `defaults (${route.id} has no TrafficPolicy)`;
  const backend = plan.backend && plan.backend.route !== route ? plan.backend : undefined;
  if (!backend) return parent;
  const own = backend.policy !== route.policy && backend.policy.name;
  return `${parent}; backend ${backend.route.id}: ${own ? `its TrafficPolicy ${own} (balancing, circuit breaker, outliers)` : "none of its own, the parent's applies"}`;
}

const ms = (v: number | undefined) => (v === undefined ? "none" : `${v} ms`);
const ratio = (r: number) => `${Math.round(r * 1000) / 10}%`;

function policyLines(plan: Proxying, route: ServiceRoute, method: string): string[] {
  const parent = route.policy;
  const guard: CompiledPolicy = plan.backend?.policy ?? parent;
  const lines = [
    `timeouts: request ${ms(plan.requestTimeoutMs)}, per try ${ms(plan.perTryMs)}, connect ${ms(guard.connectTimeoutMs)}`,
  ];
  const r = parent.retry;
  if (!r) lines.push("retries: none (no retries in the policy)");
  else if (!plan.retry) lines.push(`retries: not for ${method} (not idempotent; retryNonIdempotent is off)`);
  else {
    lines.push(
      `retries: up to ${r.attempts} attempts on ${[...r.on].join(",")}, backoff ${r.baseMs}..${r.maxMs} ms, budget ${r.budgetPercent}% (min ${r.budgetMin})`,
    );
  }
  const cb = guard.circuitBreaker;
  const n = (v: number) => (v >= Number.MAX_SAFE_INTEGER || !Number.isFinite(v) ? "unlimited" : String(v));
  lines.push(
    cb
      ? `circuit breaker: max ${n(cb.maxConnections)} connections, ${n(cb.maxPending)} pending, ${n(cb.maxRequests)} requests per endpoint`
      : "circuit breaker: none",
  );
  if (guard.outlier) {
    lines.push(
      `outlier detection: eject after ${n(guard.outlier.consecutive5xx)} consecutive 5xx / ${n(guard.outlier.consecutiveGatewayErrors)} gateway errors, for ${guard.outlier.baseMs} ms and more`,
    );
  }
  const f = parent.fault;
  if (!f) lines.push("faults: none");
  else {
    const when = f.headers.length > 0 ? ` when headers ${f.headers.map((h) => h.name).join(", ")} match` : "";
    const parts = [
      ...(f.delayRatio > 0 ? [`delay ${f.delayMs} ms for ${ratio(f.delayRatio)}`] : []),
      ...(f.abortRatio > 0 ? [`abort ${f.abortHttpStatus ?? f.abortGrpcStatus} for ${ratio(f.abortRatio)}`] : []),
    ];
    lines.push(
      `faults (source agent): ${parts.join(", ") || "none"}${when}${plan.delayMs > 0 ? `; this request: delayed ${plan.delayMs} ms` : ""}`,
    );
  }
  // The destination agent applies the policy of the Service the source agent names (the backend).
  const dest = plan.backend?.route ?? route;
  const rl = dest.hasPolicy ? dest.policy.rateLimit : undefined;
  lines.push(
    rl
      ? `rate limit (destination agent, ${dest.id}): ${Math.round(1_000_000 / rl.intervalUs)}/s, burst ${rl.burst}${rl.perSource ? ", per source workload" : ""}`
      : `rate limit: none on ${dest.id}`,
  );
  lines.push(`load balancer: ${guard.lb.type}${guard.lb.localityToleranceMs !== undefined ? ", locality" : ""}`);
  if (plan.mirror) lines.push(`mirror: to ${plan.mirror.route.id} (always)`);
  else if (plan.rule?.mirror)
    lines.push(`mirror: ${ratio(plan.rule.mirror.ratio)} to ${plan.rule.mirror.backend.route.id}`);
  lines.push("authorization: enforced by the destination pod's agent (AuthorizationPolicy), not on this side");
  return lines;
}

function endpointsOf(input: ExplainInput, backend: Backend, from: PodContext, hashKey?: string) {
  const next = input.nextEndpoint(backend, hashKey ?? (backend.policy.lb.hashSourceIp ? from.pod.ip : undefined));
  const nextEp = typeof next === "string" ? undefined : next;
  const endpoints: EndpointView[] = backend.route.endpoints.map((e) => ({
    address: `${e.ip}:${e.port}`,
    pod: e.pod,
    node: e.node,
    ejected: input.ejected(e),
    next: e === nextEp,
  }));
  const nextText =
    typeof next === "string" ? next : next ? `${next.ip}:${next.port}` : "none: no endpoint can be picked";
  const step: ExplainStep = {
    step: "endpoints",
    summary:
      endpoints.length === 0
        ? `${backend.route.id}:${backend.route.port} has no endpoint: 503 (${AgentErrors.NO_ENDPOINT.code})`
        : `${endpoints.length} endpoint(s) of ${backend.route.id}:${backend.route.port} (${backend.policy.lb.type}); next pick: ${nextText}`,
    details: endpoints.map(
      (e) =>
        `${e.address} pod ${e.pod || "?"} on ${e.node || "?"}${e.node === input.snapshot.node ? " (this node)" : ""}${e.ejected ? " (ejected)" : ""}${e.next ? " ← next" : ""}`,
    ),
  };
  return { fields: { endpoints, next: nextText }, step };
}
