// AuthorizationPolicy at the destination's agent: compiled once per snapshot, then a pure
// decision per request (HTTP, gRPC) or per connection (TCP). Istio's evaluation order: any
// matching DENY policy denies; then, if ALLOW policies select the workload, one must match;
// AUDIT policies only record that they matched.
//
// Where a value could be read two ways, the reading that makes the policy stricter is taken:
// - a connection has no method, path, host or headers: a DENY rule that names them still
//   matches it (the connection is denied), an ALLOW rule does not (Istio's rule for TCP);
// - paths and methods: an app may read `/Admin` or `/admin.` as `/admin` (case-insensitive or
//   trailing-dot-stripping servers), or `get` as `GET`. DENY and AUDIT rules compare them loosely
//   (case folded, trailing dots dropped); ALLOW rules compare them exactly. Negated fields the
//   other way round. Either way no spelling of a path slips past a rule.

import { BlockList } from "node:net";
import type { AuthorizationPolicySpec, TrafficObject } from "../../../api/traffic.ts";
import { namespaceOfIdentity } from "../mtls.ts";
import { podIndex } from "../pod-selection.ts";

/** What a policy is matched against. `http` is absent for a TCP connection. */
export interface AuthzRequest {
  /** The caller's SPIFFE id, proven by mTLS; undefined for a plaintext caller. */
  readonly principal?: string;
  readonly sourceIp?: string;
  readonly port: number;
  readonly http?: {
    readonly method: string;
    /** Normalised (request-path.ts), without the query. */
    readonly path: string;
    /** Lower-case, without port or trailing dot. */
    readonly host: string;
    header(name: string): string | undefined;
    /** `<iss>/<sub>` of the JWT a RequestAuthentication validated; undefined without one. */
    readonly requestPrincipal?: string;
    /** A claim of that JWT, as strings (a list claim gives its items). */
    claim(name: string): readonly string[] | undefined;
  };
}

export type AuthzDecision =
  | { readonly allowed: true; readonly audited: readonly string[] }
  | {
      readonly allowed: false;
      /** The DENY policy that matched; undefined when no ALLOW policy did. */
      readonly policy?: string;
      readonly audited: readonly string[];
    };

type Action = AuthorizationPolicySpec["action"];
type Test = (req: AuthzRequest) => boolean;

interface CompiledAuthzPolicy {
  /** "namespace/name". */
  readonly name: string;
  readonly action: Action;
  readonly matches: Test;
  /** Header names the rules read (lower-case): a request repeating one is ambiguous. */
  readonly headers: readonly string[];
  /** The rules read the request's JWT (requestPrincipals, claims): without one, a denial is a 401. */
  readonly readsRequestAuth: boolean;
}

/** The policies that select one workload. */
export interface WorkloadAuthorization {
  readonly deny: readonly CompiledAuthzPolicy[];
  readonly allow: readonly CompiledAuthzPolicy[];
  readonly audit: readonly CompiledAuthzPolicy[];
  readonly headers: ReadonlySet<string>;
  readonly readsRequestAuth: boolean;
}

export function authorize(w: WorkloadAuthorization, req: AuthzRequest): AuthzDecision {
  const audited = w.audit.filter((p) => p.matches(req)).map((p) => p.name);
  const denied = w.deny.find((p) => p.matches(req));
  if (denied) return { allowed: false, policy: denied.name, audited };
  if (w.allow.length > 0 && !w.allow.some((p) => p.matches(req))) return { allowed: false, audited };
  return { allowed: true, audited };
}

// ---------------------------------------------------------------- compiling

/** Loose readings: what a lenient app may take a path or a method to be. */
const loosePath = (p: string) => p.toLowerCase().replace(/\.+(?=\/|$)/g, "");
const looseMethod = (m: string) => m.toUpperCase();
const exactly = (v: string) => v;
const hostReading = (h: string) => h.toLowerCase();

