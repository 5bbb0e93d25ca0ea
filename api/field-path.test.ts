import { describe, expect, it } from "vitest";
import { z } from "zod";
import { fieldsAt, nearestField, unknownFieldMessage } from "./field-path.ts";
import { TrafficPolicySpec } from "./traffic.ts";

describe("nearestField", () => {
  const POLICY = ["targetRefs", "loadBalancer", "timeouts", "retries", "circuitBreaker", "faultInjection", "rateLimit"];
  it.each([
    ["faults", "faultInjection"], // the same stem
    ["retry", "retries"],
    ["retrys", "retries"], // a few edits
    ["timeout", "timeouts"],
    ["circuitbreaker", "circuitBreaker"], // case
    ["target_refs", "targetRefs"], // spelling
    ["raetLimit", "rateLimit"], // a transposition
  ])("%s → %s", (typed, meant) => {
    expect(nearestField(typed, POLICY)).toBe(meant);
  });

  it("suggests nothing far away, nor a name that is itself known", () => {
    expect(nearestField("colour", POLICY)).toBeUndefined();
    expect(nearestField("lb", POLICY)).toBeUndefined();
    expect(
      nearestField(
        "retries",
        POLICY.filter((f) => f !== "retries"),
      ),
    ).toBeUndefined();
  });
});

describe("fieldsAt", () => {
  it("follows optionals, defaults, arrays, records, unions and lazies to the object at a path", () => {
    const Leaf = z.strictObject({ weight: z.number() });
    const schema = z.strictObject({
      rules: z.array(z.strictObject({ backends: z.array(Leaf).optional() })).default([]),
      byName: z.record(z.string(), Leaf),
      either: z.union([z.strictObject({ a: z.number() }), z.strictObject({ b: z.number() })]),
      later: z.lazy(() => Leaf),
    });
    expect(fieldsAt(schema, [])).toEqual(["rules", "byName", "either", "later"]);
    expect(fieldsAt(schema, ["rules", 0, "backends", 3])).toEqual(["weight"]);
    expect(fieldsAt(schema, ["byName", "x"])).toEqual(["weight"]);
    expect(fieldsAt(schema, ["either"])).toEqual(["a", "b"]);
    expect(fieldsAt(schema, ["later"])).toEqual(["weight"]);
    expect(fieldsAt(schema, ["nowhere", "at", "all"])).toEqual([]);
  });

  it("reads the real schemas: a TrafficPolicy's retry budget", () => {
    expect(fieldsAt(TrafficPolicySpec, ["retries", "budget"])).toEqual(["percent", "minConcurrency"]);
    expect(unknownFieldMessage(TrafficPolicySpec, ["retries", "budget"], "percentage")).toBe(
      'unknown field; did you mean "percent"?',
    );
  });
});
