import type { IncomingHttpHeaders, OutgoingHttpHeaders } from "node:http";
import { describe, expect, it } from "vitest";
import {
  b3FormOf,
  incomingTrace,
  newSpanId,
  newTraceId,
  parseB3Multi,
  parseB3Single,
  parseTraceparent,
  writeTraceHeaders,
} from "./trace-context.ts";

const TRACE = "4bf92f3577b34da6a3ce929d0e0e4736";
const SPAN = "00f067aa0ba902b7";

describe("parseTraceparent", () => {
  it("reads the trace, the parent span and the sampled flag", () => {
    expect(parseTraceparent(`00-${TRACE}-${SPAN}-01`)).toEqual({ traceId: TRACE, spanId: SPAN, sampled: true });
    expect(parseTraceparent(`00-${TRACE}-${SPAN}-00`)).toEqual({ traceId: TRACE, spanId: SPAN, sampled: false });
    // Other flag bits do not change the sampled bit.
    expect(parseTraceparent(`00-${TRACE}-${SPAN}-03`)?.sampled).toBe(true);
    expect(parseTraceparent(`00-${TRACE}-${SPAN}-02`)?.sampled).toBe(false);
  });

  it("reads a later version's first four fields, ignoring what it appends", () => {
    expect(parseTraceparent(`01-${TRACE}-${SPAN}-01-whatever`)).toEqual({
      traceId: TRACE,
      spanId: SPAN,
      sampled: true,
    });
    expect(parseTraceparent(`cc-${TRACE}-${SPAN}-00`)?.traceId).toBe(TRACE);
  });

  it.each([
    ["empty", ""],
    ["too short", `00-${TRACE}-${SPAN}-0`],
    ["version 00 with more fields", `00-${TRACE}-${SPAN}-01-extra`],
    ["a later version with glued fields", `01-${TRACE}-${SPAN}-01x`],
    ["version ff", `ff-${TRACE}-${SPAN}-01`],
    ["upper-case hex", `00-${TRACE.toUpperCase()}-${SPAN}-01`],
    ["all-zero trace id", `00-${"0".repeat(32)}-${SPAN}-01`],
    ["all-zero span id", `00-${TRACE}-${"0".repeat(16)}-01`],
    ["wrong separators", `00_${TRACE}_${SPAN}_01`],
    ["not hex", `00-${TRACE.replace("4", "g")}-${SPAN}-01`],
    ["flags not hex", `00-${TRACE}-${SPAN}-0z`],
    ["two headers joined", `00-${TRACE}-${SPAN}-01, 00-${TRACE}-${SPAN}-01`],
  ])("ignores a malformed header: %s", (_why, value) => {
    expect(parseTraceparent(value)).toBeUndefined();
  });
});

describe("B3", () => {
  it("reads the single header in its forms", () => {
    expect(parseB3Single(`${TRACE}-${SPAN}-1`)).toEqual({ traceId: TRACE, spanId: SPAN, sampled: true });
    expect(parseB3Single(`${TRACE}-${SPAN}-d-e457b5a2e4d86bd1`)).toEqual({
      traceId: TRACE,
      spanId: SPAN,
      sampled: true,
    });
    expect(parseB3Single(`${TRACE}-${SPAN}-0`)).toEqual({ traceId: TRACE, spanId: SPAN, sampled: false });
    // Deferred: no sampling state.
    expect(parseB3Single(`${TRACE}-${SPAN}`)).toEqual({ traceId: TRACE, spanId: SPAN, sampled: undefined });
    // A 64-bit trace id is left-padded to 128 bits.
    expect(parseB3Single(`a3ce929d0e0e4736-${SPAN}-1`)?.traceId).toBe(`0000000000000000a3ce929d0e0e4736`);
    // A decision alone.
    expect(parseB3Single("0")).toEqual({ sampled: false });
    expect(parseB3Single("1")).toEqual({ sampled: true });
  });

  it.each([
    ["a bad sampling state", `${TRACE}-${SPAN}-x`],
    ["a trace id of the wrong length", `${TRACE}ab-${SPAN}-1`],
    ["a short span id", `${TRACE}-00f067aa-1`],
    ["a bad parent span id", `${TRACE}-${SPAN}-1-xyz`],
    ["too many fields", `${TRACE}-${SPAN}-1-${SPAN}-1`],
    ["a lone unknown value", "maybe"],
    ["zero ids", `${"0".repeat(32)}-${SPAN}-1`],
  ])("ignores a malformed single header: %s", (_why, value) => {
    expect(parseB3Single(value)).toBeUndefined();
  });

  it("reads the multi-header form, x-b3-flags: 1 meaning sampled", () => {
    const h = { "x-b3-traceid": TRACE, "x-b3-spanid": SPAN, "x-b3-sampled": "0" };
    expect(parseB3Multi(h)).toEqual({ traceId: TRACE, spanId: SPAN, sampled: false });
    expect(parseB3Multi({ ...h, "x-b3-flags": "1" })?.sampled).toBe(true);
    expect(parseB3Multi({ ...h, "x-b3-sampled": undefined })?.sampled).toBeUndefined();
    expect(parseB3Multi({ "x-b3-sampled": "1" })).toEqual({ sampled: true });
    expect(parseB3Multi({ ...h, "x-b3-spanid": "nope" })).toBeUndefined();
    expect(parseB3Multi({ ...h, "x-b3-sampled": "yes" })).toBeUndefined();
  });
});

