// One HTTP request through the agent, written once for HTTP/1.1, HTTP/2 and gRPC, as a chain of
// small links (linkerd2-proxy's layer stack, grpc-js's ResolvingCall → RetryingCall →
// LoadBalancingCall):
//
//   resolve (resolve.ts)  the connection's target under the configuration in force
//   authorize (authorize.ts)  destination side: the request normalised, AuthorizationPolicy applied
//   plan    (plan.ts)     route rule, backend by weight, fault, rate limit, deadlines, retry policy
//   fault / refusal       an injected delay; the agent's own answer when the plan says so
//   mirror  (mirror.ts)   a copy to another backend
//   (an HTTP/1.1 Upgrade takes the same links; only a 101 turns it into a pipe: downstream-upgrade.ts)
//   call    (call.ts)     attempts: endpoint, lease, send (send.ts, attempt-*.ts), retry (retry.ts)
//   answer  (respond.ts)  the upstream's answer or the agent's error (errors.ts)
//   report  (record.ts)   metrics, service-graph edges, access log, spans — once, at the end
//
// Spans (trace.ts) span the chain: the trace is decided as the request arrives (so a refused
// request has its span too), the headers sent on carry it, each attempt of the call is a CLIENT
// span, and the spans are built and exported when the request is reported.

import { AgentError, AgentErrors } from "../../errors.ts";
import type { DataplaneContext } from "../context.ts";
import type { ProxyTarget } from "../pod.ts";
import { endpointOf } from "../snapshot.ts";
import { authorizeRequest } from "./authorize.ts";
import { RequestBody } from "./body.ts";
import { RetryingCall } from "./call.ts";
import type { Downstream } from "./downstream.ts";
import { clientError } from "./errors.ts";
import { delayAtLeast } from "./fault-delay.ts";
import { applyHeaderOps, endToEnd, ensureRequestId, forwardFor, headerValue } from "./headers.ts";
import { sendMirror } from "./mirror.ts";
import { type PlanEnv, type PlanRequest, planRequest } from "./plan.ts";
import { newRecord, type RequestRecord, reportLater } from "./record.ts";
import { type Resolved, resolveTarget } from "./resolve.ts";
import { reply } from "./respond.ts";
import { propagateTrace, startTrace } from "./trace.ts";

export async function proxyRequest(ctx: DataplaneContext, down: Downstream, bound: ProxyTarget): Promise<void> {
  const target = resolveTarget(ctx.snapshot(), bound, down.headers);
  if (!target) {
    // The Service was removed while this connection stayed open.
    down.fail(clientError(new AgentError(AgentErrors.NO_ENDPOINT, "the service is gone")));
    return;
  }
  const rec = newRecord(down, target);
  startTrace(ctx, down, target, rec);
  try {
    await handle(ctx, down, target, rec);
  } finally {
    reportLater(ctx, down, target, rec);
  }
}

async function handle(ctx: DataplaneContext, down: Downstream, target: Resolved, rec: RequestRecord): Promise<void> {
  if (target.direction === "inbound") {
    // A pod failing its active health check: refused as undelivered, so a caller's agent tries
    // another endpoint, also on a tunnel it opened before the check failed.
    const endpoint = endpointOf(target.route, target.to.pod.ip, target.port);
    if (endpoint && ctx.shared.isUnhealthy(endpoint.slot)) {
      const where = `${endpoint.ip}:${endpoint.port}`;
      return reply(ctx, down, rec, new AgentError(AgentErrors.ENDPOINT_UNHEALTHY, where));
    }
  }
  const authorized = await authorizeRequest(ctx, target, down);
  if (!authorized.ok) {
    rec.authorizationPolicy = authorized.policy;
    return reply(ctx, down, rec, authorized.error);
  }
  const headers = endToEnd(down.headers, true);
  // An absolute-form target's authority replaces the Host header (RFC 9112 §3.2.2).
  if (authorized.authority !== down.authority && headers.host !== undefined) headers.host = authorized.authority;
  for (const name of authorized.consumed) delete headers[name];
  rec.requestId = ensureRequestId(headers);
  propagateTrace(rec, headers);
  const plan = planRequest(target, requestFacts(down, authorized.target), planEnv(ctx));
  rec.route = plan.rule?.name;
  const service = rec.peers.destinationService;
  if (plan.delayMs > 0) {
    ctx.metrics.faults.labels(service, "delay").inc();
    await delayAtLeast(plan.delayMs);
    if (down.gone) return;
  }
  if (plan.kind === "refuse") {
    if (plan.error.code === AgentErrors.FAULT_ABORT.code) ctx.metrics.faults.labels(service, "abort").inc();
    if (plan.error.code === AgentErrors.RATE_LIMITED.code) ctx.metrics.rateLimited.labels(service).inc();
    return reply(ctx, down, rec, plan.error, plan.answer);
  }
  const caller = callerAddress(target);
  if (caller) forwardFor(headers, caller, plan.policy.forwardedFor);
  const certificate = verifiedCaller(ctx, target);
  if (certificate) headers["x-forwarded-client-cert"] = certificate;
  applyHeaderOps(headers, plan.rule?.requestHeaders);
  // Kept (up to the plan's cap) for a failover after a connect failure, a retry or a mirror.
  const body = new RequestBody(down.body, plan.keptBodyBytes);
  if (plan.mirror && !down.upgrade) void sendMirror(ctx, plan.from, plan.mirror, down, headers, body);
  const { method, grpc, upgrade } = down;
  const up = { method, target: authorized.target, authority: authorized.authority, grpc, headers, body, upgrade };
  await new RetryingCall(ctx, down, target, plan, rec, up).run();
}

/**
 * The address the first agent on a request's way saw it come from: the source pod on the way
 * out; a caller outside the mesh on the way in. Through the tunnel the source agent has already
 * added it.
 */
function callerAddress(target: Resolved): string | undefined {
  if (target.direction === "outbound") return target.from.pod.ip;
  return target.caller.viaTunnel ? undefined : target.caller.address;
}

/**
 * The caller's identity as mTLS proved it, for the app (Envoy's x-forwarded-client-cert,
 * SANITIZE_SET): `By=<this pod's identity>;URI=<the caller's>`. None for a plaintext caller.
 */
function verifiedCaller(ctx: DataplaneContext, target: Resolved): string | undefined {
  if (target.direction !== "inbound" || !target.caller.principal) return undefined;
  const pod = target.to.pod;
  const own = ctx.keyring.get(`${pod.namespace}/${pod.serviceAccount || "default"}`)?.spiffeId;
  return `${own ? `By=${own};` : ""}URI=${target.caller.principal}`;
}

function requestFacts(down: Downstream, target: string): PlanRequest {
  const q = target.indexOf("?");
  return {
    grpc: down.grpc,
    method: down.method,
    path: q < 0 ? target : target.slice(0, q),
    query: q < 0 ? "" : target.slice(q + 1),
    header: (name) => headerValue(down.headers, name),
  };
}

const planEnvs = new WeakMap<DataplaneContext, PlanEnv>();

/** Chance and the shared token buckets, for the plan (one per context, not per request). */
function planEnv(ctx: DataplaneContext): PlanEnv {
  let env = planEnvs.get(ctx);
  if (!env) {
    env = {
      random: Math.random,
      rateLimitWaitUs: (bucket, limit) => {
        const nowUs = (performance.timeOrigin + performance.now()) * 1000;
        return ctx.shared.rateLimit(bucket, nowUs, limit.intervalUs, limit.burst);
      },
    };
    planEnvs.set(ctx, env);
  }
  return env;
}
