// Protocol detection: read the first bytes a client sends, decide, then push them back so the
// chosen handler reads the connection from its start.
//
// - HTTP/2 prior knowledge: the connection preface "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
// - HTTP/1.x: a known method followed by a space;
// - anything else (a TLS ClientHello, a binary protocol) is opaque TCP.
//
// A port declared `tcp` is never peeked. On an undeclared port a server-speaks-first protocol
// (MySQL, SMTP) sends nothing, so detection waits `timeoutMs` and then treats it as opaque.
// A client that resets or closes is "gone", and so is one that ends (FIN) on a port declared HTTP
// before its bytes decided: an HTTP client sends its request first, so there is nothing to forward,
// and forwarding it as opaque TCP would hold a pipe open for an app that may never end its side.
// On an undeclared port a client that half-closes first is opaque (its bytes, if any, come back as
// `leftover`): a server-speaks-first protocol still answers it (pipe.ts bounds how long).

import type { Socket } from "node:net";
import { ioDeadline } from "./io-deadline.ts";

export type Detected = "http1" | "h2" | "opaque" | "gone";

export interface Detection {
  readonly protocol: Detected;
  /**
   * Bytes read but not pushed back: the client half-closed before they decided anything, and a
   * stream cannot take bytes back after its end. Whoever forwards the connection sends them first.
   */
  readonly leftover: Buffer;
}

const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
const METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"].map((m) =>
  Buffer.from(`${m} `),
);
const LONGEST = Math.max(PREFACE.length, ...METHODS.map((m) => m.length));

/** "yes", "no", or "maybe" (a prefix: more bytes needed). */
function matches(buf: Buffer, pattern: Buffer): "yes" | "no" | "maybe" {
  const n = Math.min(buf.length, pattern.length);
  if (buf.compare(pattern, 0, n, 0, n) !== 0) return "no";
  return buf.length >= pattern.length ? "yes" : "maybe";
}

export function classify(buf: Buffer): Detected | "more" {
  let more = false;
  for (const [pattern, result] of [[PREFACE, "h2"], ...METHODS.map((m) => [m, "http1"])] as [Buffer, Detected][]) {
    const m = matches(buf, pattern);
    if (m === "yes") return result;
    if (m === "maybe") more = true;
  }
  return more && buf.length < LONGEST ? "more" : "opaque";
}

const NONE = Buffer.alloc(0);

/**
 * Resolves with the protocol; the bytes read are unshifted and the socket is left paused.
 * `declared`: the port is declared HTTP (http, http2, grpc), so only HTTP may go on.
 */
export function detectProtocol(socket: Socket, timeoutMs: number, declared = false): Promise<Detection> {
  return new Promise((resolve) => {
    let buffered: Buffer = NONE;
    const done = (protocol: Detected, ended = false) => {
      deadline?.clear();
      socket.removeListener("data", onData);
      socket.removeListener("end", onEnd);
      socket.removeListener("close", onClose);
      socket.pause();
      if (!ended && buffered.length) socket.unshift(buffered);
      resolve({ protocol, leftover: ended ? buffered : NONE });
    };
    const onData = (chunk: Buffer) => {
      buffered = buffered.length ? Buffer.concat([buffered, chunk]) : chunk;
      const result = classify(buffered);
      if (result !== "more") done(result);
    };
    const onEnd = () => done(declared ? "gone" : "opaque", true);
    const onClose = () => done("gone", true);
    const deadline = Number.isFinite(timeoutMs) ? ioDeadline(() => done("opaque"), timeoutMs) : undefined;
    socket.on("data", onData);
    socket.once("end", onEnd);
    socket.once("close", onClose);
    socket.resume();
  });
}
