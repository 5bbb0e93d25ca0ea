// The authorization link of the request chain, on the destination's side only: the request's JWT
// validated (authz/request-authentication.ts), the request normalised (authz/request-path.ts) and
// matched against the AuthorizationPolicies that select the pod (authz/authorization.ts). An
// allowed request goes on in its normalised form, so the app reads the path the policies saw.
// Pods no policy selects are left exactly as they were.

import { type AgentError, AgentErrors } from "../../errors.ts";
import { authorize } from "../authz/authorization.ts";
import { ambiguous, enforce, podAuthentication, podAuthorization, unauthenticated } from "../authz/enforce.ts";
import { type Authentication, authenticate, claimValues } from "../authz/request-authentication.ts";
import { normaliseRequestTarget, originForm } from "../authz/request-path.ts";
import type { DataplaneContext } from "../context.ts";
import type { Downstream } from "./downstream.ts";
import { countHeader, headerValue } from "./headers.ts";
import type { Resolved } from "./resolve.ts";

export type Authorized =
  | {
      readonly ok: true;
      readonly target: string;
      readonly authority: string;
      /** Headers not to forward (a validated token the rule does not forward). */
      readonly consumed: readonly string[];
    }
  | { readonly ok: false; readonly error: AgentError; readonly policy?: string };

/** Headers that let an app act on another method than the request's (Express's method-override and the like). */
const METHOD_OVERRIDES = ["x-http-method-override", "x-http-method", "x-method-override"];

export async function authorizeRequest(ctx: DataplaneContext, target: Resolved, down: Downstream): Promise<Authorized> {
  const asSent = { ok: true, target: down.target, authority: down.authority, consumed: [] } as const;
  if (target.direction !== "inbound") return asSent;
  const authentication = podAuthentication(ctx, target.to);
  const policies = podAuthorization(ctx, target.to);
  if (!authentication && !policies) return asSent;
  const service = target.route?.id ?? `${target.to.workload.name}.${target.to.workload.namespace}`;

  let identity: Authentication & { ok: true } = { ok: true, consumed: [] };
  if (authentication) {
    const result = await authenticate(authentication, {
      header: (name) => headerValue(down.headers, name),
      count: (name) => countHeader(down.rawHeaders, name),
    });
    if (!result.ok) return { ok: false, error: unauthenticated(ctx, service, AgentErrors.JWT_INVALID, result.reason) };
    identity = result;
  }
  if (!policies) return { ...asSent, consumed: identity.consumed };

  const refuse = (why: string): Authorized => ({ ok: false, error: ambiguous(ctx, service, why) });
  const override = METHOD_OVERRIDES.find((name) => down.headers[name] !== undefined);
  if (override) return refuse(`the ${override} header names a second method`);
  for (const name of policies.headers) {
    if (countHeader(down.rawHeaders, name) > 1) return refuse(`the ${name} header, which a policy reads, repeats`);
  }
  const host = headerValue(down.headers, "host");
  if (down.protocol === "h2" && host !== undefined && host !== down.authority) {
    return refuse("the host header and :authority differ");
  }
  const normalised = normaliseRequestTarget(down.target);
  if (!normalised.ok) return refuse(normalised.reason);
  const authority = normalised.authority ?? down.authority;
  if (!AUTHORITY.test(authority)) return refuse("the authority is not host[:port]");
  const decision = authorize(policies, {
    principal: target.caller.principal,
    sourceIp: target.caller.sourceIp,
    port: target.port,
    http: {
      method: down.method,
      path: normalised.path,
      host: hostOf(authority),
      header: (name) => headerValue(down.headers, name),
      requestPrincipal: identity.principal,
      claim: (name) => claimValues(identity.claims, name),
    },
  });
  if (!decision.allowed && identity.principal === undefined && policies.readsRequestAuth) {
    // Denied for want of a token the policies ask about: say so as HTTP does (401), not 403.
    enforce(ctx, service, decision);
    return { ok: false, error: unauthenticated(ctx, service, AgentErrors.JWT_REQUIRED, "the request has no token") };
  }
  const error = enforce(ctx, service, decision);
  if (error) return { ok: false, error, policy: decision.allowed ? undefined : decision.policy };
  return { ok: true, target: originForm(normalised), authority, consumed: identity.consumed };
}

/**
 * host[:port] (RFC 3986 §3.2.2: a reg-name or IPv4 address, or an IP literal in brackets): any other
 * authority is refused, since hostOf and the app could read different hosts from it
 * ("admin.internal:80:80", "admin.internal:x" are admin.internal to an app that cuts at the first ':').
 */
export const AUTHORITY = /^(?:\[[0-9A-Za-z:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::\d*)?$/;

/** "Name.Example.:8080" → "name.example": what `hosts` patterns are compared with. */
export function hostOf(authority: string): string {
  const host = authority.startsWith("[")
    ? authority.slice(0, authority.indexOf("]") + 1)
    : authority.replace(/:\d*$/, "");
  return host.toLowerCase().replace(/\.$/, "");
}
