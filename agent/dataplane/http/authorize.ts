// The authorization link of the request chain, on the destination's side only: the request is
// normalised (authz/request-path.ts) and matched against the AuthorizationPolicies that select
// the pod (authz/authorization.ts). An allowed request goes on in its normalised form, so the
// app reads the path the policies saw. Pods no policy selects are left exactly as they were.

import type { AgentError } from "../../errors.ts";
import { authorize } from "../authz/authorization.ts";
import { ambiguous, enforce, podAuthorization } from "../authz/enforce.ts";
import { normaliseRequestTarget, originForm } from "../authz/request-path.ts";
import type { DataplaneContext } from "../context.ts";
import type { Downstream } from "./downstream.ts";
import { countHeader, headerValue } from "./headers.ts";
import type { Resolved } from "./resolve.ts";

export type Authorized =
  | { readonly ok: true; readonly target: string; readonly authority: string }
  | { readonly ok: false; readonly error: AgentError; readonly policy?: string };

/** Headers that let an app act on another method than the request's (Express's method-override and the like). */
const METHOD_OVERRIDES = ["x-http-method-override", "x-http-method", "x-method-override"];

export function authorizeRequest(ctx: DataplaneContext, target: Resolved, down: Downstream): Authorized {
  const asSent: Authorized = { ok: true, target: down.target, authority: down.authority };
  if (target.direction !== "inbound") return asSent;
  const policies = podAuthorization(ctx, target.to);
  if (!policies) return asSent;
  const service = target.route?.id ?? `${target.to.workload.name}.${target.to.workload.namespace}`;
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
  const decision = authorize(policies, {
    principal: target.caller.principal,
    sourceIp: target.caller.sourceIp,
    port: target.port,
    http: {
      method: down.method,
      path: normalised.path,
      host: hostOf(authority),
      header: (name) => headerValue(down.headers, name),
    },
  });
  const error = enforce(ctx, service, decision);
  if (error) return { ok: false, error, policy: decision.allowed ? undefined : decision.policy };
  return { ok: true, target: originForm(normalised), authority };
}

/** "Name.Example.:8080" → "name.example": what `hosts` patterns are compared with. */
export function hostOf(authority: string): string {
  const host = authority.startsWith("[")
    ? authority.slice(0, authority.indexOf("]") + 1)
    : authority.replace(/:\d*$/, "");
  return host.toLowerCase().replace(/\.$/, "");
}
