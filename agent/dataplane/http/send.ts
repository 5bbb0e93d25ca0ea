// Starting an attempt: the (pod, endpoint) pool of the request's HTTP version, its pending-request
// limit, and the attempt itself.

import { connectEndpoint } from "../connect.ts";
import type { DataplaneContext } from "../context.ts";
import type { Endpoint } from "../endpoint.ts";
import { UNLIMITED } from "../limits.ts";
import type { PodContext } from "../pod.ts";
import type { CompiledPolicy } from "../policy.ts";
import type { Attempt, UpstreamRequest } from "./attempt.ts";
import { attemptHttp1 } from "./attempt-http1.ts";
import { attemptHttp2 } from "./attempt-http2.ts";
import { attemptLocal } from "./attempt-local.ts";
import { attemptUpgrade } from "./attempt-upgrade.ts";
import { SERVICE_HEADER } from "./resolve.ts";
import type { ConnectionLimits, HttpProtocol } from "./upstream.ts";

/** The connection limits an endpoint's pool works under: the policy's breaker and timeouts. */
export function connectionLimits(policy: CompiledPolicy, defaultConnectTimeoutMs: number): ConnectionLimits {
  const cb = policy.circuitBreaker;
  return {
    maxConnections: cb?.maxConnections ?? UNLIMITED,
    maxPending: cb?.maxPending ?? UNLIMITED,
    connectTimeoutMs: policy.connectTimeoutMs ?? defaultConnectTimeoutMs,
    idleTimeoutMs: policy.idleTimeoutMs,
  };
}

function hasConnectionBreaker(limits: ConnectionLimits): boolean {
  return limits.maxConnections !== UNLIMITED || limits.maxPending !== UNLIMITED;
}

/**
 * Sends `up` to `ep`. Throws CIRCUIT_OPEN when the pool's pending limit is reached. `sentTo`: the
 * Service a meshed endpoint's agent is told the request was sent to.
 */
export function startAttempt(
  ctx: DataplaneContext,
  protocol: HttpProtocol,
  from: PodContext,
  ep: Endpoint,
  limits: ConnectionLimits,
  up: UpstreamRequest,
  timeoutMs: number,
  sentTo: string | undefined,
): Attempt {
  // Set in place (an attempt copies the headers as it starts): the next attempt may go elsewhere.
  if (ep.meshed && sentTo) up.headers[SERVICE_HEADER] = sentTo;
  else delete up.headers[SERVICE_HEADER];
  if (up.upgrade) {
    // A meshed endpoint's agent serves it as HTTP too: its own route, policy and rate limit apply.
    const connect = () => connectEndpoint(ctx, from, ep, limits.connectTimeoutMs, "http1");
    return attemptUpgrade(connect, ep, { ...up, upgrade: up.upgrade }, timeoutMs);
  }
  // HTTP/2 to one of this node's own pods: handed over in memory, unless a connection breaker
  // counts its connections (a hand-off makes none). HTTP/1.1 takes a same-node tunnel.
  const local = protocol === "h2" && ep.meshed && !hasConnectionBreaker(limits) ? ctx.localPod(ep.ip) : undefined;
  if (local) return attemptLocal(ctx, from, local, ep, up, limits.connectTimeoutMs, timeoutMs);
  if (protocol === "http1") {
    const pool = ctx.pools.http1(from, ep, limits);
    return attemptHttp1(pool, ctx.pools.enterPending(ep, pool), up, timeoutMs);
  }
  const pool = ctx.pools.http2(from, ep, limits);
  return attemptHttp2(pool, ctx.pools.enterPending(ep, pool), up, timeoutMs);
}
