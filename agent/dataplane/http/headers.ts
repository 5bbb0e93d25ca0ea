// Header handling on the way through: hop-by-hop headers are dropped (RFC 9110 §7.6.1), headers
// only the mesh may set are stripped from what clients send, every request gets an
// x-request-id, and route filters add, set and remove headers. Trace headers (W3C traceparent
// and tracestate, B3) are end-to-end headers and pass through untouched.

import { randomUUID } from "node:crypto";
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from "node:http";
import type { HeaderOps } from "../routing.ts";

/** Connection-specific headers: meaningful for one hop only, never forwarded. */
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authenticate",
  "proxy-authorization",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "http2-settings",
]);

/** Headers only nodemesh sets; a client cannot forge them. */
const INTERNAL_PREFIX = "x-nodemesh-";
/**
 * A verified client certificate is the mesh's to state (Envoy's forward_client_cert_details
 * SANITIZE): what a client sends is dropped. Set from the peer's identity once mTLS exists.
 */
const CLIENT_CERT = "x-forwarded-client-cert";

export function isHopByHop(name: string): boolean {
  return HOP_BY_HOP.has(name);
}

/**
 * The end-to-end headers of a request or response, for the next hop. Also drops the headers the
 * Connection header names, and HTTP/2 pseudo-headers (the caller sets its own).
 */
export function endToEnd(headers: IncomingHttpHeaders, stripInternal: boolean): OutgoingHttpHeaders {
  const named = headers.connection
    ? new Set(
        String(headers.connection)
          .split(",")
          .map((s) => s.trim().toLowerCase()),
      )
    : undefined;
  const out: OutgoingHttpHeaders = {};
  for (const name in headers) {
    if (name.charCodeAt(0) === 58 /* ":" */ || HOP_BY_HOP.has(name) || named?.has(name)) continue;
    if (stripInternal && (name.startsWith(INTERNAL_PREFIX) || name === CLIENT_CERT)) continue;
    out[name] = headers[name];
  }
  return out;
}

/** Adds x-request-id when the client sent none; returns it (logs and traces use it). */
export function ensureRequestId(headers: OutgoingHttpHeaders): string {
  const existing = headers["x-request-id"];
  if (typeof existing === "string" && existing.length > 0 && existing.length <= 256) return existing;
  const id = randomUUID();
  headers["x-request-id"] = id;
  return id;
}

export function applyHeaderOps(headers: OutgoingHttpHeaders, ops: HeaderOps | undefined): void {
  if (!ops) return;
  for (const [name, value] of ops.set) headers[name] = value;
  for (const [name, value] of ops.add) {
    const current = headers[name];
    if (current === undefined) headers[name] = value;
    else headers[name] = [...(Array.isArray(current) ? current : [String(current)]), value];
  }
  for (const name of ops.remove) delete headers[name];
}

/** A header's value as one string (several values joined as HTTP allows), or undefined. */
/** How many times a header occurs in Node's `rawHeaders` (name, value, name, value, …). */
export function countHeader(raw: readonly string[], name: string): number {
  let n = 0;
  for (let i = 0; i < raw.length; i += 2) if (raw[i]!.length === name.length && raw[i]!.toLowerCase() === name) n++;
  return n;
}

export function headerValue(headers: IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name];
  return v === undefined ? undefined : Array.isArray(v) ? v.join(", ") : v;
}

export const IDEMPOTENT_METHODS = new Set(["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"]);

/**
 * X-Forwarded-For with the immediate caller's address: appended to what the client sent, or
 * replacing it (`Sanitize`). The right-most entry is then always one an agent saw.
 */
export function forwardFor(headers: OutgoingHttpHeaders, address: string, mode: "Append" | "Sanitize"): void {
  const existing = headers["x-forwarded-for"];
  const sent = Array.isArray(existing) ? existing.join(", ") : existing === undefined ? "" : String(existing);
  headers["x-forwarded-for"] = mode === "Append" && sent.trim() !== "" ? `${sent}, ${address}` : address;
}
