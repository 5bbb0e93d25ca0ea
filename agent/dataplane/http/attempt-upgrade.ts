// An attempt for an HTTP/1.1 Upgrade (WebSocket and the like): a fresh connection of its own
// (it may become a raw pipe, so it never comes from a pool). A 101 hands back the upstream socket;
// any other answer is an ordinary response.

import type { ClientRequest, IncomingMessage } from "node:http";
import type { Socket } from "node:net";
import { PassThrough } from "node:stream";
import { http } from "../../../api/node-http.ts";
import { AgentError, AgentErrors } from "../../errors.ts";
import { type Attempt, failure, OutcomeLatch, type UpstreamRequest, type UpstreamResponse } from "./attempt.ts";

const NOTHING_PENDING = () => {};

export function attemptUpgrade(
  connect: () => Promise<Socket>,
  ep: { readonly ip: string; readonly port: number },
  up: UpstreamRequest & { readonly upgrade: string },
  timeoutMs: number,
): Attempt {
  let req: ClientRequest | undefined;
  let upstream: Socket | undefined;
  const latch = new OutcomeLatch(up.body, NOTHING_PENDING, timeoutMs, () => {
    upstream?.destroy();
    latch.settle(failure(new AgentError(AgentErrors.PER_TRY_TIMEOUT)));
  });
  connect().then(
    (socket) => {
      upstream = socket.resume();
      if (latch.done) return void socket.destroy();
      const headers = { ...up.headers, connection: "Upgrade", upgrade: up.upgrade };
      const r = http.request({
        host: ep.ip,
        port: ep.port,
        method: up.method,
        path: up.target,
        headers,
        setHost: false,
        createConnection: () => socket,
      });
      req = r;
      watchUpgrade(r, latch);
      r.once("error", (err) => latch.settle(failure(err, false, "reset")));
      up.body.attach(r);
    },
    (err: unknown) => latch.settle(failure(err)),
  );
  return {
    outcome: latch.outcome,
    abort: () => {
      (req ?? upstream)?.destroy();
      latch.settle(failure(new AgentError(AgentErrors.UPSTREAM_RESET, "cancelled")));
    },
  };
}

/** A 101 hands back the raw upstream socket; any other status is an ordinary response. */
function watchUpgrade(r: ClientRequest, latch: OutcomeLatch): void {
  r.once("upgrade", (res, raw: Socket, head: Buffer) => {
    latch.settle({
      kind: "response",
      status: res.statusCode ?? 101,
      headers: res.headers,
      body: new PassThrough().end(),
      trailersOnly: false,
      trailers: () => undefined,
      abort: () => raw.destroy(),
      upgraded: { socket: raw, head },
    });
  });
  r.once("response", (res) => latch.settle(http1Response(r, res)));
}

/** An answer other than a 101: its body streams on, its trailers come with its end. */
function http1Response(req: ClientRequest, res: IncomingMessage): UpstreamResponse {
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
