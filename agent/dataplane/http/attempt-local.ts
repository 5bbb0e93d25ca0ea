// An HTTP/2 (and gRPC) attempt to one of this node's own pods, handed over in memory: the
// destination side's request chain (chain.ts, inbound, through the worker's HTTP frontend) runs on
// the request as the source side made it, in this worker. There is no tunnel, and no HTTP/2
// session on either side of one (through a same-node tunnel, local-tunnel.ts, nghttp2 framed every
// request and answer once more on each side, over a JavaScript stream). Everything the destination
// side does still happens: the checks a tunnel gets (inbound.ts admitTunnel: the target, STRICT),
// the caller's identity proven from the keyring (mtls.ts sameNodeCaller), the health check,
// AuthorizationPolicy, rate limits, x-forwarded-client-cert, and its metrics, spans and access log.
// The source side gets the destination's answer as any attempt's outcome (attempt.ts), and a
// refusal fails over as a refused tunnel does. HTTP/1.1 keeps the same-node tunnel: its framing in
// memory is cheap (llhttp, undici), and handing it over measured no less CPU (docs/benchmarks.md,
// twenty-fifth session).

import { EventEmitter } from "node:events";
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from "node:http";
import { PassThrough, Readable } from "node:stream";
import { AgentError, AgentErrors, errorCode } from "../../errors.ts";
import { readyToTunnel, tunnelRequest } from "../connect.ts";
import type { DataplaneContext, LocalPod } from "../context.ts";
import type { Endpoint } from "../endpoint.ts";
import { admitTunnel } from "../inbound.ts";
import { sameNodeCaller } from "../mtls.ts";
import type { Caller, PodContext } from "../pod.ts";
import { type Attempt, failure, type Outcome, OutcomeLatch, type UpstreamRequest } from "./attempt.ts";
import type { Downstream } from "./downstream.ts";
import { type ClientError, errorHeaders, grpcMessage } from "./errors.ts";

const NOTHING_PENDING = () => {};
const ignore = () => {};

/**
 * Sends `up` from `from` to `ep`, which is `to`, one of this worker's pods. `connectTimeoutMs`
 * bounds the wait for the source pod's certificate, as it bounds a tunnel's connect.
 */
export function attemptLocal(
  ctx: DataplaneContext,
  from: PodContext,
  to: LocalPod,
  ep: Endpoint,
  up: UpstreamRequest,
  connectTimeoutMs: number,
  timeoutMs: number,
): Attempt {
  const down = new LocalDownstream(up);
  const latch = new OutcomeLatch(up.body, NOTHING_PENDING, timeoutMs, () =>
    down.cancel(new AgentError(AgentErrors.PER_TRY_TIMEOUT)),
  );
  down.answered = (outcome) => latch.settle(outcome);
  // Held from now: the pod may leave the mesh while this waits, and its namespace must stay open.
  to.hold(down);
  admit(ctx, from, to, ep, down, connectTimeoutMs)
    .then(
      async (caller) => {
        if (!caller) return; // the source side gave up meanwhile
        try {
          await ctx.http.serveRequest(down, { direction: "inbound", to: to.ctx, port: ep.port, caller });
        } catch (err) {
          // A bug on the destination side, logged with its stack (as frontend.ts does): only this
          // request fails, and not as undelivered (the app may have seen it).
          ctx.log.error({ err }, "HTTP request handler failed");
          down.abort();
        }
        if (!latch.done) {
          latch.settle(failure(new AgentError(AgentErrors.UPSTREAM_RESET, "the destination side gave no answer")));
        }
      },
      // Refused before the destination side took it: undelivered, so it fails over.
      (err: unknown) => latch.settle(failure(err, false, "connect-failure")),
    )
    .finally(() => down.emit("close"));
  return {
    outcome: latch.outcome,
    abort: () => down.cancel(new AgentError(AgentErrors.UPSTREAM_RESET, "cancelled")),
  };
}

/**
 * The destination side's admission of the request, as of a tunnel's: the caller it comes from, or
 * a refusal thrown (undefined: the source side gave up meanwhile).
 */
async function admit(
  ctx: DataplaneContext,
  from: PodContext,
  to: LocalPod,
  ep: Endpoint,
  down: LocalDownstream,
  connectTimeoutMs: number,
): Promise<Caller | undefined> {
  await readyToTunnel(ctx, from, ep, connectTimeoutMs);
  if (down.gone) return undefined;
  const peer = sameNodeCaller(ctx, from, to.ctx, ep);
  try {
    return admitTunnel(ctx, to.ctx, tunnelRequest(from, ep, "h2"), { peer, sameNode: true }, from.pod.ip);
  } catch (err) {
    // As a refused tunnel: counted by the destination side, a connect failure to the source side.
    ctx.metrics.connectFailures.labels("inbound", errorCode(err)).inc();
    throw new AgentError(AgentErrors.TUNNEL_REFUSED, `${ep.ip}:${ep.port}: ${errorCode(err)}`);
  }
}

/** As Node's HTTP/2 server gives a head: lower-case names, string values, Set-Cookie a list. */
function incomingHeaders(headers: OutgoingHttpHeaders): IncomingHttpHeaders {
  const out: IncomingHttpHeaders = {};
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined) continue;
    if (Array.isArray(value)) {
      if (name === "set-cookie") out[name] = value.map(String);
      else out[name] = value.join(name === "cookie" ? "; " : ", ");
    } else out[name] = String(value);
  }
  return out;
}

