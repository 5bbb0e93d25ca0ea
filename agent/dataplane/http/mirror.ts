// Request mirroring: a copy of the request goes to another backend once the body has arrived
// (only if it was kept whole); the answer is dropped and never affects the client. A copy that
// could not be sent is counted by reason, so a mirror backend's missing traffic can be explained.

import type { OutgoingHttpHeaders } from "node:http";
import type { FailureClass } from "../../errors.ts";
import type { DataplaneContext } from "../context.ts";
import { UNLIMITED } from "../limits.ts";
import type { PodContext } from "../pod.ts";
import type { Backend } from "../snapshot.ts";
import type { Outcome } from "./attempt.ts";
import { FixedBody, type RequestBody } from "./body.ts";
import { throughAgent } from "./call.ts";
import type { Downstream } from "./downstream.ts";
import { startAttempt } from "./send.ts";

const MIRROR_TIMEOUT_MS = 30_000;

/** Why a copy decided on never reached the mirror backend (`nodemesh_mirror_dropped_total`). */
export type MirrorDropReason = "body_not_kept" | "no_endpoint" | "connect_failure" | "reset" | "timeout";

const FAILED: Record<FailureClass, MirrorDropReason> = {
  "connect-failure": "connect_failure",
  reset: "reset",
  timeout: "timeout",
};

export async function sendMirror(
  ctx: DataplaneContext,
  from: PodContext,
  backend: Backend,
  down: Downstream,
  headers: OutgoingHttpHeaders,
  body: RequestBody,
): Promise<void> {
  const dropped = (reason: MirrorDropReason) => ctx.metrics.mirrorDropped.labels(backend.route.id, reason).inc();
  await body.whenEnded();
  // Past the plan's cap, or the client left mid-body: there is no whole request to copy.
  if (!body.complete) return dropped("body_not_kept");
  const ep = ctx.picker.pick(backend, { tried: [], nowMs: Date.now() });
  if (!ep) return dropped("no_endpoint");
  const limits = {
    maxConnections: UNLIMITED,
    maxPending: UNLIMITED,
    connectTimeoutMs: ctx.settings.connectTimeoutMs,
    idleTimeoutMs: backend.policy.idleTimeoutMs,
  };
  let outcome: Outcome;
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
    outcome = throughAgent(await attempt.outcome, ep);
  } catch {
    return dropped("connect_failure"); // e.g. no connection to the endpoint could be made
  }
  if (outcome.kind === "failure") return dropped(FAILED[outcome.class]);
  ctx.metrics.mirrored.labels(backend.route.id).inc();
  outcome.body.resume();
}
