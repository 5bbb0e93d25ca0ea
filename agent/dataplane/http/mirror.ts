// Request mirroring: a copy of the request goes to another backend once the body has arrived
// (only if it was kept whole); the answer is dropped and never affects the client.

import type { OutgoingHttpHeaders } from "node:http";
import type { DataplaneContext } from "../context.ts";
import { UNLIMITED } from "../limits.ts";
import type { PodContext } from "../pod.ts";
import type { Backend } from "../snapshot.ts";
import { FixedBody, type RequestBody } from "./body.ts";
import type { Downstream } from "./downstream.ts";
import { startAttempt } from "./send.ts";

const MIRROR_TIMEOUT_MS = 30_000;

export async function sendMirror(
  ctx: DataplaneContext,
  from: PodContext,
  backend: Backend,
  down: Downstream,
  headers: OutgoingHttpHeaders,
  body: RequestBody,
): Promise<void> {
  await body.whenEnded();
  if (!body.complete) return;
  const ep = ctx.picker.pick(backend, { tried: [], nowMs: Date.now() });
  if (!ep) return;
  const limits = {
    maxConnections: UNLIMITED,
    maxPending: UNLIMITED,
    connectTimeoutMs: ctx.settings.connectTimeoutMs,
    idleTimeoutMs: backend.policy.idleTimeoutMs,
  };
  try {
    const attempt = startAttempt(
      ctx,
      down.protocol,
      from,
      ep,
      limits,
      {
        method: down.method,
        target: down.target,
        authority: down.authority,
        grpc: down.grpc,
        headers: { ...headers },
        body: new FixedBody([...body.kept]),
      },
      MIRROR_TIMEOUT_MS,
      backend.route.id,
    );
    const outcome = await attempt.outcome;
    ctx.metrics.mirrored.labels(backend.route.id).inc();
    if (outcome.kind === "response") outcome.body.resume();
  } catch {
    // A mirror never affects the client.
  }
}
