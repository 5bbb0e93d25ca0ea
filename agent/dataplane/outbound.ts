// Outbound: a connection a pod made, redirected to the agent's 15001 listener in that pod.
// Decide first (pure: original destination → plan), then execute: HTTP goes to the L7 proxy
// (http/), anything else is forwarded as bytes after a connect with failover.

import type { Socket } from "node:net";
import { AGENT_PORTS } from "../../api/dataplane.ts";
import { type AgentErrorKind, AgentErrors, errorCode } from "../errors.ts";
import type { Address } from "../sys/linux.ts";
import { tcpEntryPeers } from "./access-log.ts";
import { connectEndpoint } from "./connect.ts";
import type { DataplaneContext } from "./context.ts";
import { detectProtocol } from "./detect.ts";
import type { Endpoint } from "./endpoint.ts";
import { type Peers, UNKNOWN } from "./metrics.ts";
import { tunnelSecurity } from "./mtls.ts";
import { pipeBoth } from "./pipe.ts";
import type { PodContext } from "./pod.ts";
import { routeKey, type ServiceRoute, type Snapshot } from "./snapshot.ts";

export type OutboundPlan =
  | { kind: "refuse"; reason: AgentErrorKind }
  | { kind: "service"; route: ServiceRoute }
  | { kind: "passthrough"; ip: string; port: number };

/** The destination label for traffic that matched no service (Istio calls it PassthroughCluster). */
const PASSTHROUGH = "passthrough";
const PASSTHROUGH_ENDPOINT: Endpoint = {
  ip: "",
  port: 0,
  meshed: false,
  pod: "",
  node: "",
  workload: UNKNOWN,
  namespace: UNKNOWN,
  slot: 0,
};

export function planOutbound(dst: Address, snapshot: Snapshot): OutboundPlan {
  if (AGENT_PORTS.includes(dst.port)) return { kind: "refuse", reason: AgentErrors.LOOP };
  const route = snapshot.routes.get(routeKey(dst.ip, dst.port));
  if (!route) return { kind: "passthrough", ip: dst.ip, port: dst.port };
  // A Service with no endpoints of its own may still route elsewhere (GAMMA parent with rules).
  if (route.endpoints.length === 0 && route.httpRules.length === 0 && route.grpcRules.length === 0) {
    return { kind: "refuse", reason: AgentErrors.NO_ENDPOINT };
  }
  return { kind: "service", route };
}

export async function handleOutbound(ctx: DataplaneContext, from: PodContext, client: Socket, dst: Address) {
  const plan = planOutbound(dst, ctx.snapshot());
  if (plan.kind === "refuse") {
    ctx.metrics.refused.labels("outbound", plan.reason.code).inc();
    client.resetAndDestroy();
    return;
  }
  if (plan.kind === "service" && plan.route.protocol !== "tcp") {
    const declared = plan.route.protocol !== undefined;
    const { protocol, leftover } = await detectProtocol(
      client,
      declared ? ctx.http.headersTimeoutMs : ctx.settings.detectTimeoutMs,
      declared,
    );
    if (protocol === "gone") {
      client.destroy();
      return;
    }
    // A declared HTTP port is HTTP even when the bytes say otherwise: the parser answers 400.
    if ((protocol !== "opaque" || declared) && leftover.length === 0 && !client.readableEnded) {
      ctx.http.serve(client, protocol === "h2" ? "h2" : "http1", {
        direction: "outbound",
        from,
        routeKey: routeKey(dst.ip, dst.port),
      });
      return;
    }
    return forwardOpaque(ctx, from, client, plan, leftover);
  }
  await forwardOpaque(ctx, from, client, plan);
}

async function forwardOpaque(
  ctx: DataplaneContext,
  from: PodContext,
  client: Socket,
  plan: Exclude<OutboundPlan, { kind: "refuse" }>,
  leftover?: Buffer,
): Promise<void> {
  const connected = await connectWithFailover(ctx, from, client, plan);
  const peers: Peers = {
    reporter: "source",
    sourceWorkload: from.workload.name,
    sourceNamespace: from.workload.namespace,
    destinationService: plan.kind === "service" ? plan.route.id : PASSTHROUGH,
    destinationWorkload: connected?.endpoint.workload ?? UNKNOWN,
    destinationNamespace: connected?.endpoint.namespace ?? UNKNOWN,
    security: connected ? tunnelSecurity(ctx, from, connected.endpoint) : "none",
  };
  if (!connected || client.destroyed) {
    connected?.upstream.destroy();
    if (!client.destroyed) {
      ctx.metrics.refused.labels("outbound", AgentErrors.ALL_ENDPOINTS_FAILED.code).inc();
      ctx.edges.connection(peers, true, 0, 0);
      client.resetAndDestroy();
    }
    return;
  }
  const { upstream, endpoint } = connected;
  const m = ctx.metrics.forConnection(peers);
  m.opened.inc();
  if (leftover?.length) upstream.write(leftover);
  const started = performance.now();
  const policy = plan.kind === "service" ? plan.route.policy : undefined;
  const result = await pipeBoth(client, upstream, policy?.idleTimeoutMs);
  m.closed.inc();
  m.bytesFromDownstream.inc(result.bytesFromDownstream);
  m.bytesFromUpstream.inc(result.bytesFromUpstream);
  ctx.edges.connection(peers, false, result.bytesFromDownstream, result.bytesFromUpstream);
  if (ctx.accessLog.wants(policy, peers.sourceNamespace, peers.destinationNamespace)) {
    ctx.accessLog.write({
      ...tcpEntryPeers(peers),
      sourceIp: from.pod.ip,
      upstream: `${endpoint.ip}:${endpoint.port}`,
      durationMs: Math.round((performance.now() - started) * 1000) / 1000,
      bytesReceived: result.bytesFromDownstream,
      bytesSent: result.bytesFromUpstream,
    });
  }
}

/**
 * Connects to an endpoint this connection has not tried, until one accepts (passthrough has
 * exactly one), or the client gives up meanwhile.
 */
async function connectWithFailover(
  ctx: DataplaneContext,
  from: PodContext,
  client: Socket,
  plan: Exclude<OutboundPlan, { kind: "refuse" }>,
): Promise<{ upstream: Socket; endpoint: Endpoint } | undefined> {
  const backend = plan.kind === "service" ? plan.route.self : undefined;
  const next = (tried: readonly Endpoint[]): Endpoint | undefined =>
    backend
      ? ctx.picker.pick(backend, { tried, hashKey: from.pod.ip, nowMs: Date.now() })
      : plan.kind === "passthrough" && tried.length === 0
        ? { ...PASSTHROUGH_ENDPOINT, ip: plan.ip, port: plan.port }
        : undefined;
  const connectTimeoutMs = backend?.policy.connectTimeoutMs ?? ctx.settings.connectTimeoutMs;
  const tried: Endpoint[] = [];
  for (let ep = next(tried); ep && !client.destroyed; ep = next(tried)) {
    tried.push(ep);
    try {
      return { upstream: await connectEndpoint(ctx, from, ep, connectTimeoutMs), endpoint: ep };
    } catch (err) {
      ctx.metrics.connectFailures.labels("outbound", errorCode(err)).inc();
      ctx.log.debug({ pod: from.key, endpoint: `${ep.ip}:${ep.port}`, err: (err as Error).message }, "connect failed");
    }
  }
  return undefined;
}
