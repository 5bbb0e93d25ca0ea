import { describe, expect, it } from "vitest";
import { durationMs } from "./duration.ts";
import { parseTrafficObject, SafeRegex } from "./traffic.ts";

describe("SafeRegex", () => {
  it.each([
    ["(a)\\1", /backreferences are not supported/],
    ["(?<x>a)\\k<x>", /backreferences are not supported/],
    ["/api(?=/v1)", /lookahead and lookbehind are not supported/],
    ["(?!/admin).*", /lookahead and lookbehind are not supported/],
    ["(?<=/)x", /lookahead and lookbehind are not supported/],
    ["\\u0041", /invalid regular expression \(RE2 syntax\): invalid escape sequence/],
    ["(", /invalid regular expression \(RE2 syntax\): missing closing \)/],
    ["(?:.?){600}x", /too complex: compiles to \d+ instructions, more than 1000/],
    [".{1001}", /invalid regular expression \(RE2 syntax\): invalid repeat count/],
  ])("refuses %s, saying why", (source, message) => {
    expect(SafeRegex.safeParse(source).error?.issues[0]?.message).toMatch(message);
  });

  it.each([
    "/api/v[0-9]+/.*",
    "/users/[0-9]+",
    "(?:/v1|/v2)/x",
    "(abc)+",
    "^/(foo|bar)$",
    "[(a+)]+",
    "\\(a+\\)+",
    // Shapes that backtrack catastrophically in V8 cost nothing in RE2, so they are accepted now.
    "(a+)+",
    "(a|a)+",
    "(\\w|\\d)+x",
    "/api/.*.*.*.*x",
    "(?<name>[a-z]+)",
    "\\/api\\/v1",
  ])("accepts %s", (source) => {
    expect(SafeRegex.safeParse(source).success).toBe(true);
  });

  it("names the field of a refused route regex", () => {
    const result = parseTrafficObject({
      kind: "HTTPRoute",
      namespace: "default",
      name: "r",
      spec: {
        parentRefs: [{ name: "web" }],
        rules: [
          {
            matches: [
              { path: { value: "/ok" } },
              { headers: [{ type: "RegularExpression", name: "x", value: "(a)\\1" }] },
            ],
          },
        ],
      },
    });
    expect(result).toMatchObject({
      ok: false,
      errors: [
        {
          field: "spec.rules[0].matches[1].headers[0].value",
          message: expect.stringMatching(/^backreferences are not supported/),
        },
      ],
    });
  });
});

describe("durationMs", () => {
  it("adds up Gateway API durations", () => {
    expect(durationMs("1h30m")).toBe(5_400_000);
    expect(durationMs("2s500ms")).toBe(2500);
  });
});

describe("parseTrafficObject", () => {
  it("names each unknown field with the nearest known one, as the REST API does", () => {
    const policy = { kind: "TrafficPolicy", namespace: "default", name: "p" };
    const spec = { targetRefs: [{ name: "web" }], faults: {}, retries: { attempt: 6 } };
    expect(parseTrafficObject({ ...policy, spec })).toEqual({
      ok: false,
      errors: [
        { field: "spec.retries.attempt", message: 'unknown field; did you mean "attempts"?' },
        { field: "spec.faults", message: 'unknown field; did you mean "faultInjection"?' },
      ],
    });
  });

  it("takes a tracing sampling rate from 0 to 100 %", () => {
    const policy = { kind: "TrafficPolicy", namespace: "default", name: "p" };
    const spec = (tracing: unknown) => ({ targetRefs: [{ name: "web" }], tracing });
    const ok = parseTrafficObject({ ...policy, spec: spec({ randomSamplingPercentage: 0.5 }) });
    expect(ok.ok && ok.value.kind === "TrafficPolicy" && ok.value.spec.tracing).toEqual({
      randomSamplingPercentage: 0.5,
    });
    for (const bad of [{ randomSamplingPercentage: 101 }, { randomSamplingPercentage: -1 }, {}]) {
      const r = parseTrafficObject({ ...policy, spec: spec(bad) });
      expect(r.ok).toBe(false);
      expect(!r.ok && r.errors[0]?.field).toBe("spec.tracing.randomSamplingPercentage");
    }
  });
});
