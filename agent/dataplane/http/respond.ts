// The two ways a request is answered: the upstream's answer delivered (commit), or the agent's
// own error answer (reply). Both fill in the record's status.

import type { DataplaneContext } from "../context.ts";
import { countForwarded } from "../read-buffers.ts";
import type { Rule } from "../snapshot.ts";
import type { UpstreamResponse } from "./attempt.ts";
import type { Downstream } from "./downstream.ts";
import { type AnswerOverride, clientError } from "./errors.ts";
import { applyHeaderOps, endToEnd } from "./headers.ts";
import { grpcStatusLabel, type RequestRecord } from "./record.ts";

/** Delivers an upstream answer: head (with the rule's header changes), body, trailers. */
export async function commit(
  down: Downstream,
  res: UpstreamResponse,
  rule: Rule | undefined,
  rec: RequestRecord,
): Promise<void> {
  rec.status = res.status;
  if (down.gone) {
    res.abort();
    return;
  }
  // The destination side drops x-nodemesh-* from the app's answer: an app cannot speak for an agent.
  const headers = endToEnd(res.headers, rec.peers.reporter === "destination");
  applyHeaderOps(headers, rule?.responseHeaders);
  if (res.upgraded) {
    if (!down.switchProtocols) return res.abort(); // a 101 to a request that asked for no upgrade
    return down.switchProtocols(headers, res.upgraded);
  }
  if (res.trailersOnly) {
    rec.grpcStatus = grpcStatusLabel(res.headers["grpc-status"]);
    down.respond(res.status, headers, true);
    return;
  }
  down.respond(res.status, headers, false);
  res.body.on("data", (chunk: Buffer) => {
    rec.responseBytes += chunk.length;
    countForwarded(chunk);
  });
  await down.sendBody(res.body, res.trailers);
  if (rec.grpc) rec.grpcStatus = grpcStatusLabel(res.trailers()?.["grpc-status"] ?? res.headers["grpc-status"]);
}

/** The agent's own answer: errors.ts decides its shape; the record gets its status. */
export function reply(
  ctx: DataplaneContext,
  down: Downstream,
  rec: RequestRecord,
  err: unknown,
  override?: AnswerOverride,
): void {
  const e = clientError(err, override);
  rec.error = e.code;
  if (down.gone) return; // no answer was sent: the record keeps status 0
  rec.status = rec.grpc ? 200 : e.status;
  rec.grpcStatus = rec.grpc ? String(e.grpcStatus) : "";
  ctx.metrics.localReplies.labels(rec.peers.reporter === "source" ? "outbound" : "inbound", e.code).inc();
  down.fail(e);
}
