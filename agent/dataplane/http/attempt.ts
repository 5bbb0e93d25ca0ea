// One attempt: a request sent to one endpoint, ending in exactly one Outcome — the upstream's
// answer (head received, body still streaming) or a failure classed for the retry logic. The
// contract is the same for HTTP/1.1 (attempt-http1.ts) and HTTP/2 (attempt-http2.ts); the
// skeleton they share (one outcome whatever fires first, the per-try timer, the pending slot,
// the body detached from a failed attempt) is OutcomeLatch.

import type { IncomingHttpHeaders, OutgoingHttpHeaders } from "node:http";
import type { Socket } from "node:net";
import type { Readable } from "node:stream";
import { type FailureClass, failureClass } from "../../errors.ts";
import type { BodySource } from "./body.ts";

export interface UpstreamResponse {
  readonly kind: "response";
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: Readable;
  /** The response ended with its headers (a gRPC trailers-only answer over HTTP/2). */
  readonly trailersOnly: boolean;
  readonly trailers: () => OutgoingHttpHeaders | undefined;
  readonly abort: () => void;
  /** A 101 to an Upgrade: the upstream connection, now raw, and the bytes read past the head. */
  readonly upgraded?: { readonly socket: Socket; readonly head: Buffer };
}

export interface UpstreamFailure {
  readonly kind: "failure";
  readonly error: unknown;
  readonly class: FailureClass;
  /** A pooled connection the server had already closed: safe to resend once. */
  readonly stale: boolean;
}

export type Outcome = UpstreamResponse | UpstreamFailure;

/** What an attempt sends: the downstream request with the headers the chain made for it. */
export interface UpstreamRequest {
  readonly method: string;
  /** Path and query. */
  readonly target: string;
  readonly authority: string;
  readonly grpc: boolean;
  readonly headers: OutgoingHttpHeaders;
  readonly body: BodySource;
  /** The protocol an HTTP/1.1 Upgrade request asks for (its `Upgrade` header). */
  readonly upgrade?: string;
}

export interface Attempt {
  readonly outcome: Promise<Outcome>;
  /** Ends the attempt now (the request's deadline, the client leaving). */
  abort(): void;
}

export function failure(error: unknown, stale = false, cls: FailureClass = failureClass(error)): UpstreamFailure {
  return { kind: "failure", error, class: cls, stale };
}

/** Resolves an attempt's outcome once, whatever fires first. */
export class OutcomeLatch {
  readonly outcome: Promise<Outcome>;
  private resolve!: (o: Outcome) => void;
  private settled = false;
  private readonly timer: NodeJS.Timeout | undefined;
  private readonly body: BodySource;
  private readonly releasePending: () => void;

  /** `onTimeout` runs once `timeoutMs` passes unsettled (Infinity: never). */
  constructor(body: BodySource, releasePending: () => void, timeoutMs: number, onTimeout: () => void) {
    this.body = body;
    this.releasePending = releasePending;
    this.outcome = new Promise((resolve) => {
      this.resolve = resolve;
    });
    this.timer = Number.isFinite(timeoutMs) ? setTimeout(onTimeout, Math.max(1, timeoutMs)) : undefined;
  }

  get done(): boolean {
    return this.settled;
  }

  settle(o: Outcome): void {
    if (this.settled) return;
    this.settled = true;
    clearTimeout(this.timer);
    this.releasePending();
    if (o.kind === "failure") this.body.detach();
    this.resolve(o);
  }
}
