// Inbound: connections that arrive at an enrolled pod. Two ways in:
// - 15006, plain: anything the pod's PREROUTING rules redirected (a caller that is not meshed);
// - 15008, the tunnel: a source agent asking us to connect to this pod's workload (in mutual TLS,
//   many tunnels on one connection: tunnel-mux.ts).
// Either way the agent connects to the workload from inside the pod, marked so it is not
// intercepted again. HTTP (declared, detected, or announced by the source agent) goes through the
// L7 proxy's inbound side (rate limits, strict parsing); anything else is forwarded as bytes.

import type { Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import { AGENT_PORTS } from "../../api/dataplane.ts";
import { AgentError, AgentErrors, errorCode } from "../errors.ts";
import type { Address } from "../sys/linux.ts";
import { tcpEntryPeers } from "./access-log.ts";
import { authorizeConnection } from "./authz/enforce.ts";
import type { DataplaneContext } from "./context.ts";
import { detectProtocol } from "./detect.ts";
import { dial } from "./dial.ts";
import { type Peers, UNKNOWN } from "./metrics.ts";
import { acceptSecureTunnel, namespaceOfIdentity } from "./mtls.ts";
import { pipeBoth } from "./pipe.ts";
import type { Caller, PodContext } from "./pod.ts";
import { endpointOf, routeKey } from "./snapshot.ts";
import { acceptTunnel, answerTunnel, type TunnelRequest, tunnelAuthRefusal, tunnelTargetRefusal } from "./tunnel.ts";
import type { TunnelAnswer } from "./tunnel-mux.ts";

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

function strictMtls(ctx: DataplaneContext, to: PodContext, port: number): boolean {
  return ctx.snapshot().mtlsMode(to.pod.ip, to.pod.namespace, port) === "STRICT";
}

/** STRICT peer authentication on the pod's port: a tunnel without a proven identity is refused. */
function strictRefusal(ctx: DataplaneContext, to: PodContext, port: number, peer: string | undefined) {
  if (peer || !strictMtls(ctx, to, port)) return undefined;
  return new AgentError(AgentErrors.MTLS_REQUIRED, `${to.pod.ip}:${port}`);
}

/**
 * With mTLS the handshake's word must agree with the certificate's: a workload of one namespace
 * cannot present itself as another namespace's (its metrics, its per-source rate limits).
 */
function claimRefusal(req: TunnelRequest, peer: string | undefined): AgentError | undefined {
  if (!peer) return undefined;
  const claimed = (req.workload ?? req.source).split("/", 1)[0];
  const proven = namespaceOfIdentity(peer);
  if (claimed === proven) return undefined;
  return new AgentError(
    AgentErrors.TUNNEL_UNAUTHENTICATED,
    `the handshake names namespace ${claimed}, the certificate ${proven}`,
  );
}

/**
 * `principal`: the caller's SPIFFE id, proven by its certificate (mTLS). `sourceIp`: the source
 * pod's address as its agent names it, believed only from an authenticated agent.
 */
function callerFromTunnel(
  workload: string | undefined,
  address: string | undefined,
  principal: string | undefined,
  sourceIp: string | undefined,
): Caller {
  const [namespace, name] = workload?.split("/", 2) ?? [];
  // Metric labels come from this: anything but two DNS labels is "unknown" (bounded cardinality).
  return namespace && name && DNS_LABEL.test(namespace) && DNS_LABEL.test(name)
    ? { workload: { name, namespace }, key: workload!, address, viaTunnel: true, principal, sourceIp }
    : { ...outsider(address), viaTunnel: true, principal, sourceIp };
}

function outsider(address: string | undefined): Caller {
  return {
    workload: { name: UNKNOWN, namespace: UNKNOWN },
    key: address ?? UNKNOWN,
    address,
    sourceIp: address,
    viaTunnel: false,
  };
}

function connectionPeers(ctx: DataplaneContext, to: PodContext, port: number, caller: Caller): Peers {
  return {
    reporter: "destination",
    sourceWorkload: caller.workload.name,
    sourceNamespace: caller.workload.namespace,
    destinationService: inboundService(ctx, to, port),
    destinationWorkload: to.workload.name,
    destinationNamespace: to.workload.namespace,
    security: caller.principal ? "mutual_tls" : "none",
  };
}

/**
 * AuthorizationPolicy on a connection forwarded as bytes; a denial is counted and logged, and
 * the error returned (nothing has reached the workload).
 */
function connectionDenied(ctx: DataplaneContext, to: PodContext, port: number, caller: Caller) {
  const peers = connectionPeers(ctx, to, port, caller);
  const { error, policy } = authorizeConnection(ctx, to, port, caller, peers.destinationService);
  if (!error) return undefined;
  const route = ctx.snapshot().inbound.get(routeKey(to.pod.ip, port));
  if (ctx.accessLog.wants(route?.policy, caller.workload.namespace, to.workload.namespace)) {
    ctx.accessLog.write({
      ...tcpEntryPeers(peers),
      sourceIp: caller.sourceIp,
      upstream: `${to.pod.ip}:${port}`,
      durationMs: 0,
      bytesReceived: 0,
      bytesSent: 0,
      error: error.code,
      authorizationPolicy: policy,
    });
  }
  return error;
}

/** The destination_service of inbound traffic: the Service the port belongs to, else the workload. */
function inboundService(ctx: DataplaneContext, to: PodContext, port: number): string {
  return ctx.snapshot().inbound.get(routeKey(to.pod.ip, port))?.id ?? `${to.workload.name}.${to.workload.namespace}`;
}

function deliver(ctx: DataplaneContext, to: PodContext, port: number): Promise<Socket> {
  return dial(ctx.sockets, { netns: to.netns, ip: to.pod.ip, port, timeoutMs: ctx.settings.connectTimeoutMs });
}

async function forward(
  ctx: DataplaneContext,
  to: PodContext,
  client: Socket,
  app: Socket,
  port: number,
  caller: Caller,
): Promise<void> {
  const peers = connectionPeers(ctx, to, port, caller);
  const m = ctx.metrics.forConnection(peers);
  m.opened.inc();
  const route = ctx.snapshot().inbound.get(routeKey(to.pod.ip, port));
  const started = performance.now();
  const result = await pipeBoth(client, app, route?.policy.idleTimeoutMs);
  m.closed.inc();
  m.bytesFromDownstream.inc(result.bytesFromDownstream);
  m.bytesFromUpstream.inc(result.bytesFromUpstream);
  if (ctx.accessLog.wants(route?.policy, caller.workload.namespace, to.workload.namespace)) {
    ctx.accessLog.write({
      ...tcpEntryPeers(peers),
      sourceIp: caller.sourceIp,
      upstream: `${to.pod.ip}:${port}`,
      durationMs: Math.round((performance.now() - started) * 1000) / 1000,
      bytesReceived: result.bytesFromDownstream,
      bytesSent: result.bytesFromUpstream,
    });
  }
}

function serveHttp(
  ctx: DataplaneContext,
  to: PodContext,
  client: Socket,
  port: number,
  protocol: "http1" | "h2",
  caller: Caller,
) {
  ctx.http.serve(client, protocol, { direction: "inbound", to, port, caller });
}

export async function handleInbound(ctx: DataplaneContext, to: PodContext, client: Socket, dst: Address) {
  if (AGENT_PORTS.includes(dst.port)) {
    ctx.metrics.refused.labels("inbound", AgentErrors.LOOP.code).inc();
    client.resetAndDestroy();
    return;
  }
  if (strictMtls(ctx, to, dst.port)) {
    // A caller outside the mesh proves no identity: refused as a closed port would be.
    ctx.metrics.refused.labels("inbound", AgentErrors.MTLS_REQUIRED.code).inc();
    client.resetAndDestroy();
    return;
  }
  const declared = ctx.snapshot().inbound.get(routeKey(to.pod.ip, dst.port))?.protocol;
  if (declared !== "tcp") {
    const { protocol, leftover } = await detectProtocol(
      client,
      declared === undefined ? ctx.settings.detectTimeoutMs : ctx.http.headersTimeoutMs,
      declared !== undefined,
    );
    if (protocol === "gone") {
      client.destroy();
      return;
    }
    if ((protocol !== "opaque" || declared !== undefined) && leftover.length === 0 && !client.readableEnded) {
      // A caller outside the mesh: its address is all we know of it.
      serveHttp(ctx, to, client, dst.port, protocol === "h2" ? "h2" : "http1", outsider(client.remoteAddress));
      return;
    }
    return deliverOpaque(ctx, to, client, dst.port, leftover);
  }
  return deliverOpaque(ctx, to, client, dst.port);
}

async function deliverOpaque(ctx: DataplaneContext, to: PodContext, client: Socket, port: number, leftover?: Buffer) {
  const caller = outsider(client.remoteAddress);
  if (connectionDenied(ctx, to, port, caller)) {
    client.resetAndDestroy();
    return;
  }
  let app: Socket;
  try {
    app = await deliver(ctx, to, port);
  } catch (err) {
    // The workload refused: pass that on as a reset, as a refused connect would have looked.
    ctx.metrics.connectFailures.labels("inbound", errorCode(err)).inc();
    client.resetAndDestroy();
    return;
  }
  if (leftover?.length) app.write(leftover);
  await forward(ctx, to, client, app, port, caller);
}

export async function handleTunnel(ctx: DataplaneContext, to: PodContext, accepted: Socket) {
  // Handshakes cost memory (a TLS session each) until they finish or time out: a pod's are capped,
  // so connections that start one and stall cannot pile up. Agents multiplex, and need few.
  if (!to.handshakes.tryTake()) {
    ctx.metrics.refused.labels("inbound", AgentErrors.TUNNEL_HANDSHAKE_LIMIT.code).inc();
    accepted.resetAndDestroy();
    return;
  }
  let handshake: Awaited<ReturnType<typeof acceptHandshake>>;
  try {
    handshake = await acceptHandshake(ctx, to, accepted);
  } catch {
    return; // refused and counted
  } finally {
    to.handshakes.release();
  }
  if (handshake.peer !== undefined) {
    // Mutual TLS: this connection carries many tunnels, one HTTP/2 stream each.
    ctx.metrics.tunnelTlsConnections.labels("inbound").inc();
    const peer = handshake.peer;
    ctx.tunnels.serve(handshake.socket, (tunnel, req, answer) => {
      serveTunnel(ctx, to, tunnel, req, { peer, sameNode: false }, answer).catch((err: Error) => {
        ctx.log.warn({ pod: to.key, err: err.message }, "tunnel handler failed");
        tunnel.destroy();
      });
    });
    return;
  }
  const client = handshake.socket;
  const origin = { peer: undefined, sameNode: false };
  await serveTunnel(ctx, to, client, handshake.req, origin, (error) => answerTunnel(client, error));
}

/**
 * A tunnel connection's handshake: mutual TLS (its tunnels come later, as HTTP/2 streams), or the
 * plaintext handshake of its one tunnel. A failure is counted and the connection ended before it throws.
 */
async function acceptHandshake(
  ctx: DataplaneContext,
  to: PodContext,
  accepted: Socket,
): Promise<
  { socket: TLSSocket; peer: string; req?: undefined } | { socket: Socket; peer?: undefined; req: TunnelRequest }
> {
  let secured: Awaited<ReturnType<typeof acceptSecureTunnel>>;
  try {
    secured = await acceptSecureTunnel(ctx.keyring, to, accepted, ctx.settings.connectTimeoutMs);
  } catch (err) {
    // Not a peer of this mesh: nothing of what it sent is read, nothing reaches the workload.
    ctx.metrics.connectFailures.labels("inbound", (err as AgentError).code ?? "UNKNOWN").inc();
    accepted.destroy();
    throw err;
  }
  if (secured.peer !== undefined) return { socket: secured.socket, peer: secured.peer };
  const client = secured.socket;
  try {
    return { socket: client, req: await acceptTunnel(client, ctx.settings.connectTimeoutMs) };
  } catch (err) {
    ctx.metrics.connectFailures.labels("inbound", errorCode(err)).inc();
    if (!client.destroyed) answerTunnel(client, err as AgentError);
    throw err;
  }
}

/**
 * How a tunnel reached this agent: over the network, in mTLS (`peer`, the caller's SPIFFE id the
 * handshake proved) or in plaintext; or from this agent itself, to one of its own pods
 * (local-tunnel.ts), whose word needs no signature and whose `peer` its keyring vouches for.
 */
export interface TunnelOrigin {
  readonly peer: string | undefined;
  readonly sameNode: boolean;
}

function tunnelSecurityLabel(origin: TunnelOrigin): string {
  if (origin.sameNode) return "same_node";
  return origin.peer ? "mutual_tls" : "plaintext";
}

/**
 * What every tunnel is checked for first (the tunnel key, the target, the claims against the
 * certificate, STRICT), and the caller it speaks for. Throws the refusal. Also a request handed
 * over in memory to one of this agent's pods (http/attempt-local.ts), which is a tunnel's request
 * without the tunnel.
 */
export function admitTunnel(
  ctx: DataplaneContext,
  to: PodContext,
  req: TunnelRequest,
  origin: TunnelOrigin,
  address: string | undefined,
): Caller {
  const { peer, sameNode } = origin;
  const refusal =
    (sameNode ? undefined : tunnelAuthRefusal(req, ctx.settings.tunnelKey, Date.now())) ??
    tunnelTargetRefusal(req, to.pod) ??
    claimRefusal(req, peer) ??
    strictRefusal(ctx, to, req.port, peer);
  if (refusal) throw refusal;
  const vouched = sameNode || peer !== undefined || ctx.settings.tunnelKey !== undefined;
  return callerFromTunnel(req.workload, address, peer, vouched ? req.sourceIp : undefined);
}

/**
 * One tunnel, whichever its framing: checked (the tunnel key, the target, the claims against the
 * certificate, STRICT, authorization of bytes), connected to the workload, then answered and
 * served.
 */
export async function serveTunnel(
  ctx: DataplaneContext,
  to: PodContext,
  client: Socket,
  req: TunnelRequest,
  origin: TunnelOrigin,
  answer: TunnelAnswer,
) {
  ctx.metrics.tunnels.labels(tunnelSecurityLabel(origin)).inc();
  let app: Socket;
  let caller: Caller;
  try {
    caller = admitTunnel(ctx, to, req, origin, client.remoteAddress);
    // Bytes, not HTTP (which is authorized per request): authorized before the workload is dialled.
    const denied = servedAsBytes(ctx, to, req) && connectionDenied(ctx, to, req.port, caller);
    if (denied) throw denied;
    // This node's agent checks its pods (control/health-checks.ts): callers elsewhere learn here.
    if (failsHealthCheck(ctx, to, req.port))
      throw new AgentError(AgentErrors.ENDPOINT_UNHEALTHY, `${to.pod.ip}:${req.port}`);
    // Connected before answering, so the source agent learns of a dead workload and fails over.
    app = await deliver(ctx, to, req.port);
  } catch (err) {
    const error = err instanceof AgentError ? err : new AgentError(AgentErrors.CONNECT_FAILED, String(err));
    ctx.metrics.connectFailures.labels("inbound", error.code).inc();
    answer(error);
    return;
  }
  if (client.destroyed) {
    app.destroy(); // the source agent went away while we connected
    return;
  }
  answer(undefined);
  const { protocol, leftover } = req.protocol
    ? { protocol: req.protocol }
    : await declaredHttp(ctx, to, client, req.port);
  // A port declared HTTP whose caller sent something else: forwarded as bytes, so authorized as such.
  if (
    protocol === "gone" ||
    (!protocol && !servedAsBytes(ctx, to, req) && connectionDenied(ctx, to, req.port, caller))
  ) {
    app.destroy();
    client.destroy();
    return;
  }
  if (leftover?.length) app.write(leftover);
  if (protocol) {
    // HTTP the source agent already parsed: served per request with pooled workload connections.
    app.destroy();
    serveHttp(ctx, to, client, req.port, protocol, caller);
    return;
  }
  await forward(ctx, to, client, app, req.port, caller);
}

function failsHealthCheck(ctx: DataplaneContext, to: PodContext, port: number): boolean {
  const endpoint = endpointOf(ctx.snapshot().inbound.get(routeKey(to.pod.ip, port)), to.pod.ip, port);
  return endpoint !== undefined && ctx.shared.isUnhealthy(endpoint.slot);
}

/** A tunnel that will be forwarded as bytes: no protocol announced, and its port not declared HTTP. */
function servedAsBytes(ctx: DataplaneContext, to: PodContext, req: TunnelRequest): boolean {
  if (req.protocol) return false;
  const declared = ctx.snapshot().inbound.get(routeKey(to.pod.ip, req.port))?.protocol;
  return declared === undefined || declared === "tcp";
}

/**
 * A raw tunnel (no protocol announced) to a port declared HTTP is served as HTTP all the same:
 * whatever a handshake says, the destination's policies (rate limits) apply to HTTP traffic.
 * Undeclared ports keep the source agent's classification (it detected opaque TCP).
 */
async function declaredHttp(
  ctx: DataplaneContext,
  to: PodContext,
  client: Socket,
  port: number,
): Promise<{ protocol?: "http1" | "h2" | "gone"; leftover?: Buffer }> {
  const declared = ctx.snapshot().inbound.get(routeKey(to.pod.ip, port))?.protocol;
  if (declared === undefined || declared === "tcp") return {};
  const { protocol, leftover } = await detectProtocol(client, ctx.http.headersTimeoutMs, true);
  if (protocol === "gone") return { protocol };
  // A client that already ended: what it sent is forwarded as it is (as on the plain inbound port).
  if (leftover.length > 0 || client.readableEnded) return { leftover };
  return { protocol: protocol === "h2" ? "h2" : "http1" };
}
