// Fuzzing what the HTTP proxy reads from a request's head beyond Node's parser: headers passed on
// (hop-by-hop, Connection-named, internal), grpc-timeout, the authority's host, X-Forwarded-For,
// trace ids, gRPC statuses; and what it writes back (grpc-message, raw error heads).

import type { IncomingHttpHeaders } from "node:http";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { fuzzParams } from "../../../test/fuzz/fuzz.ts";
import { AgentError, AgentErrors } from "../../errors.ts";
import { traceIdOf } from "../access-log.ts";
import { AUTHORITY, hostOf } from "./authorize.ts";
import { clientError, grpcMessage, rawErrorAnswer } from "./errors.ts";
import { countHeader, endToEnd, forwardFor, isHopByHop } from "./headers.ts";
import { grpcTimeoutMs } from "./plan.ts";
import { grpcStatusLabel } from "./record.ts";

const headerName = fc.oneof(
  fc.constantFrom(
    "connection",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
    "te",
    "x-nodemesh-source",
    "x-nodemesh-error",
    "x-forwarded-client-cert",
    "x-debug",
    "host",
    "content-length",
    ":path",
  ),
  fc.stringMatching(/^[a-z][a-z0-9-]{0,10}$/),
);
const headers: fc.Arbitrary<IncomingHttpHeaders> = fc.dictionary(
  headerName,
  fc.oneof(
    fc.string({ maxLength: 20 }),
    fc
      .array(headerName, { maxLength: 4 })
      .map((names) => names.join(fc.sample(fc.constantFrom(",", ", ", " ,\t"), 1)[0])),
    fc.array(fc.string({ maxLength: 5 }), { minLength: 1, maxLength: 3 }),
  ),
);

