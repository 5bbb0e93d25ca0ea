// An attempt over HTTP/2 (and gRPC): one stream on the (pod, endpoint) pool's session.

import type { IncomingHttpHeaders, OutgoingHttpHeaders } from "node:http";
import http2 from "node:http2";
import { AgentError, AgentErrors } from "../../errors.ts";
import { type Attempt, failure, OutcomeLatch, type UpstreamRequest } from "./attempt.ts";
import type { Http2Pool } from "./upstream.ts";

const { NGHTTP2_CANCEL, NGHTTP2_FLAG_END_STREAM, NGHTTP2_REFUSED_STREAM } = http2.constants;

/** `releasePending`: the pool's pending slot, released once the session is had or the attempt ends. */
export function attemptHttp2(
  pool: Http2Pool,
  releasePending: () => void,
  up: UpstreamRequest,
  timeoutMs: number,
): Attempt {
  let stream: http2.ClientHttp2Stream | undefined;
  const latch = new OutcomeLatch(up.body, releasePending, timeoutMs, () => {
    stream?.close(NGHTTP2_CANCEL);
    latch.settle(failure(new AgentError(AgentErrors.PER_TRY_TIMEOUT)));
  });
  pool.get().then(
    (session) => {
      releasePending();
      if (latch.done) return; // timed out or aborted while the session was connecting
      try {
        stream = session.request(requestHeaders(up), { endStream: false });
      } catch (err) {
        latch.settle(failure(err, false, "connect-failure"));
        return;
      }
      watchStream(stream, latch);
      up.body.attach(stream);
    },
    (err: unknown) => latch.settle(failure(err)),
  );
  return {
    outcome: latch.outcome,
    abort: () => {
      stream?.close(NGHTTP2_CANCEL);
      // Also while the session is still connecting: the attempt must end now, not never.
      latch.settle(failure(new AgentError(AgentErrors.UPSTREAM_RESET, "cancelled")));
    },
  };
}

function requestHeaders(up: UpstreamRequest): OutgoingHttpHeaders {
  return {
    ...up.headers,
    ":method": up.method,
    ":path": up.target,
    ":authority": up.authority,
    ":scheme": "http",
    ...(up.grpc ? { te: "trailers" } : {}),
  };
}

function watchStream(s: http2.ClientHttp2Stream, latch: OutcomeLatch): void {
  let trailers: OutgoingHttpHeaders | undefined;
  s.on("trailers", (t) => {
    trailers = t as OutgoingHttpHeaders;
  });
  s.once("response", (h, flags) => {
    latch.settle({
      kind: "response",
      status: Number(h[":status"] ?? 502),
      headers: h as IncomingHttpHeaders,
      body: s,
      trailersOnly: (flags & NGHTTP2_FLAG_END_STREAM) !== 0,
      trailers: () => trailers,
      abort: () => s.close(NGHTTP2_CANCEL),
    });
  });
  // REFUSED_STREAM: the peer did not process the stream (RFC 9113 §8.7, e.g. past its GOAWAY while
  // draining): undelivered, so tried again elsewhere like a connect failure, whatever the method.
  const resetClass = () => (s.rstCode === NGHTTP2_REFUSED_STREAM ? "connect-failure" : "reset");
  s.once("error", (err) => latch.settle(failure(err, false, resetClass())));
  s.once("close", () => {
    // Every stream closes; after its answer that is no failure, and no error is built (a stack trace per call).
    if (latch.done) return;
    latch.settle(
      failure(new AgentError(AgentErrors.UPSTREAM_RESET, `stream closed (${s.rstCode})`), false, resetClass()),
    );
  });
}
