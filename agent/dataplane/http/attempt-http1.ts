// An attempt over HTTP/1.1: one request on a keep-alive connection of the (pod, endpoint) pool.

import http from "node:http";
import { AgentError, AgentErrors } from "../../errors.ts";
import { type Attempt, failure, OutcomeLatch, type UpstreamRequest, type UpstreamResponse } from "./attempt.ts";
import { type Http1Pool, isPooledSocket } from "./upstream.ts";

/** `releasePending`: the pool's pending slot, released once a connection is had or the attempt ends. */
export function attemptHttp1(
  pool: Http1Pool,
  releasePending: () => void,
  ep: { readonly ip: string; readonly port: number },
  up: UpstreamRequest,
  timeoutMs: number,
): Attempt {
  let req: http.ClientRequest | undefined;
  const latch = new OutcomeLatch(up.body, releasePending, timeoutMs, () =>
    req?.destroy(new AgentError(AgentErrors.PER_TRY_TIMEOUT)),
  );
  try {
    req = http.request({
      agent: pool,
      host: ep.ip,
      port: ep.port,
      method: up.method,
      path: up.target,
      headers: up.headers,
      setHost: false,
    });
  } catch (err) {
    // Headers node refuses to send (never from a well-formed request): nothing left.
    latch.settle(failure(err, false, "connect-failure"));
    return { outcome: latch.outcome, abort: () => {} };
  }
  const r = req;
  r.once("socket", (socket) => {
    // Only a socket from our pool leaves from the pod's namespace; never send on another.
    if (!isPooledSocket(socket)) {
      r.destroy(new AgentError(AgentErrors.CONNECT_FAILED, "socket not from the pod's pool"));
      return;
    }
    releasePending();
  });
  r.once("response", (res) => latch.settle(http1Response(r, res)));
  r.once("error", (err) => latch.settle(failure(err, r.reusedSocket)));
  up.body.attach(r);
  return { outcome: latch.outcome, abort: () => r.destroy(new AgentError(AgentErrors.TIMEOUT)) };
}

/** An HTTP/1.1 answer as an outcome: its body streams on, its trailers come with its end. */
export function http1Response(req: http.ClientRequest, res: http.IncomingMessage): UpstreamResponse {
  return {
    kind: "response",
    status: res.statusCode ?? 502,
    headers: res.headers,
    body: res,
    trailersOnly: false,
    trailers: () => (Object.keys(res.trailers).length > 0 ? res.trailers : undefined),
    abort: () => req.destroy(),
  };
}
