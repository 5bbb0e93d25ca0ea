// An attempt over HTTP/1.1: one request on a keep-alive connection of the (pod, endpoint) pool,
// through undici's dispatcher interface: the answer's head arrives parsed once, its body streams
// as chunks, and no ClientRequest, IncomingMessage or socket events are set up per request.

import type { IncomingHttpHeaders, OutgoingHttpHeaders } from "node:http";
import { PassThrough, Readable } from "node:stream";
import type { Dispatcher } from "undici";
import { AgentError, AgentErrors } from "../../errors.ts";
import { type Attempt, failure, OutcomeLatch, type UpstreamRequest } from "./attempt.ts";
import type { Http1Pool } from "./upstream.ts";

type Controller = Dispatcher.DispatchController;

/** `releasePending`: the pool's pending slot, released once a connection is had or the attempt ends. */
export function attemptHttp1(
  pool: Http1Pool,
  releasePending: () => void,
  up: UpstreamRequest,
  timeoutMs: number,
): Attempt {
  // A request still waiting for a connection has no controller: it fails at once, and undici
  // drops it when the connection comes (it offers no way to take a queued request back).
  let controller: Controller | undefined;
  let stopped: Error | undefined;
  const stop = (reason: Error) => {
    stopped ??= reason;
    if (controller) controller.abort(reason);
    else latch.settle(failure(reason));
  };
  const latch = new OutcomeLatch(up.body, releasePending, timeoutMs, () =>
    stop(new AgentError(AgentErrors.PER_TRY_TIMEOUT)),
  );
  // A request on a connection already open: if the server had closed it meanwhile, resending is safe.
  const reused = pool.hasIdleConnection();
  let body: Readable | undefined;
  let trailers: OutgoingHttpHeaders | undefined;

  const handler: Dispatcher.DispatchHandler = {
    onRequestStart(c) {
      controller = c;
      if (stopped) return c.abort(stopped);
      releasePending();
    },
    onResponseStart(c, status, headers) {
      body = new Readable({ read: () => c.resume() });
      latch.settle({
        kind: "response",
        status,
        headers: headers as IncomingHttpHeaders,
        body,
        trailersOnly: false,
        trailers: () => trailers,
        abort: () => c.abort(new AgentError(AgentErrors.UPSTREAM_RESET, "cancelled")),
      });
    },
    onResponseData(c, chunk) {
      if (!body!.push(chunk)) c.pause();
    },
    onResponseEnd(_c, received) {
      for (const _ in received) {
        trailers = received as OutgoingHttpHeaders;
        break;
      }
      body!.push(null);
    },
    onResponseError(_c, err) {
      if (body) body.destroy(err);
      else latch.settle(failure(stopped ?? err, reused && !stopped));
    },
  };

  try {
    pool.dispatch(
      {
        method: up.method as Dispatcher.HttpMethod,
        path: upstreamTarget(up.target),
        // Numbers are written as their digits (content-length), as by node's client.
        headers: requestHeaders(up) as Record<string, string | string[]>,
        body: up.body.empty ? null : attachedBody(up),
      },
      handler,
    );
  } catch (err) {
    // A head undici refuses to write (a target or header value no well-formed request has): the
    // client's request, answered 400; it never left, so it counts as undelivered.
    const refused = (err as { code?: string }).code === "UND_ERR_INVALID_ARG";
    const error = refused ? new AgentError(AgentErrors.BAD_REQUEST, (err as Error).message) : err;
    latch.settle(failure(error, false, "connect-failure"));
  }
  return { outcome: latch.outcome, abort: () => stop(new AgentError(AgentErrors.TIMEOUT)) };
}

/** The body as a stream of its own for this attempt (a retry replays the kept chunks into another). */
function attachedBody(up: UpstreamRequest): Readable {
  const sink = new PassThrough();
  up.body.attach(sink);
  return sink;
}

/** An absolute-form target's scheme in lower case (RFC 3986 §3.1: the same URL; undici asks for it). */
function upstreamTarget(target: string): string {
  return target.charCodeAt(0) === 47 /* "/" */ ? target : target.replace(/^https?:/i, (scheme) => scheme.toLowerCase());
}

/**
 * The headers as sent upstream. `Expect: 100-continue` was answered to the client by the agent's
 * own server, which then read the body: the upstream gets the whole request and needs no interim
 * answer (as Envoy by default). A request that came over HTTP/2 names its host in `:authority`
 * only, and HTTP/1.1 needs it in Host (RFC 9113 §8.3.1); without either, undici would send the
 * endpoint's address.
 */
function requestHeaders(up: UpstreamRequest): OutgoingHttpHeaders {
  const { headers } = up;
  if (headers.expect === undefined && (headers.host !== undefined || !up.authority)) return headers;
  const { expect: _, ...rest } = headers;
  if (rest.host === undefined && up.authority) rest.host = up.authority;
  return rest;
}
