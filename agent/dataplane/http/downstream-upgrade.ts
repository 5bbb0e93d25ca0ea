// The client side of an HTTP/1.1 Upgrade request. Node's server hands such a request over with
// its raw socket, so this downstream writes on the socket itself. The request goes through the
// whole chain like any other (route, policy, rate limit, retries, report); only a 101 from the
// upstream turns the connection into a pipe. Any other answer is written with `Connection: close`
// and the connection ends after it: nothing more on it can reach an app unparsed.

import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders } from "node:http";
import type { Socket } from "node:net";
import { PassThrough, type Readable } from "node:stream";
import { http } from "../../../api/node-http.ts";
import { pipeBoth } from "../pipe.ts";
import type { Downstream } from "./downstream.ts";
import { type ClientError, rawErrorHead } from "./errors.ts";

function head(status: number, headers: OutgoingHttpHeaders, extra: string[]): string {
  const lines = [`HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ""}`];
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined) continue;
    for (const v of Array.isArray(value) ? value : [value]) lines.push(`${name}: ${v}`);
  }
  return `${[...lines, ...extra].join("\r\n")}\r\n\r\n`;
}

export class UpgradeDownstream implements Downstream {
  readonly protocol = "http1";
  readonly grpc = false;
  readonly upgrade: string;
  /** An Upgrade request's body is whatever follows the 101: nothing is sent before it. */
  readonly body: Readable = new PassThrough().end();
  private sent = false;
  private finished = false;
  private readonly req: IncomingMessage;
  private readonly socket: Socket;
  /** Bytes the client sent after the request head: the upgraded protocol's first bytes. */
  private readonly early: Buffer;

  constructor(req: IncomingMessage, socket: Socket, early: Buffer) {
    this.req = req;
    this.socket = socket;
    this.early = early;
    this.upgrade = String(req.headers.upgrade ?? "");
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
  get headers(): IncomingHttpHeaders {
    return this.req.headers;
  }
  get rawHeaders() {
    return this.req.rawHeaders;
  }
  get gone() {
    return this.socket.destroyed;
  }
  get headersSent() {
    return this.sent;
  }
  onGone(listener: () => void) {
    this.socket.once("close", () => {
      if (!this.finished) listener();
    });
  }
  respond(status: number, headers: OutgoingHttpHeaders, endStream: boolean) {
    this.sent = true;
    this.socket.write(head(status, headers, ["connection: close"]));
    if (endStream) this.end();
  }
  sendBody(body: Readable): Promise<void> {
    return new Promise((resolve) => {
      body.on("data", (chunk: Buffer) => this.socket.write(chunk));
      body.once("end", () => {
        this.end();
        resolve();
      });
      body.once("error", () => this.abort());
      body.once("close", () => {
        if (!body.readableEnded) this.abort();
        resolve();
      });
    });
  }
  /** The upstream agreed (101): its head goes to the client, then bytes flow both ways untouched. */
  async switchProtocols(headers: OutgoingHttpHeaders, upstream: { socket: Socket; head: Buffer }): Promise<void> {
    this.sent = true;
    this.socket.write(head(101, headers, ["connection: Upgrade", `upgrade: ${this.upgrade}`]));
    if (upstream.head.length) this.socket.write(upstream.head);
    if (this.early.length) upstream.socket.write(this.early);
    await pipeBoth(this.socket, upstream.socket);
    this.finished = true;
  }
  fail(e: ClientError) {
    if (this.sent) return this.abort();
    this.sent = true;
    this.finished = true;
    this.socket.end(rawErrorHead(e));
  }
  abort() {
    this.socket.destroy();
  }
  private end() {
    this.finished = true;
    this.socket.end();
  }
}
