// An HTTP/1.1 Upgrade (WebSocket): the request goes to one endpoint over a fresh connection and,
// from then on, bytes flow both ways untouched (the 101 comes back through the pipe).

import type http from "node:http";
import type { Socket } from "node:net";
import { AgentError, AgentErrors } from "../../errors.ts";
import { connectEndpoint } from "../connect.ts";
import type { DataplaneContext } from "../context.ts";
import { pipeBoth } from "../pipe.ts";
import type { ProxyTarget } from "../pod.ts";
import { rawErrorAnswer } from "./errors.ts";
import { localEndpoint, resolveTarget, sourcePod } from "./resolve.ts";

export async function upgradeRequest(
  ctx: DataplaneContext,
  req: http.IncomingMessage,
  socket: Socket,
  head: Buffer,
  bound: ProxyTarget,
): Promise<void> {
  const target = resolveTarget(ctx.snapshot(), bound, req.headers);
  if (!target) {
    socket.end(rawErrorAnswer(new AgentError(AgentErrors.NO_ENDPOINT)));
    return;
  }
  const ep =
    target.direction === "outbound"
      ? ctx.picker.pick(target.route.self, { tried: [], nowMs: Date.now() })
      : localEndpoint(target.to, target.port, target.route);
  if (!ep) {
    socket.end(rawErrorAnswer(new AgentError(AgentErrors.NO_HEALTHY_ENDPOINT)));
    return;
  }
  let upstream: Socket;
  try {
    // A raw tunnel (no HTTP announced): after the 101 the connection is no longer HTTP.
    upstream = await connectEndpoint(ctx.sockets, sourcePod(target), ep, ctx.settings.connectTimeoutMs);
  } catch (err) {
    socket.end(rawErrorAnswer(err));
    return;
  }
  // The raw head again, minus forged internal headers; Connection and Upgrade stay (they are the point).
  const lines = [`${req.method} ${req.url} HTTP/1.1`];
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    if (!req.rawHeaders[i]!.toLowerCase().startsWith("x-nodemesh-"))
      lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
  }
  upstream.write(`${lines.join("\r\n")}\r\n\r\n`);
  if (head.length) upstream.write(head);
  await pipeBoth(socket, upstream);
}
