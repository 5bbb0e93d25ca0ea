// Fuzzing route regexes (regex.ts): patterns come from REST bodies (validated by the controller)
// and are compiled again by every agent; values come from requests (paths, headers, methods).

import { createRequire } from "node:module";
import fc from "fast-check";
import type { RE2JS as RE2JSClass } from "re2js";
import { describe, expect, it } from "vitest";
import { fuzzParams } from "../test/fuzz/fuzz.ts";
import { compileFullMatch, fullMatch, MAX_REGEX_LENGTH, MAX_REGEX_PROGRAM } from "./regex.ts";

const { RE2JS } = createRequire(import.meta.url)("re2js") as { RE2JS: typeof RE2JSClass };

/** Pattern pieces: RE2 syntax, JavaScript-only syntax, and the repetitions that blow up programs. */
const token = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.constantFrom("a", "b", "/", ".", "-", "é", "\\.", "\\d", "\\w", "\\s", "\\pL", "\\x{41}"),
  },
  {
    weight: 3,
    arbitrary: fc.constantFrom(
      "*",
      "+",
      "?",
      "*?",
      "{2}",
      "{2,}",
      "{1,5}",
      "{1000}",
      "{0,1000}",
      "{1001}",
      "|",
      "^",
      "$",
    ),
  },
  {
    weight: 2,
    arbitrary: fc.constantFrom("(", ")", "(?:", "(?i)", "(?P<n>", "(?<n>", "[", "]", "[a-z]", "[^/]", "[[:alpha:]]"),
  },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      "(?=",
      "(?!",
      "(?<=",
      "\\1",
      "\\k<n>",
      "\\u0041",
      "\\b",
      "\\B",
      "\\Q",
      "\\E",
      "\\z",
      "\\C",
    ),
  },
  { weight: 1, arbitrary: fc.string({ maxLength: 3 }) },
);
const pattern = fc.oneof(
  fc.array(token, { maxLength: 30 }).map((t) => t.join("")),
  fc.string({ maxLength: 40 }),
  fc.string({ unit: "binary", maxLength: 20 }),
  fc.integer({ min: MAX_REGEX_LENGTH - 2, max: MAX_REGEX_LENGTH + 2 }).map((n) => "a".repeat(n)),
);
const value = fc.oneof(fc.string({ maxLength: 40 }), fc.string({ unit: "binary", maxLength: 40 }));

describe("route regexes (fuzz)", () => {
  it("any string compiles or is refused with a message, never a throw; a compiled program is bounded", () => {
    fc.assert(
      fc.property(pattern, fc.array(value, { maxLength: 3 }), (source, values) => {
        const r = compileFullMatch(source);
        if (!r.ok) {
          expect(r.message.length).toBeGreaterThan(0);
          expect(() => fullMatch(source)).toThrow(Error);
          return;
        }
        expect(source.length).toBeLessThanOrEqual(MAX_REGEX_LENGTH);
        // The bound the engine's linear time rests on: a size is read (not 0) and capped.
        expect(r.size).toBeGreaterThan(0);
        expect(r.size).toBeLessThanOrEqual(MAX_REGEX_PROGRAM);
        for (const v of values) expect(typeof r.test(v)).toBe("boolean");
      }),
      fuzzParams(2000),
    );
  });

  it("a compiled pattern matches a long random value without throwing (cost bounded by size × length)", () => {
    fc.assert(
      fc.property(pattern, fc.string({ minLength: 1000, maxLength: 4000 }), (source, long) => {
        const r = compileFullMatch(source);
        if (!r.ok) return;
        expect(r.size * long.length).toBeLessThanOrEqual(MAX_REGEX_PROGRAM * 4000);
        expect(typeof r.test(long)).toBe("boolean");
      }),
      fuzzParams(100, 0.02),
    );
  });

  it("round trip: a quoted literal matches exactly itself, as a whole", () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 40 }), fc.string({ minLength: 1, maxLength: 3 }), (literal, extra) => {
        const source = RE2JS.quote(literal);
        fc.pre(source.length <= MAX_REGEX_LENGTH);
        const r = compileFullMatch(source);
        if (!r.ok) throw new Error(`${JSON.stringify(source)}: ${r.message}`);
        expect(r.test(literal)).toBe(true);
        expect(r.test(literal + extra)).toBe(false);
        expect(r.test(extra + literal)).toBe(false);
      }),
      fuzzParams(1000),
    );
  });

  it("full match: `p` matches v exactly when `(?:p)` does and `.*(?:p).*` matches v too", () => {
    fc.assert(
      fc.property(
        fc.array(token, { maxLength: 12 }).map((t) => t.join("")),
        value,
        (source, v) => {
          const r = compileFullMatch(source);
          const grouped = compileFullMatch(`(?:${source})`);
          if (!r.ok || !grouped.ok) return;
          expect(grouped.test(v)).toBe(r.test(v));
          const around = compileFullMatch(`(?s).*(?:${source}).*`);
          if (around.ok && r.test(v)) expect(around.test(v)).toBe(true);
        },
      ),
      fuzzParams(1000),
    );
  });
});
