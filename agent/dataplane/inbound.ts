// Inbound: connections that arrive at an enrolled pod. Two ways in:
// - 15006, plain: anything the pod's PREROUTING rules redirected (a caller that is not meshed);
// - 15008, the tunnel: a source agent asking us to connect to this pod's workload.
// Either way the agent connects to the workload from inside the pod, marked so it is not
// intercepted again, and forwards bytes.

import type { Socket } from "node:net";
import { AGENT_PORTS } from "../../api/dataplane.ts";
import { AgentError, AgentErrors, errorCode } from "../errors.ts";
import type { Address } from "../sys/linux.ts";
import type { DataplaneContext, PodContext } from "./context.ts";
import { dial } from "./dial.ts";
import { pipeBoth } from "./pipe.ts";
import { acceptTunnel, answerTunnel } from "./tunnel.ts";

/** The destination_service label of inbound traffic: the workload's own "name.namespace". */
function inboundLabel(to: PodContext): string {
  return `${to.pod.name}.${to.pod.namespace}`;
}

function deliver(ctx: DataplaneContext, to: PodContext, port: number): Promise<Socket> {
  return dial({ netns: to.netns, ip: to.pod.ip, port, timeoutMs: ctx.connectTimeoutMs });
}

async function forward(ctx: DataplaneContext, to: PodContext, client: Socket, app: Socket): Promise<void> {
  const m = ctx.metrics.forConnection("inbound", inboundLabel(to));
  m.opened.inc();
  const result = await pipeBoth(client, app);
  m.closed.inc();
  m.bytesFromDownstream.inc(result.bytesFromDownstream);
  m.bytesFromUpstream.inc(result.bytesFromUpstream);
}

export async function handleInbound(ctx: DataplaneContext, to: PodContext, client: Socket, dst: Address) {
  if (AGENT_PORTS.includes(dst.port)) {
    ctx.metrics.refused.labels("inbound", AgentErrors.LOOP.code).inc();
    client.resetAndDestroy();
    return;
  }
  let app: Socket;
  try {
    app = await deliver(ctx, to, dst.port);
  } catch (err) {
    // The workload refused: pass that on as a reset, as a refused connect would have looked.
    ctx.metrics.connectFailures.labels("inbound", errorCode(err)).inc();
    client.resetAndDestroy();
    return;
  }
  await forward(ctx, to, client, app);
}

export async function handleTunnel(ctx: DataplaneContext, to: PodContext, client: Socket) {
  let app: Socket;
  try {
    const req = await acceptTunnel(client, ctx.connectTimeoutMs);
    if (req.ip !== to.pod.ip) throw new AgentError(AgentErrors.TUNNEL_FORBIDDEN, req.ip);
    if (AGENT_PORTS.includes(req.port)) throw new AgentError(AgentErrors.LOOP);
    app = await deliver(ctx, to, req.port);
  } catch (err) {
    const error = err instanceof AgentError ? err : new AgentError(AgentErrors.CONNECT_FAILED, String(err));
    ctx.metrics.connectFailures.labels("inbound", error.code).inc();
    if (!client.destroyed) answerTunnel(client, error);
    return;
  }
  if (client.destroyed) {
    app.destroy(); // the source agent went away while we connected
    return;
  }
  answerTunnel(client, undefined);
  await forward(ctx, to, client, app);
}
