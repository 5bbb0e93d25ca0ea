// Enforcing AuthorizationPolicy at the destination's agent: one decision per connection that is
// forwarded as bytes (here) or per HTTP request (http/authorize.ts), counted and explained the
// same way for both.

import { AgentError, AgentErrors } from "../../errors.ts";
import type { DataplaneContext } from "../context.ts";
import type { Caller, PodContext } from "../pod.ts";
import { type AuthzDecision, authorize, type WorkloadAuthorization } from "./authorization.ts";
import type { WorkloadAuthentication } from "./request-authentication.ts";

/** The policies that select the pod, if any. */
export function podAuthorization(ctx: DataplaneContext, to: PodContext): WorkloadAuthorization | undefined {
  return ctx.snapshot().authorization.forPod(to.pod.ip, to.pod.namespace);
}

/** Counts the decision; a denial becomes the error the caller gets, naming the policy. */
export function enforce(ctx: DataplaneContext, service: string, decision: AuthzDecision): AgentError | undefined {
  for (const policy of decision.audited) ctx.metrics.authzAudited.labels(service, policy).inc();
  if (decision.allowed) return undefined;
  const reason = decision.policy ? "deny_policy" : "no_allow_match";
  ctx.metrics.authzDenied.labels(service, decision.policy ?? "", reason).inc();
  return new AgentError(
    AgentErrors.AUTHZ_DENIED,
    decision.policy
      ? `AuthorizationPolicy ${decision.policy} denies it`
      : "no ALLOW AuthorizationPolicy of the workload matches it",
  );
}

/** The RequestAuthentications' JWT rules for the pod, if any. */
export function podAuthentication(ctx: DataplaneContext, to: PodContext): WorkloadAuthentication | undefined {
  return ctx.snapshot().requestAuthentication.forPod(to.pod.ip, to.pod.namespace);
}

/** A request without the valid JWT it needs: a 401. */
export function unauthenticated(
  ctx: DataplaneContext,
  service: string,
  kind: typeof AgentErrors.JWT_INVALID | typeof AgentErrors.JWT_REQUIRED,
  why: string,
): AgentError {
  ctx.metrics.authzDenied.labels(service, "", kind === AgentErrors.JWT_INVALID ? "jwt_invalid" : "jwt_required").inc();
  return new AgentError(kind, why);
}

/** A request refused before any policy could be evaluated (it reads more than one way). */
export function ambiguous(ctx: DataplaneContext, service: string, why: string): AgentError {
  ctx.metrics.authzDenied.labels(service, "", "ambiguous_request").inc();
  return new AgentError(AgentErrors.AUTHZ_AMBIGUOUS, why);
}

/** A connection forwarded as bytes: only who calls and the port are known (no method, no path). */
export function authorizeConnection(
  ctx: DataplaneContext,
  to: PodContext,
  port: number,
  caller: Caller,
  service: string,
): { error?: AgentError; policy?: string } {
  const w = podAuthorization(ctx, to);
  if (!w) return {};
  const decision = authorize(w, { principal: caller.principal, sourceIp: caller.sourceIp, port });
  return { error: enforce(ctx, service, decision), policy: decision.allowed ? undefined : decision.policy };
}
