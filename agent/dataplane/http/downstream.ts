// The client side of one request, the same shape for HTTP/1.1 and HTTP/2: what it asked and how
// to answer it. The request chain (chain.ts) is written once against this interface.

import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders, ServerResponse } from "node:http";
import http2 from "node:http2";
import type { Socket } from "node:net";
import type { Readable } from "node:stream";
import { type ClientError, errorHeaders, grpcMessage } from "./errors.ts";

export interface Downstream {
  readonly protocol: "http1" | "h2";
  readonly method: string;
  /** Path and query as sent (`:path`). */
  readonly target: string;
  readonly authority: string;
  /** Lower-case names, without pseudo-headers. */
  readonly headers: IncomingHttpHeaders;
  /** As received: name, value, name, value, … (repeats kept). */
  readonly rawHeaders: readonly string[];
  readonly body: Readable;
  readonly grpc: boolean;
  /** True once the client went away (no answer can reach it). */
  readonly gone: boolean;
  readonly headersSent: boolean;
  onGone(listener: () => void): void;
  /** Sends the response head; `endStream` when there is no body (a trailers-only gRPC answer). */
  respond(status: number, headers: OutgoingHttpHeaders, endStream: boolean): void;
  /** Streams the body, then the trailers (HTTP/2), then ends. Resolves when done or aborted. */
  sendBody(body: Readable, trailers: () => OutgoingHttpHeaders | undefined): Promise<void>;
  /** The agent's own error answer (errors.ts decides what it looks like). */
  fail(error: ClientError): void;
  /** Breaks off a response already under way. */
  abort(): void;
  /** An HTTP/1.1 Upgrade request: the protocol it asks for (downstream-upgrade.ts). */
  readonly upgrade?: string;
  /** After a 101: the upstream's head to the client, then a pipe both ways until either side ends. */
  switchProtocols?(headers: OutgoingHttpHeaders, upstream: { socket: Socket; head: Buffer }): Promise<void>;
}

export class Http1Downstream implements Downstream {
  readonly protocol = "http1";
  readonly grpc = false;
  private readonly req: IncomingMessage;
  private readonly res: ServerResponse;
  constructor(req: IncomingMessage, res: ServerResponse) {
    this.req = req;
    this.res = res;
  }
  get method() {
    return this.req.method ?? "GET";
  }
  get target() {
    return this.req.url ?? "/";
  }
  get authority() {
    return this.req.headers.host ?? "";
  }
  get headers() {
    return this.req.headers;
  }
  get rawHeaders() {
    return this.req.rawHeaders;
  }
  get body(): Readable {
    return this.req;
  }
  get gone() {
    return this.res.destroyed || this.req.socket.destroyed;
  }
  get headersSent() {
    return this.res.headersSent;
  }
  onGone(listener: () => void) {
    this.res.once("close", () => {
      if (!this.res.writableFinished) listener();
    });
  }
  respond(status: number, headers: OutgoingHttpHeaders, endStream: boolean) {
    this.res.writeHead(status, headers);
    if (endStream) this.res.end();
  }
  sendBody(body: Readable, _trailers: () => OutgoingHttpHeaders | undefined): Promise<void> {
    return new Promise((resolve) => {
      body.pipe(this.res);
      body.once("error", () => this.abort());
      // An upstream that stopped before the end of its body: the client must not wait forever.
      body.once("close", () => {
        if (!body.readableEnded) this.abort();
        resolve();
      });
      this.res.once("close", resolve);
    });
  }
  fail(e: ClientError) {
    if (this.res.headersSent) return this.abort();
    const body = `${e.message}\n`;
    this.res.writeHead(e.status, { ...errorHeaders(e, false), "content-length": Buffer.byteLength(body) });
    this.res.end(body);
  }
  abort() {
    this.req.socket.destroy();
  }
}

export class Http2Downstream implements Downstream {
  readonly protocol = "h2";
  readonly grpc: boolean;
  readonly headers: IncomingHttpHeaders;
  readonly method: string;
  readonly target: string;
  readonly authority: string;
  readonly rawHeaders: readonly string[];
  private readonly stream: http2.ServerHttp2Stream;
  constructor(stream: http2.ServerHttp2Stream, raw: http2.IncomingHttpHeaders, rawHeaders: readonly string[]) {
    this.stream = stream;
    this.rawHeaders = rawHeaders;
    this.method = String(raw[":method"] ?? "GET");
    this.target = String(raw[":path"] ?? "/");
    this.authority = String(raw[":authority"] ?? raw.host ?? "");
    this.headers = raw as IncomingHttpHeaders;
    this.grpc = String(raw["content-type"] ?? "").startsWith("application/grpc");
  }
  get body(): Readable {
    return this.stream;
  }
  get gone() {
    return this.stream.destroyed || this.stream.closed;
  }
  get headersSent() {
    return this.stream.headersSent;
  }
  onGone(listener: () => void) {
    this.stream.once("close", () => {
      if (this.stream.rstCode !== http2.constants.NGHTTP2_NO_ERROR) listener();
    });
  }
  respond(status: number, headers: OutgoingHttpHeaders, endStream: boolean) {
    this.stream.respond({ ...headers, ":status": status }, { endStream, waitForTrailers: !endStream });
  }
  sendBody(body: Readable, trailers: () => OutgoingHttpHeaders | undefined): Promise<void> {
    return new Promise((resolve) => {
      this.stream.once("wantTrailers", () => {
        this.stream.sendTrailers(trailers() ?? {});
      });
      body.pipe(this.stream);
      body.once("error", () => this.abort());
      body.once("close", () => {
        if (!body.readableEnded) this.abort();
      });
      this.stream.once("close", resolve);
    });
  }
  fail(e: ClientError) {
    if (this.stream.destroyed) return;
    if (this.stream.headersSent) {
      if (this.grpc) {
        // gRPC can still carry the status in trailers once the body has started.
        try {
          this.stream.sendTrailers({
            "grpc-status": String(e.grpcStatus),
            "grpc-message": grpcMessage(e.message),
          });
          return;
        } catch {}
      }
      return this.abort();
    }
    if (this.grpc) {
      this.stream.respond({ ":status": 200, ...errorHeaders(e, true) }, { endStream: true });
      return;
    }
    this.stream.respond({ ":status": e.status, ...errorHeaders(e, false) });
    this.stream.end(`${e.message}\n`);
  }
  abort() {
    if (!this.stream.destroyed) this.stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
  }
}
