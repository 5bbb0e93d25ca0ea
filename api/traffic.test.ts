import { describe, expect, it } from "vitest";
import { durationMs } from "./duration.ts";
import { parseTrafficObject, SafeRegex } from "./traffic.ts";

describe("SafeRegex", () => {
  it.each(["(a+)+", "(a|a)+", "((a)+)+", "(\\w|\\d)+x", "(a*)*", "(a)\\1", "(?<x>a)\\k<x>"])(
    "refuses the backtracking shape %s",
    (source) => {
      expect(SafeRegex.safeParse(source).success).toBe(false);
    },
  );

  it.each(["/api/v[0-9]+/.*", "/users/[0-9]+", "(?:/v1|/v2)/x", "(abc)+", "^/(foo|bar)$", "[(a+)]+", "\\(a+\\)+"])(
    "accepts %s",
    (source) => {
      expect(SafeRegex.safeParse(source).success).toBe(true);
    },
  );

  it("refuses what does not compile", () => {
    expect(SafeRegex.safeParse("(").error?.issues[0]?.message).toMatch(/invalid regular expression/);
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
});
