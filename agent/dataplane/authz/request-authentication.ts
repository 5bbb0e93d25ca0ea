// RequestAuthentication at the destination's agent: the JWT a request carries is validated with
// `jose` against the issuer's keys (inline JWKS, or fetched from `jwksUri` and cached), giving the
// request principal `<iss>/<sub>` and the claims AuthorizationPolicy can read. A token that fails
// validation refuses the request; no token at all is left to AuthorizationPolicy.

import type { JWTPayload, JWTVerifyGetKey } from "jose";
import { jose } from "../../../api/jose.ts";
import type { RequestAuthenticationSpec, TrafficObject } from "../../../api/traffic.ts";
import { podIndex } from "../pod-selection.ts";

interface TokenSource {
  /** Lower-case. */
  readonly header: string;
  readonly prefix: string;
}

interface CompiledJwtRule {
  readonly issuer: string;
  readonly audiences?: string[];
  readonly keys: JWTVerifyGetKey;
  readonly sources: readonly TokenSource[];
  readonly forward: boolean;
}

/** The JWT rules of the RequestAuthentications that select one pod. */
export interface WorkloadAuthentication {
  readonly rules: readonly CompiledJwtRule[];
  /** Every place a token may be, across the rules. */
  readonly sources: readonly TokenSource[];
}

export type Authentication =
  | {
      readonly ok: true;
      /** `<iss>/<sub>`; undefined when the request carries no token. */
      readonly principal?: string;
      readonly claims?: JWTPayload;
      /** Headers to remove before the request goes on (the token, unless a rule forwards it). */
      readonly consumed: readonly string[];
    }
  | { readonly ok: false; readonly reason: string };

const DEFAULT_SOURCE: TokenSource = { header: "authorization", prefix: "Bearer " };
/** Asymmetric signatures only: a JWKS of public keys cannot verify an HMAC, nor may "none" pass. */
const ALGORITHMS = [
  "RS256",
  "RS384",
  "RS512",
  "PS256",
  "PS384",
  "PS512",
  "ES256",
  "ES384",
  "ES512",
  "EdDSA",
  "Ed25519",
];
/** Envoy's default clock skew for exp and nbf. */
const CLOCK_TOLERANCE_S = 60;

/** Remote key sets outlive snapshots: a configuration change must not refetch every issuer's keys. */
const remoteKeySets = new Map<string, JWTVerifyGetKey>();

function keysOf(rule: RequestAuthenticationSpec["jwtRules"][number]): JWTVerifyGetKey {
  if (rule.jwks !== undefined) return jose().createLocalJWKSet(JSON.parse(rule.jwks));
  const uri = rule.jwksUri!;
  let keys = remoteKeySets.get(uri);
  if (!keys) {
    keys = jose().createRemoteJWKSet(new URL(uri), {
      timeoutDuration: 5000,
      cooldownDuration: 30_000,
      cacheMaxAge: 600_000,
    });
    if (remoteKeySets.size < 1024) remoteKeySets.set(uri, keys);
  }
  return keys;
}

function compileRule(rule: RequestAuthenticationSpec["jwtRules"][number]): CompiledJwtRule {
  return {
    issuer: rule.issuer,
    audiences: rule.audiences,
    keys: keysOf(rule),
    sources: rule.fromHeaders?.map((h) => ({ header: h.name.toLowerCase(), prefix: h.prefix ?? "" })) ?? [
      DEFAULT_SOURCE,
    ],
    forward: rule.forwardOriginalToken,
  };
}

export interface RequestAuthenticationIndex {
  forPod(ip: string, namespace: string): WorkloadAuthentication | undefined;
}

export const NO_REQUEST_AUTHENTICATION: RequestAuthenticationIndex = { forPod: () => undefined };

export function compileRequestAuthentication(
  traffic: readonly TrafficObject[],
  services: readonly { name: string; namespace: string; endpoints: readonly { ip: string }[] }[],
): RequestAuthenticationIndex {
  const objects = traffic.flatMap((o) =>
    o.kind === "RequestAuthentication"
      ? [{ namespace: o.namespace, targetRefs: o.spec.targetRefs, value: o.spec.jwtRules.map(compileRule) }]
      : [],
  );
  if (objects.length === 0) return NO_REQUEST_AUTHENTICATION;
  return {
    forPod: podIndex(objects, services, (selected): WorkloadAuthentication => {
      const rules = selected.flat();
      const sources = [...new Map(rules.flatMap((r) => r.sources).map((s) => [`${s.header}|${s.prefix}`, s])).values()];
      return { rules, sources };
    }),
  };
}

/** The request's headers, as authenticate needs them. */
export interface TokenCarrier {
  header(name: string): string | undefined;
  /** How many times the header occurs. */
  count(name: string): number;
}

export async function authenticate(w: WorkloadAuthentication, req: TokenCarrier): Promise<Authentication> {
  const found: { token: string; source: TokenSource }[] = [];
  for (const source of w.sources) {
    const value = req.header(source.header);
    if (value === undefined) continue;
    if (req.count(source.header) > 1) return { ok: false, reason: `more than one ${source.header} header` };
    if (!value.toLowerCase().startsWith(source.prefix.toLowerCase())) continue;
    found.push({ token: value.slice(source.prefix.length).trim(), source });
  }
  if (found.length === 0) return { ok: true, consumed: [] };
  const tokens = new Set(found.map((f) => f.token));
  if (tokens.size > 1) return { ok: false, reason: "more than one token" };
  const [{ token }] = found as [(typeof found)[0]];
  let issuer: unknown;
  try {
    issuer = jose().decodeJwt(token).iss;
  } catch {
    return { ok: false, reason: "the token is not a JWT" };
  }
  // Read before any signature check: anything but a string (an object, found by fuzzing) is refused.
  if (issuer !== undefined && typeof issuer !== "string")
    return { ok: false, reason: "the token's iss is not a string" };
  const headers = new Set(found.map((f) => f.source.header));
  const rules = w.rules.filter((r) => r.issuer === issuer && r.sources.some((s) => headers.has(s.header)));
  if (rules.length === 0) return { ok: false, reason: `no rule accepts tokens from issuer ${issuer ?? "(none)"}` };
  let reason = "";
  for (const rule of rules) {
    try {
      const { payload } = await jose().jwtVerify(token, rule.keys, {
        issuer: rule.issuer,
        audience: rule.audiences,
        algorithms: ALGORITHMS,
        clockTolerance: CLOCK_TOLERANCE_S,
      });
      const consumed = rule.forward ? [] : [...headers];
      return { ok: true, principal: `${payload.iss}/${payload.sub ?? ""}`, claims: payload, consumed };
    } catch (err) {
      reason = (err as Error).message;
    }
  }
  return { ok: false, reason };
}

/** A claim as strings, for matching: a string, a number or a boolean, or a list of them. */
export function claimValues(claims: JWTPayload | undefined, name: string): string[] | undefined {
  const value = claims?.[name];
  if (value === undefined || value === null) return undefined;
  const items = Array.isArray(value) ? value : [value];
  return items.filter((v) => ["string", "number", "boolean"].includes(typeof v)).map(String);
}