/** A body that has ended before anyone reads it: a request without one, a trailers-only answer. */
class EndedBody extends Readable {
  constructor() {
    super({ read() {} });
    this.push(null);
  }
}
// Ended from the start (a Readable counts as ended only once its "end" was emitted, a tick later).
Object.defineProperty(EndedBody.prototype, "readableEnded", { get: () => true });

function endedBody(): Readable {
  return new EndedBody();
}

/** Every handed-over request without a body reads this one (nothing listens to an ended body: body.ts). */
const NO_REQUEST_BODY = endedBody();

/**
 * The destination side's client: the source side's request, read as a Downstream, whose answer
 * becomes the source side's outcome. `gone` once the source side no longer wants the answer.
 */
class LocalDownstream extends EventEmitter implements Downstream {
  readonly protocol = "h2";
  readonly method: string;
  readonly target: string;
  readonly authority: string;
  readonly headers: IncomingHttpHeaders;
  readonly body: Readable;
  readonly grpc: boolean;
  gone = false;
  headersSent = false;
  /** Where the answer goes: the source side's attempt. */
  answered: (outcome: Outcome) => void = NOTHING_PENDING;
  /** The answer's body as the source side reads it. */
  private response: PassThrough | undefined;
  /** The app's trailers, once its body has ended (sendBody). */
  private appTrailers: () => OutgoingHttpHeaders | undefined = () => undefined;
  /** The destination side's own trailers, which replace the app's (a gRPC status after the body started). */
  private ownTrailers: OutgoingHttpHeaders | undefined;
  private goneListeners: (() => void)[] = [];
  private raw: string[] | undefined;

  constructor(up: UpstreamRequest) {
    super();
    this.method = up.method;
    this.target = up.target;
    this.authority = up.authority;
    this.grpc = up.grpc;
    this.headers = incomingHeaders(up.headers);
    if (up.body.empty) this.body = NO_REQUEST_BODY;
    else {
      const body = new PassThrough();
      // Once the exchange is cancelled, what the source side still writes fails here, unheard.
      body.on("error", ignore);
      up.body.attach(body);
      this.body = body;
    }
  }

  /** Each header once, as the source side joined repeats (made when a policy asks). */
  get rawHeaders(): readonly string[] {
    if (this.raw) return this.raw;
    const raw: string[] = [];
    for (const name in this.headers) {
      const value = this.headers[name];
      if (Array.isArray(value)) for (const v of value) raw.push(name, v);
      else if (value !== undefined) raw.push(name, value);
    }
    this.raw = raw;
    return raw;
  }

  onGone(listener: () => void): void {
    this.goneListeners.push(listener);
  }

  /** The source side gave up (its deadline, its client leaving, the agent stopping). */
  cancel(reason: AgentError): void {
    if (!this.headersSent) this.answered(failure(reason));
    if (this.gone) return;
    this.gone = true;
    this.response?.destroy();
    if (this.body !== NO_REQUEST_BODY) this.body.destroy();
    for (const listener of this.goneListeners) listener();
  }

  destroy(): void {
    this.cancel(new AgentError(AgentErrors.UPSTREAM_RESET, "the agent is stopping"));
  }

  respond(status: number, headers: OutgoingHttpHeaders, endStream: boolean): void {
    this.headersSent = true;
    let body: Readable;
    if (endStream) body = endedBody();
    else {
      this.response = new PassThrough();
      // Broken off before the source side reads it (its retry, its client gone): nobody to tell.
      this.response.on("error", ignore);
      body = this.response;
    }
    this.answered({
      kind: "response",
      status,
      headers: incomingHeaders(headers),
      body,
      trailersOnly: endStream,
      trailers: () => this.ownTrailers ?? this.appTrailers(),
      abort: () => this.cancel(new AgentError(AgentErrors.UPSTREAM_RESET, "cancelled")),
    });
  }

  sendBody(body: Readable, trailers: () => OutgoingHttpHeaders | undefined): Promise<void> {
    const out = this.response!;
    this.appTrailers = trailers;
    return new Promise((resolve) => {
      body.pipe(out);
      body.once("error", () => this.abort());
      body.once("close", () => {
        if (!body.readableEnded) this.abort();
        resolve();
      });
      out.once("close", resolve);
    });
  }

  fail(e: ClientError): void {
    if (this.headersSent) {
      const out = this.response;
      // gRPC can still carry the status in trailers once the body has started.
      if (this.grpc && out && !out.writableEnded && !out.destroyed) {
        this.ownTrailers = { "grpc-status": String(e.grpcStatus), "grpc-message": grpcMessage(e.message) };
        out.end();
      } else this.abort();
      return;
    }
    if (this.grpc) {
      this.respond(200, errorHeaders(e, true), true);
      return;
    }
    this.respond(e.status, errorHeaders(e, false), false);
    this.response!.end(`${e.message}\n`);
  }

  /** Breaks off an answer under way: the source side's client sees its connection or stream reset. */
  abort(): void {
    if (!this.headersSent) {
      this.answered(failure(new AgentError(AgentErrors.UPSTREAM_RESET, "the destination side broke off")));
      return;
    }
    // Ended without its end: the source side breaks its own answer off (downstream.ts).
    this.response?.destroy();
  }
}
