// Connecting to an endpoint, for both paths: a meshed endpoint through its agent's tunnel port
// (the agent answers only once the workload accepted), anything else directly. Cross-node mTLS
// will hook in here.

import type { Socket } from "node:net";
import { TUNNEL_PORT } from "../../api/dataplane.ts";
import { dial, type SocketMaker } from "./dial.ts";
import type { Endpoint } from "./endpoint.ts";
import type { HttpProtocol } from "./http/upstream.ts";
import { type Keyring, secureTunnel } from "./mtls.ts";
import type { PodContext } from "./pod.ts";
import { openTunnel } from "./tunnel.ts";

/**
 * Opens a connection from `from` to `ep` within `timeoutMs`. `serveAs`: the destination agent is
 * told to serve the tunnel as HTTP of that version (its inbound L7 side); without it the tunnel
 * carries raw bytes (opaque TCP, upgraded connections).
 */
export async function connectEndpoint(
  via: { readonly sockets: SocketMaker; readonly settings: { readonly tunnelKey?: string }; readonly keyring: Keyring },
  from: PodContext,
  ep: Endpoint,
  timeoutMs: number,
  serveAs?: HttpProtocol,
): Promise<Socket> {
  const deadline = Date.now() + timeoutMs;
  const { sockets } = via;
  if (!ep.meshed) return dial(sockets, { netns: from.netns, ip: ep.ip, port: ep.port, timeoutMs });
  const plain = await dial(sockets, { netns: from.netns, ip: ep.ip, port: TUNNEL_PORT, timeoutMs });
  let socket: Socket = plain;
  try {
    socket = await secureTunnel(via.keyring, from, ep, plain, Math.max(1, deadline - Date.now()), serveAs === "h2");
    const workload = `${from.workload.namespace}/${from.workload.name}`;
    const req = { ip: ep.ip, port: ep.port, source: from.key, workload, sourceIp: from.pod.ip, protocol: serveAs };
    await openTunnel(socket, req, Math.max(1, deadline - Date.now()), via.settings.tunnelKey);
    return socket;
  } catch (err) {
    plain.destroy();
    throw err;
  }
}