/** `*`, `prefix*`, `*suffix` or an exact value, compared after `read` on both sides. */
function patternTest(patterns: readonly string[], read: (v: string) => string): (value: string) => boolean {
  const tests = patterns.map((raw): ((v: string) => boolean) => {
    if (raw === "*") return (v) => v !== "";
    if (raw.endsWith("*")) {
      const prefix = read(raw.slice(0, -1));
      return (v) => v.startsWith(prefix);
    }
    if (raw.startsWith("*")) {
      const suffix = read(raw.slice(1));
      return (v) => v.endsWith(suffix);
    }
    const exact = read(raw);
    return (v) => v === exact;
  });
  return (value) => {
    const v = read(value);
    return tests.some((t) => t(v));
  };
}

function blockTest(blocks: readonly string[]): (ip: string) => boolean {
  const list = new BlockList();
  for (const block of blocks) {
    const [address, prefix] = block.split("/");
    if (prefix === undefined) list.addAddress(address!, "ipv4");
    else list.addSubnet(address!, Number(prefix), "ipv4");
  }
  return (ip) => list.check(ip, "ipv4");
}

const namespaceOf = (principal: string | undefined) => (principal ? namespaceOfIdentity(principal) : undefined);

/**
 * One field of a rule. `positive`: the value must match one of the patterns (a missing value
 * does not); negated: it must match none (a missing value matches none). `httpOnly` fields on a
 * TCP connection match when that makes the policy stricter (`tcpMatches`).
 */
function fieldTest<V>(
  get: (req: AuthzRequest) => V | undefined,
  test: (value: V) => boolean,
  positive: boolean,
  tcpMatches: boolean | undefined,
): Test {
  return (req) => {
    if (tcpMatches !== undefined && !req.http) return tcpMatches;
    const value = get(req);
    if (value === undefined) return !positive;
    return positive ? test(value) : !test(value);
  };
}

const all =
  (tests: Test[]): Test =>
  (req) =>
    tests.every((t) => t(req));
const any =
  (tests: Test[]): Test =>
  (req) =>
    tests.some((t) => t(req));

type Rule = AuthorizationPolicySpec["rules"][number];
type Source = NonNullable<Rule["from"]>[number]["source"];
type Operation = NonNullable<Rule["to"]>[number]["operation"];

interface Reads {
  readonly headers: Set<string>;
  requestAuth: boolean;
}