describe("HTTP input helpers (fuzz)", () => {
  it("endToEnd drops exactly the hop-by-hop, Connection-named, pseudo and (inbound) internal headers", () => {
    fc.assert(
      fc.property(headers, fc.boolean(), (incoming, stripInternal) => {
        const out = endToEnd(incoming, stripInternal);
        const named = new Set(
          incoming.connection
            ? String(incoming.connection)
                .split(",")
                .map((s) => s.trim().toLowerCase())
            : [],
        );
        for (const [name, value] of Object.entries(incoming)) {
          const dropped =
            name.startsWith(":") ||
            isHopByHop(name) ||
            named.has(name) ||
            (stripInternal && (name.startsWith("x-nodemesh-") || name === "x-forwarded-client-cert"));
          if (dropped) expect(Object.hasOwn(out, name)).toBe(false);
          else expect(out[name]).toBe(value);
        }
        for (const name of Object.keys(out)) expect(Object.hasOwn(incoming, name)).toBe(true);
      }),
      fuzzParams(2000),
    );
  });

  it("countHeader counts a name in rawHeaders whatever its case", () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.constantFrom("Host", "host", "HOST", "hosts", "x", ""), fc.string({ maxLength: 4 }))),
        (pairs) => {
          const raw = pairs.flat();
          expect(countHeader(raw, "host")).toBe(pairs.filter(([n]) => n.toLowerCase() === "host").length);
        },
      ),
      fuzzParams(1000),
    );
  });

  it("forwardFor: the immediate caller is always the last entry", () => {
    fc.assert(
      fc.property(
        fc.option(fc.oneof(fc.string({ maxLength: 20 }), fc.array(fc.string({ maxLength: 8 }), { maxLength: 3 })), {
          nil: undefined,
        }),
        fc.constantFrom("Append" as const, "Sanitize" as const),
        (sent, mode) => {
          const h = sent === undefined ? {} : { "x-forwarded-for": sent };
          forwardFor(h, "10.244.1.5", mode);
          const value = h["x-forwarded-for"] as string;
          expect(value.endsWith("10.244.1.5")).toBe(true);
          if (mode === "Sanitize") expect(value).toBe("10.244.1.5");
        },
      ),
      fuzzParams(1000),
    );
  });

  it("grpcTimeoutMs: any header value gives a finite non-negative time or none; well-formed ones round trip", () => {
    const units = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000001 };
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string({ maxLength: 12 }),
          fc
            .tuple(fc.integer({ min: 0, max: 99_999_999 }), fc.constantFrom(...Object.keys(units)))
            .map(([n, u]) => `${n}${u}`),
        ),
        (value) => {
          const ms = grpcTimeoutMs(value);
          const m = /^(\d{1,8})([HMSmun])$/.exec(value);
          if (!m) expect(ms).toBeUndefined();
          else expect(ms).toBe(Number(m[1]) * units[m[2] as keyof typeof units]);
          if (ms !== undefined) expect(Number.isFinite(ms) && ms >= 0).toBe(true);
        },
      ),
      fuzzParams(2000),
    );
  });

  it("hostOf: an authority authorization takes gives a lower-case host without its port", () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string({ maxLength: 30 }),
          fc
            .tuple(
              fc.constantFrom("Web.Default.", "[::1]", "[FE80::1", "10.0.0.1", "", "admin.internal:80", "a@b"),
              fc.constantFrom("", ":", ":80", ":x", ":80:80"),
            )
            .map(([h, p]) => h + p),
        ),
        (authority) => {
          const host = hostOf(authority);
          expect(host).toBe(host.toLowerCase());
          if (!AUTHORITY.test(authority)) return; // refused before any policy reads it
          if (authority.startsWith("[")) expect(host).toMatch(/^\[[0-9a-z:.]+\]$/);
          else expect(host).not.toContain(":");
        },
      ),
      fuzzParams(2000),
    );
  });

  it.each(["admin.internal:80:80", "admin.internal:x", "admin.internal:", "::", "a@admin.internal", "[::1]:80:80"])(
    "found by fuzzing: %j is not host[:port] (hostOf would read another host than the app)",
    (authority) => {
      const host = hostOf(authority);
      expect(AUTHORITY.test(authority) && host.includes(":") && !host.startsWith("[")).toBe(false);
      if (authority !== "admin.internal:") expect(AUTHORITY.test(authority)).toBe(false);
    },
  );

  it("grpc-message: printable ASCII that percent-decodes to the message's UTF-8 bytes", () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.string({ unit: "binary" })), (text) => {
        const encoded = grpcMessage(text);
        expect(encoded).toMatch(/^[\x20-\x7e]*$/);
        const bytes: number[] = [];
        for (let i = 0; i < encoded.length; i++) {
          if (encoded[i] === "%") {
            bytes.push(Number.parseInt(encoded.slice(i + 1, i + 3), 16));
            i += 2;
          } else bytes.push(encoded.charCodeAt(i));
        }
        expect(Buffer.from(bytes).equals(Buffer.from(text, "utf8"))).toBe(true);
      }),
      fuzzParams(2000),
    );
  });

  it("a raw error answer is one well-formed head, whatever was thrown", () => {
    const kinds = Object.values(AgentErrors);
    fc.assert(
      fc.property(
        fc.oneof(
          fc
            .tuple(fc.constantFrom(...kinds), fc.option(fc.string(), { nil: undefined }))
            .map(([k, d]) => new AgentError(k, d)),
          fc.stringMatching(/^E[A-Z_]{1,12}$/).map((code) => Object.assign(new Error("socket"), { code })),
          fc.anything(),
        ),
        (err) => {
          const head = rawErrorAnswer(err);
          expect(head).toMatch(/^HTTP\/1\.1 \d{3} [^\r\n]+\r\n/);
          expect(head.indexOf("\r\n\r\n")).toBe(head.length - 4);
          expect(head).toMatch(/\r\nX-Nodemesh-Error: [A-Z0-9_]+\r\n/);
          expect(clientError(err).status).toBeGreaterThanOrEqual(400);
        },
      ),
      fuzzParams(1000),
    );
  });

  it("trace ids and gRPC status labels from any header value", () => {
    fc.assert(
      fc.property(
        fc.option(fc.string({ maxLength: 70 }), { nil: undefined }),
        fc.option(fc.string({ maxLength: 40 }), { nil: undefined }),
        // A header or trailer value as Node gives it: a string, repeated ones as a list, or none.
        fc.oneof(fc.string({ maxLength: 4 }), fc.array(fc.string({ maxLength: 3 })), fc.constant(undefined)),
        (traceparent, b3, status) => {
          const id = traceIdOf(traceparent, b3);
          if (id !== b3) expect(id).toHaveLength(32);
          expect(grpcStatusLabel(status)).toMatch(/^(1[0-6]|[0-9]|unknown)$/);
        },
      ),
      fuzzParams(2000),
    );
  });
});
