// Trace context on the wire: the caller's W3C `traceparent` (Trace Context Level 1) or B3 (the
// single `b3` header or the multi `x-b3-*` headers) read, and the next hop's written. A header
// that does not parse is ignored as if absent (a new trace starts): never an error to the client.

import { randomFillSync } from "node:crypto";
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from "node:http";

/** What a caller's headers say about the trace a request belongs to. */
export interface IncomingTrace {
  /** 32 lower-case hex digits; undefined when only a B3 sampling decision came (`b3: 1`). */
  readonly traceId?: string;
  /** The caller's span (16 hex digits): the parent of this agent's server span. */
  readonly spanId?: string;
  /** The caller's decision; undefined when B3 deferred it (no sampled flag). */
  readonly sampled?: boolean;
}

/** Which B3 form the request carried: the next hop gets the same form back (beside traceparent). */
export type B3Form = "single" | "multi" | undefined;

const HEX = /^[0-9a-f]+$/;
const ZERO_TRACE = "0".repeat(32);
const ZERO_SPAN = "0".repeat(16);

/**
 * W3C traceparent: `version-traceid-parentid-flags`. Version 00 is exactly 55 characters; a
 * later version may append fields after a `-` (read as 00, as the spec asks); `ff` is invalid.
 */
export function parseTraceparent(value: string | undefined): IncomingTrace | undefined {
  if (value === undefined || value.length < 55) return undefined;
  if (value.length > 55 && (value.startsWith("00") || value.charCodeAt(55) !== 45)) return undefined;
  if (value[2] !== "-" || value[35] !== "-" || value[52] !== "-") return undefined;
  const version = value.slice(0, 2);
  const traceId = value.slice(3, 35);
  const spanId = value.slice(36, 52);
  const flags = value.slice(53, 55);
  if (!HEX.test(version) || version === "ff" || !HEX.test(traceId) || !HEX.test(spanId) || !HEX.test(flags)) {
    return undefined;
  }
  if (traceId === ZERO_TRACE || spanId === ZERO_SPAN) return undefined;
  return { traceId, spanId, sampled: (Number.parseInt(flags, 16) & 1) === 1 };
}

/** A B3 trace id: 16 or 32 hex digits, the 64-bit form left-padded to 128 bits (as OpenTelemetry does). */
function b3TraceId(value: string | undefined): string | undefined {
  if (value === undefined || (value.length !== 16 && value.length !== 32) || !HEX.test(value)) return undefined;
  const id = value.length === 16 ? `${ZERO_SPAN}${value}` : value;
  return id === ZERO_TRACE ? undefined : id;
}

function b3SpanId(value: string | undefined): string | undefined {
  return value !== undefined && value.length === 16 && HEX.test(value) && value !== ZERO_SPAN ? value : undefined;
}

/** B3's sampling state: `1`, `d` (debug: sampled) or `0`; undefined when deferred; null when invalid. */
function b3Sampled(value: string | undefined): boolean | undefined | null {
  if (value === undefined) return undefined;
  if (value === "1" || value === "d" || value === "true") return true;
  if (value === "0" || value === "false") return false;
  return null;
}

/** The single header: `{traceid}-{spanid}[-{sampling}[-{parentspanid}]]`, or a decision alone (`0`, `1`, `d`). */
export function parseB3Single(value: string | undefined): IncomingTrace | undefined {
  if (value === undefined) return undefined;
  const parts = value.trim().toLowerCase().split("-");
  if (parts.length === 1) {
    const sampled = b3Sampled(parts[0]);
    return typeof sampled === "boolean" ? { sampled } : undefined;
  }
  if (parts.length > 4) return undefined;
  const traceId = b3TraceId(parts[0]);
  const spanId = b3SpanId(parts[1]);
  const sampled = b3Sampled(parts[2]);
  if (!traceId || !spanId || sampled === null) return undefined;
  if (parts.length === 4 && !b3SpanId(parts[3])) return undefined;
  return { traceId, spanId, sampled };
}

/** The multi-header form: x-b3-traceid and x-b3-spanid, x-b3-sampled (or x-b3-flags: 1, debug). */
export function parseB3Multi(headers: IncomingHttpHeaders): IncomingTrace | undefined {
  const debug = headers["x-b3-flags"] === "1";
  const sampled = debug ? true : b3Sampled(single(headers["x-b3-sampled"])?.toLowerCase());
  if (sampled === null) return undefined;
  const rawTrace = single(headers["x-b3-traceid"]);
  if (rawTrace === undefined) return typeof sampled === "boolean" ? { sampled } : undefined;
  const traceId = b3TraceId(rawTrace.toLowerCase());
  const spanId = b3SpanId(single(headers["x-b3-spanid"])?.toLowerCase());
  return traceId && spanId ? { traceId, spanId, sampled } : undefined;
}

function single(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? undefined : v;
}

/**
 * The caller's trace context: traceparent first (the W3C standard, and what agents send each
 * other), then the single b3 header, then the multi-header form. Undefined when none parses.
 */
export function incomingTrace(headers: IncomingHttpHeaders): IncomingTrace | undefined {
  const tp = headers.traceparent;
  if (tp !== undefined) {
    const w3c = parseTraceparent(single(tp));
    if (w3c) return w3c;
  }
  if (headers.b3 !== undefined) {
    const b3 = parseB3Single(single(headers.b3));
    if (b3) return b3;
  }
  if (headers["x-b3-traceid"] !== undefined || headers["x-b3-sampled"] !== undefined) return parseB3Multi(headers);
  return undefined;
}

export function b3FormOf(headers: IncomingHttpHeaders): B3Form {
  if (headers.b3 !== undefined) return "single";
  return headers["x-b3-traceid"] !== undefined ? "multi" : undefined;
}

/**
 * The next hop's trace headers: traceparent always; B3 in the form the caller used, if any.
 * `parentId`: the span the next hop's spans are children of (B3 names it as x-b3-parentspanid).
 */
export function writeTraceHeaders(
  headers: OutgoingHttpHeaders,
  traceId: string,
  spanId: string,
  sampled: boolean,
  b3: B3Form,
  parentId: string | undefined,
): void {
  headers.traceparent = `00-${traceId}-${spanId}-${sampled ? "01" : "00"}`;
  if (b3 === "single") {
    headers.b3 = `${traceId}-${spanId}-${sampled ? "1" : "0"}${parentId ? `-${parentId}` : ""}`;
  } else if (b3 === "multi") {
    headers["x-b3-traceid"] = traceId;
    headers["x-b3-spanid"] = spanId;
    headers["x-b3-sampled"] = sampled ? "1" : "0";
    if (parentId) headers["x-b3-parentspanid"] = parentId;
    else delete headers["x-b3-parentspanid"];
    delete headers["x-b3-flags"]; // a debug flag would override x-b3-sampled
  }
}

// Ids: random bytes drawn from a pool refilled 4 KB at a time (one system call per 256 trace ids).
const POOL_BYTES = 4096;
const pool = Buffer.alloc(POOL_BYTES);
let used = POOL_BYTES;

function randomHex(bytes: number, zero: string): string {
  for (;;) {
    if (used + bytes > POOL_BYTES) {
      randomFillSync(pool);
      used = 0;
    }
    const id = pool.toString("hex", used, used + bytes);
    used += bytes;
    if (id !== zero) return id; // all-zero ids are invalid (1 in 2^64 at worst)
  }
}

export function newTraceId(): string {
  return randomHex(16, ZERO_TRACE);
}

export function newSpanId(): string {
  return randomHex(8, ZERO_SPAN);
}
