// Connecting to an endpoint, for both paths: a meshed endpoint through its agent's tunnel port
// (the agent answers only once the workload accepted), in mutual TLS on a shared connection when
// both ends have identities (tunnel-mux.ts), else one plaintext tunnel per connection; one of this
// node's own pods through a tunnel this agent serves in memory (local-tunnel.ts); anything else
// directly. (An HTTP/2 request to one of this node's pods needs no connection: http/attempt-local.ts.)

import type { Socket } from "node:net";
import { TUNNEL_PORT } from "../../api/dataplane.ts";
import { AgentError, AgentErrors } from "../errors.ts";
import type { DataplaneContext } from "./context.ts";
import { dial } from "./dial.ts";
import type { Endpoint } from "./endpoint.ts";
import type { HttpProtocol } from "./http/upstream.ts";
import { openLocalTunnel } from "./local-tunnel.ts";
import { tunnelIdentity } from "./mtls.ts";
import type { PodContext } from "./pod.ts";
import { handshakeHeaders, openTunnel, type TunnelRequest } from "./tunnel.ts";

/**
 * Opens a connection from `from` to `ep`. `timeoutMs` is the budget of each hop: reaching the
 * destination agent (or the endpoint itself), then, through a tunnel, that agent's answer, which
 * waits on its own connect to the workload. One budget for both would fail a burst of connections
 * on a busy node whose agents are slow but well (a storm of 500 spent it all before the answers).
 * `serveAs`: the destination agent is told to serve the tunnel as HTTP of that version (its inbound
 * L7 side); without it the tunnel carries raw bytes (opaque TCP, upgraded connections).
 */
export async function connectEndpoint(
  via: DataplaneContext,
  from: PodContext,
  ep: Endpoint,
  timeoutMs: number,
  serveAs?: HttpProtocol,
): Promise<Socket> {
  const { sockets } = via;
  if (!ep.meshed) return dial(sockets, { netns: from.netns, ip: ep.ip, port: ep.port, timeoutMs });
  const req = tunnelRequest(from, ep, serveAs);
  const deadline = Date.now() + timeoutMs;
  await readyToTunnel(via, from, ep, timeoutMs);
  const local = via.localPod(ep.ip);
  if (local) return openLocalTunnel(via, from, local, ep, req, timeoutMs);
  const mine = tunnelIdentity(via, from, ep);
  if (mine) {
    const headers = handshakeHeaders(req, via.settings.tunnelKey);
    const current = () => tunnelIdentity(via, from, ep) ?? mine;
    return via.tunnels.open(current, from, ep, headers, Math.max(1, deadline - Date.now()));
  }
  const remaining = Math.max(1, deadline - Date.now());
  const socket = await dial(sockets, { netns: from.netns, ip: ep.ip, port: TUNNEL_PORT, timeoutMs: remaining });
  try {
    await openTunnel(socket, req, timeoutMs, via.settings.tunnelKey);
    return socket;
  } catch (err) {
    socket.destroy();
    throw err;
  }
}

/** What the destination agent is asked: this endpoint, for this pod, served as `serveAs`. */
export function tunnelRequest(from: PodContext, ep: Endpoint, serveAs: HttpProtocol | undefined): TunnelRequest {
  return {
    ip: ep.ip,
    port: ep.port,
    source: from.key,
    workload: `${from.workload.namespace}/${from.workload.name}`,
    sourceIp: from.pod.ip,
    protocol: serveAs,
  };
}

/**
 * Before anything goes to a meshed endpoint: refused when its agent is this one and it is
 * stopping; and a pod just enrolled waits for its certificate rather than go out in plaintext
 * (which STRICT would refuse), as ztunnel's tunnels do.
 */
export async function readyToTunnel(via: DataplaneContext, from: PodContext, ep: Endpoint, timeoutMs: number) {
  if (via.waitsForNextAgent(ep)) {
    throw new AgentError(AgentErrors.CONNECT_FAILED, `${ep.ip}:${ep.port}: its agent (this one) is stopping`);
  }
  await via.identitySettled(from, timeoutMs);
}