describe("incomingTrace", () => {
  it("prefers traceparent, then b3, then x-b3-*; a malformed one falls through to the next", () => {
    const b3Trace = "80f198ee56343ba864fe8b2a57d3eff7";
    const all: IncomingHttpHeaders = {
      traceparent: `00-${TRACE}-${SPAN}-01`,
      b3: `${b3Trace}-e457b5a2e4d86bd1-1`,
      "x-b3-traceid": "11111111111111111111111111111111",
      "x-b3-spanid": "2222222222222222",
    };
    expect(incomingTrace(all)?.traceId).toBe(TRACE);
    expect(incomingTrace({ ...all, traceparent: "garbage" })?.traceId).toBe(b3Trace);
    expect(incomingTrace({ ...all, traceparent: undefined, b3: "garbage" })?.traceId).toBe(
      "11111111111111111111111111111111",
    );
    expect(incomingTrace({ traceparent: "garbage", b3: "x" })).toBeUndefined();
    expect(incomingTrace({})).toBeUndefined();
  });

  it("names the B3 form that came", () => {
    expect(b3FormOf({ b3: "1" })).toBe("single");
    expect(b3FormOf({ "x-b3-traceid": TRACE })).toBe("multi");
    expect(b3FormOf({ traceparent: "x" })).toBeUndefined();
  });
});

describe("writeTraceHeaders", () => {
  it("writes traceparent, and B3 only in the form that came", () => {
    const h: OutgoingHttpHeaders = { tracestate: "congo=t61rcWkgMzE" };
    writeTraceHeaders(h, TRACE, SPAN, true, undefined, "e457b5a2e4d86bd1");
    expect(h).toEqual({ tracestate: "congo=t61rcWkgMzE", traceparent: `00-${TRACE}-${SPAN}-01` });

    const single: OutgoingHttpHeaders = { b3: "1" };
    writeTraceHeaders(single, TRACE, SPAN, false, "single", "e457b5a2e4d86bd1");
    expect(single).toEqual({ traceparent: `00-${TRACE}-${SPAN}-00`, b3: `${TRACE}-${SPAN}-0-e457b5a2e4d86bd1` });

    const multi: OutgoingHttpHeaders = { "x-b3-traceid": "x", "x-b3-flags": "1" };
    writeTraceHeaders(multi, TRACE, SPAN, true, "multi", "e457b5a2e4d86bd1");
    expect(multi).toEqual({
      traceparent: `00-${TRACE}-${SPAN}-01`,
      "x-b3-traceid": TRACE,
      "x-b3-spanid": SPAN,
      "x-b3-sampled": "1",
      "x-b3-parentspanid": "e457b5a2e4d86bd1",
    });
  });

  it("writes what the parser reads back", () => {
    const h: OutgoingHttpHeaders = { "x-b3-traceid": "" };
    writeTraceHeaders(h, TRACE, SPAN, true, "multi", undefined);
    expect(incomingTrace(h as IncomingHttpHeaders)).toEqual({ traceId: TRACE, spanId: SPAN, sampled: true });
    expect(parseB3Multi(h as IncomingHttpHeaders)).toEqual({ traceId: TRACE, spanId: SPAN, sampled: true });
  });
});

describe("ids", () => {
  it("are lower-case hex of the right length, and differ", () => {
    const traces = new Set(Array.from({ length: 1000 }, newTraceId));
    const spans = new Set(Array.from({ length: 1000 }, newSpanId));
    expect(traces.size).toBe(1000);
    expect(spans.size).toBe(1000);
    for (const t of traces) expect(t).toMatch(/^[0-9a-f]{32}$/);
    for (const s of spans) expect(s).toMatch(/^[0-9a-f]{16}$/);
  });
});
