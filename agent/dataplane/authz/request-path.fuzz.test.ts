// Fuzzing request-target normalisation (request-path.ts): the path of every request an
// AuthorizationPolicy sees, straight from the client's request line or :path.

import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { fuzzParams } from "../../../test/fuzz/fuzz.ts";
import { normaliseRequestTarget, originForm } from "./request-path.ts";

const PATH_CHAR = /^[A-Za-z0-9\-._~!$&'()*+,=:@/%]*$/;

const piece = fc.oneof(
  fc.constantFrom(
    "/",
    "//",
    ".",
    "..",
    "/./",
    "/../",
    "a",
    "admin",
    "%2e",
    "%2E%2e",
    "%2f",
    "%5C",
    "%25",
    "%00",
    "%41",
  ),
  fc.constantFrom("%c0%af", "%e2%82%ac", "%ff", "%", "%4", "%zz", ";", "?", "#", "\\", " ", "\t", "é", "\u0000", "\r"),
  fc.string({ maxLength: 4 }),
);
const target = fc.oneof(
  fc
    .tuple(
      fc.constantFrom("", "/", "http://", "https://h", "HTTP://a:1", "http://u@h", "*"),
      fc.array(piece, { maxLength: 12 }),
    )
    .map(([head, parts]) => head + parts.join("")),
  fc.string({ maxLength: 40 }),
  fc.string({ unit: "binary", maxLength: 20 }).map((s) => `/${s}`),
);

describe("request target normalisation (fuzz)", () => {
  it("any target: a normal path or a reason, never a throw", () => {
    fc.assert(
      fc.property(target, (t) => {
        const r = normaliseRequestTarget(t);
        if (!r.ok) {
          expect(r.reason.length).toBeGreaterThan(0);
          return;
        }
        expect(r.path.startsWith("/")).toBe(true);
        expect(r.path).toMatch(PATH_CHAR);
        expect(r.path).not.toMatch(/\/\//);
        expect(r.path.split("/").slice(1)).not.toContain(".");
        expect(r.path.split("/").slice(1)).not.toContain("..");
        // What is left encoded is upper case and never an unreserved character.
        for (const [, code] of r.path.matchAll(/%(..)/g)) {
          expect(code).toMatch(/^[0-9A-F]{2}$/);
          expect(String.fromCharCode(Number.parseInt(code!, 16))).not.toMatch(/^[A-Za-z0-9\-._~]$/);
        }
        expect(r.query).toMatch(/^[\x21-\x7e]*$/);
        expect(r.query).not.toContain("#");
      }),
      fuzzParams(3000),
    );
  });

  it("is idempotent: the forwarded target normalises to itself (what the policy saw is what the app gets)", () => {
    fc.assert(
      fc.property(target, (t) => {
        const r = normaliseRequestTarget(t);
        if (!r.ok) return;
        const again = normaliseRequestTarget(originForm(r));
        expect(again).toEqual({ ok: true, path: r.path, query: r.query, authority: undefined });
      }),
      fuzzParams(3000),
    );
  });
});