function compileRule(rule: Rule, action: Action, reads: Reads): Test {
  // Stricter reading: loose for what denies or records, exact for what allows; negations flipped.
  const restrictive = action !== "ALLOW";
  const readingOf = (positive: boolean, loose: (v: string) => string) => (positive === restrictive ? loose : exactly);
  const tcp = restrictive; // an HTTP-only field on a connection
  const pair = (
    on: readonly string[] | undefined,
    off: readonly string[] | undefined,
    get: (req: AuthzRequest) => string | undefined,
    loose: (v: string) => string,
    tcpMatches: boolean | undefined,
  ): Test[] => [
    ...(on ? [fieldTest(get, patternTest(on, readingOf(true, loose)), true, tcpMatches)] : []),
    ...(off ? [fieldTest(get, patternTest(off, readingOf(false, loose)), false, tcpMatches)] : []),
  ];
  const source = (s: Source): Test =>
    all([
      ...pair(s.principals, s.notPrincipals, (r) => r.principal, exactly, undefined),
      ...pair(s.namespaces, s.notNamespaces, (r) => namespaceOf(r.principal), exactly, undefined),
      ...(s.ipBlocks ? [fieldTest((r) => r.sourceIp, blockTest(s.ipBlocks), true, undefined)] : []),
      ...(s.notIpBlocks ? [fieldTest((r) => r.sourceIp, blockTest(s.notIpBlocks), false, undefined)] : []),
      ...pair(s.requestPrincipals, s.notRequestPrincipals, (r) => r.http?.requestPrincipal, exactly, tcp),
    ]);
  const operation = (o: Operation): Test =>
    all([
      ...(o.ports
        ? [
            fieldTest(
              (r) => r.port,
              (p: number) => o.ports!.includes(p),
              true,
              undefined,
            ),
          ]
        : []),
      ...(o.notPorts
        ? [
            fieldTest(
              (r) => r.port,
              (p: number) => o.notPorts!.includes(p),
              false,
              undefined,
            ),
          ]
        : []),
      ...pair(o.methods, o.notMethods, (r) => r.http?.method, looseMethod, tcp),
      ...pair(o.paths, o.notPaths, (r) => r.http?.path, loosePath, tcp),
      ...pair(o.hosts, o.notHosts, (r) => r.http?.host, hostReading, tcp),
    ]);
  if (rule.from?.some((f) => f.source.requestPrincipals || f.source.notRequestPrincipals)) reads.requestAuth = true;
  const conditions = (rule.when ?? []).map((c) => {
    const claim = /^request\.auth\.claims\[(.+)\]$/.exec(c.key)?.[1];
    if (claim !== undefined) {
      reads.requestAuth = true;
      const anyItem = (patterns: readonly string[]) => {
        const test = patternTest(patterns, exactly);
        return (items: readonly string[]) => items.some(test);
      };
      return all([
        ...(c.values ? [fieldTest((r) => r.http?.claim(claim), anyItem(c.values), true, tcp)] : []),
        ...(c.notValues ? [fieldTest((r) => r.http?.claim(claim), anyItem(c.notValues), false, tcp)] : []),
      ]);
    }
    const name = /^request\.headers\[(.+)\]$/.exec(c.key)![1]!.toLowerCase();
    reads.headers.add(name);
    return all(pair(c.values, c.notValues, (r) => r.http?.header(name), exactly, tcp));
  });
  return all([
    ...(rule.from ? [any(rule.from.map((f) => source(f.source)))] : []),
    ...(rule.to ? [any(rule.to.map((t) => operation(t.operation)))] : []),
    ...conditions,
  ]);
}

function compileAuthzPolicy(name: string, spec: AuthorizationPolicySpec): CompiledAuthzPolicy {
  const reads: Reads = { headers: new Set(), requestAuth: false };
  const rules = spec.rules.map((r) => compileRule(r, spec.action, reads));
  // No rules: matches nothing (an ALLOW policy without rules denies everything).
  return {
    name,
    action: spec.action,
    matches: any(rules),
    headers: [...reads.headers],
    readsRequestAuth: reads.requestAuth,
  };
}

function forWorkload(policies: readonly CompiledAuthzPolicy[]): WorkloadAuthorization {
  return {
    deny: policies.filter((p) => p.action === "DENY"),
    allow: policies.filter((p) => p.action === "ALLOW"),
    audit: policies.filter((p) => p.action === "AUDIT"),
    headers: new Set(policies.flatMap((p) => p.headers)),
    readsRequestAuth: policies.some((p) => p.readsRequestAuth),
  };
}

/** Which policies select a pod: found by its address (targeted Services) and namespace. */
export interface AuthorizationIndex {
  /** undefined when no policy selects the pod: everything is allowed, nothing is normalised. */
  forPod(ip: string, namespace: string): WorkloadAuthorization | undefined;
}

export const NO_AUTHORIZATION: AuthorizationIndex = { forPod: () => undefined };

/**
 * `services`: each Service's namespace and its endpoints' addresses, so that a policy's
 * targetRefs become the pods it selects (pod-selection.ts). Every policy that selects a pod
 * applies to it, whatever its level.
 */
export function compileAuthorization(
  traffic: readonly TrafficObject[],
  services: readonly { name: string; namespace: string; endpoints: readonly { ip: string }[] }[],
): AuthorizationIndex {
  const policies = traffic.flatMap((o) =>
    o.kind === "AuthorizationPolicy"
      ? [
          {
            namespace: o.namespace,
            targetRefs: o.spec.targetRefs,
            value: compileAuthzPolicy(`${o.namespace}/${o.name}`, o.spec),
          },
        ]
      : [],
  );
  if (policies.length === 0) return NO_AUTHORIZATION;
  return { forPod: podIndex(policies, services, forWorkload) };
}
