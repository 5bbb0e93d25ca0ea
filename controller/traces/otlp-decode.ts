// OTLP trace requests (protobuf or JSON) turned into the spans the trace window keeps. Both
// encodings go through one walk over the message as protobufjs' toObject shapes it (JSON OTLP has
// the same field names), differing only in how ids are spelled: base64 from protobuf, hex in JSON
// (the OTLP spec's JSON mapping). Each span is checked and trimmed here, so nothing unbounded or
// malformed reaches the window: bad spans are counted as rejected, not stored.

import { ExportTraceServiceRequest } from "../../api/otlp.ts";
import type { Attributes, AttributeValue, SpanKind, SpanStatus } from "../../api/traces.ts";

/** What one span may hold: longer strings are cut, further attributes and events dropped. */
export const SPAN_LIMITS = {
  nameChars: 256,
  attributes: 64,
  valueChars: 2048,
  events: 64,
  /** Nesting of array and key-value values. */
  depth: 4,
} as const;

export interface IngestEvent {
  name: string;
  timeNs: bigint;
  attributes: Attributes;
}

export interface IngestSpan {
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  kind: SpanKind;
  startNs: bigint;
  endNs: bigint;
  status: SpanStatus;
  statusMessage: string;
  attributes: Attributes;
  events: IngestEvent[];
  resource: Attributes;
}

export interface Decoded {
  spans: IngestSpan[];
  /** Spans present in the request but malformed (bad ids or times). */
  invalid: number;
}

/** The request body is not an OTLP trace request at all. */
export class OtlpDecodeError extends Error {}

const KINDS: readonly SpanKind[] = ["unspecified", "internal", "server", "client", "producer", "consumer"];
const STATUSES: readonly SpanStatus[] = ["unset", "ok", "error"];

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);
const list = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);

export function decodeProtobuf(body: Uint8Array): Decoded {
  let message: unknown;
  try {
    message = ExportTraceServiceRequest.toObject(ExportTraceServiceRequest.decode(body), {
      longs: String,
      enums: Number,
      bytes: String,
    });
  } catch (err) {
    throw new OtlpDecodeError(`not an OTLP ExportTraceServiceRequest: ${(err as Error).message}`);
  }
  return walk(message as Obj, "base64");
}

export function decodeJson(body: Buffer): Decoded {
  let message: unknown;
  try {
    message = JSON.parse(body.toString("utf8"));
  } catch (err) {
    throw new OtlpDecodeError(`the body is not valid JSON: ${(err as Error).message}`);
  }
  if (!isObj(message)) throw new OtlpDecodeError("the body must be a JSON object (ExportTraceServiceRequest)");
  return walk(message, "hex");
}

function walk(message: Obj, ids: "base64" | "hex"): Decoded {
  const spans: IngestSpan[] = [];
  let invalid = 0;
  for (const rs of list(message.resourceSpans)) {
    if (!isObj(rs)) continue;
    const resource = attributes(isObj(rs.resource) ? rs.resource.attributes : undefined);
    for (const ss of list(rs.scopeSpans)) {
      if (!isObj(ss)) continue;
      for (const raw of list(ss.spans)) {
        const span = isObj(raw) ? toSpan(raw, resource, ids) : undefined;
        if (span) spans.push(span);
        else invalid++;
      }
    }
  }
  return { spans, invalid };
}

function toSpan(s: Obj, resource: Attributes, ids: "base64" | "hex"): IngestSpan | undefined {
  const traceId = id(s.traceId, 16, ids);
  const spanId = id(s.spanId, 8, ids);
  const parent = s.parentSpanId === undefined || s.parentSpanId === "" ? "" : id(s.parentSpanId, 8, ids);
  const startNs = nanos(s.startTimeUnixNano);
  const endNs = nanos(s.endTimeUnixNano);
  if (!traceId || !spanId || parent === undefined || startNs === undefined || endNs === undefined) return undefined;
  if (startNs === 0n || endNs < startNs) return undefined;
  const status = isObj(s.status) ? s.status : {};
  return {
    traceId,
    spanId,
    parentSpanId: parent,
    name: text(s.name, SPAN_LIMITS.nameChars),
    kind: KINDS[Number(s.kind ?? 0)] ?? "unspecified",
    startNs,
    endNs,
    status: STATUSES[Number(status.code ?? 0)] ?? "unset",
    statusMessage: text(status.message, SPAN_LIMITS.valueChars),
    attributes: attributes(s.attributes),
    events: list(s.events)
      .slice(0, SPAN_LIMITS.events)
      .flatMap((e) => {
        const timeNs = isObj(e) ? nanos(e.timeUnixNano) : undefined;
        if (!isObj(e) || timeNs === undefined) return [];
        return [{ name: text(e.name, SPAN_LIMITS.nameChars), timeNs, attributes: attributes(e.attributes) }];
      }),
    resource,
  };
}

/** A non-zero id of `bytes` bytes as lower-case hex; undefined if malformed. */
function id(value: unknown, bytes: number, encoding: "base64" | "hex"): string | undefined {
  if (typeof value !== "string") return undefined;
  const hex = encoding === "hex" ? value.toLowerCase() : Buffer.from(value, "base64").toString("hex");
  if (hex.length !== bytes * 2 || !/^[0-9a-f]+$/.test(hex) || /^0+$/.test(hex)) return undefined;
  return hex;
}

function nanos(value: unknown): bigint | undefined {
  if (typeof value === "number" && Number.isSafeInteger(value) && value >= 0) return BigInt(value);
  if (typeof value === "string" && /^\d{1,20}$/.test(value)) return BigInt(value);
  return undefined;
}

function text(value: unknown, max: number): string {
  return typeof value === "string" ? value.slice(0, max) : "";
}

function attributes(kvs: unknown): Attributes {
  const out: Attributes = {};
  let n = 0;
  for (const kv of list(kvs)) {
    if (n >= SPAN_LIMITS.attributes) break;
    if (!isObj(kv) || typeof kv.key !== "string" || !kv.key) continue;
    out[kv.key.slice(0, SPAN_LIMITS.nameChars)] = anyValue(kv.value, SPAN_LIMITS.depth);
    n++;
  }
  return out;
}

/** An OTLP AnyValue; int64 arrives as a string (protobuf Long, or JSON's decimal string). */
function anyValue(v: unknown, depth: number): AttributeValue {
  if (!isObj(v)) return null;
  if (typeof v.stringValue === "string") return v.stringValue.slice(0, SPAN_LIMITS.valueChars);
  if (typeof v.boolValue === "boolean") return v.boolValue;
  if (v.intValue !== undefined) {
    const n = Number(v.intValue);
    return Number.isFinite(n) ? n : null;
  }
  if (v.doubleValue !== undefined) {
    const n = Number(v.doubleValue);
    return Number.isFinite(n) ? n : null;
  }
  if (typeof v.bytesValue === "string") return v.bytesValue.slice(0, SPAN_LIMITS.valueChars);
  if (depth === 0) return null;
  if (isObj(v.arrayValue)) {
    return list(v.arrayValue.values)
      .slice(0, SPAN_LIMITS.attributes)
      .map((x) => anyValue(x, depth - 1));
  }
  if (isObj(v.kvlistValue)) {
    const out: Record<string, AttributeValue> = {};
    for (const kv of list(v.kvlistValue.values).slice(0, SPAN_LIMITS.attributes)) {
      if (isObj(kv) && typeof kv.key === "string")
        out[kv.key.slice(0, SPAN_LIMITS.nameChars)] = anyValue(kv.value, depth - 1);
    }
    return out;
  }
  return null;
}
