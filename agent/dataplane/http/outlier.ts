// What every outbound attempt teaches the balancer: outlier detection (consecutive 5xx or gateway
// errors eject an endpoint, within the policy's ejection ratio) and least-request's latency.

import type { DataplaneContext } from "../context.ts";
import type { Endpoint } from "../endpoint.ts";
import type { Backend } from "../snapshot.ts";
import type { Outcome } from "./attempt.ts";

export function observeAttempt(
  ctx: DataplaneContext,
  backend: Backend,
  ep: Endpoint,
  outcome: Outcome,
  ms: number,
): void {
  const now = Date.now();
  if (backend.policy.lb.type === "LeastRequest" && outcome.kind === "response") ctx.picker.observeLatency(ep, ms, now);
  const od = backend.policy.outlier;
  if (!od) return;
  const status = outcome.kind === "response" ? outcome.status : 503;
  const gateway = outcome.kind === "failure" || status === 502 || status === 503 || status === 504;
  if (status < 500) {
    ctx.shared.recordSuccess(ep.slot);
    return;
  }
  const run = ctx.shared.recordFailure(ep.slot);
  if (run < od.consecutive5xx && !(gateway && run >= od.consecutiveGatewayErrors)) return;
  const eps = backend.route.endpoints;
  const allowed = od.maxEjectionRatio > 0 ? Math.max(1, Math.floor(eps.length * od.maxEjectionRatio)) : 0;
  const ejected = eps.filter((e) => ctx.shared.isEjected(e.slot, now)).length;
  if (ejected >= allowed) return;
  if (ctx.shared.eject(ep.slot, now, od.baseMs, od.maxMs)) ctx.metrics.ejections.labels(backend.route.id).inc();
}
