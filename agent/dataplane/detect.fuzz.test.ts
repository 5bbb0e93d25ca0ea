// Fuzzing protocol detection (detect.ts): the first bytes of every intercepted connection.

import type { Socket } from "node:net";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { chunked, fakeSocket, fuzzParams, readAll } from "../../test/fuzz/fuzz.ts";
import { classify, detectProtocol } from "./detect.ts";

const PREFACE = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];

/** Bytes near what detection looks for: prefixes of the preface and methods, then anything. */
const opening = fc
  .tuple(
    fc.oneof(
      fc.constantFrom(PREFACE, ...METHODS.map((m) => `${m} `), "PRI * HTTP/1.1", "GE", "get ", "\x16\x03\x01"),
      fc.string({ maxLength: 4 }),
    ),
    fc.nat(),
    fc.uint8Array({ maxLength: 40 }),
  )
  .map(([p, cut, tail]) => Buffer.concat([Buffer.from(p.slice(0, cut % (p.length + 1)), "latin1"), tail]));
const anyBytes = fc.oneof(
  opening,
  fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a)),
);

describe("protocol detection (fuzz)", () => {
  it("classify never throws and names one of its answers", () => {
    fc.assert(
      fc.property(anyBytes, (buf) => {
        expect(["http1", "h2", "opaque", "more"]).toContain(classify(buf));
      }),
      fuzzParams(2000),
    );
  });

  it("asks for more only on a strict prefix of what it recognises", () => {
    fc.assert(
      fc.property(anyBytes, (buf) => {
        const s = buf.toString("latin1");
        const patterns = [PREFACE, ...METHODS.map((m) => `${m} `)];
        const result = classify(buf);
        if (result === "more") expect(patterns.some((p) => p.length > s.length && p.startsWith(s))).toBe(true);
        if (result === "h2") expect(s.startsWith(PREFACE)).toBe(true);
        if (result === "http1") expect(METHODS.some((m) => s.startsWith(`${m} `))).toBe(true);
      }),
      fuzzParams(2000),
    );
  });

  it("a decision stands whatever bytes follow (chunking cannot change it)", () => {
    fc.assert(
      fc.property(anyBytes, fc.uint8Array({ maxLength: 32 }), (buf, more) => {
        const first = classify(buf);
        if (first !== "more") expect(classify(Buffer.concat([buf, more]))).toBe(first);
      }),
      fuzzParams(2000),
    );
  });

  it("detectProtocol on any chunking: the classification of the whole, and every byte given back", async () => {
    await fc.assert(
      fc.asyncProperty(anyBytes, fc.array(fc.nat(), { maxLength: 6 }), fc.boolean(), async (bytes, cuts, declared) => {
        const socket = fakeSocket(chunked(bytes, cuts));
        const { protocol, leftover } = await detectProtocol(socket as unknown as Socket, 5000, declared);
        const whole = classify(bytes);
        const rest = await readAll(socket);
        if (whole === "more") {
          // The client ended before its bytes decided: nothing may be lost (it is in the leftover).
          expect(protocol).toBe(declared ? "gone" : "opaque");
          expect(Buffer.concat([leftover, rest]).equals(bytes)).toBe(true);
        } else if (bytes.length > 0) {
          expect(protocol).toBe(whole);
          expect(leftover.length).toBe(0);
          expect(rest.equals(bytes)).toBe(true);
        }
      }),
      fuzzParams(300, 0.1),
    );
  });
});
