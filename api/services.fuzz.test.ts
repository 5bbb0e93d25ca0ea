// Fuzzing validateServiceTable: the table an agent takes from the controller (after
// assembleConfig) or from a `--services` file. Whatever it is given, a list of field errors.

import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { fuzzParams, mutated } from "../test/fuzz/fuzz.ts";
import { TRAFFIC_SEEDS } from "../test/fuzz/seeds.ts";
import { parseTraffic, validateServiceTable } from "./services.ts";

const SEED_TABLE = {
  services: [
    {
      name: "web",
      namespace: "default",
      vip: "10.96.0.10",
      ports: [
        { name: "http", port: 80, targetPort: 8080, protocol: "http" },
        { port: 9090, protocol: "grpc" },
      ],
      endpoints: [
        { ip: "10.244.1.5", port: 8080, node: "node-a", pod: "web-0", meshed: true, workload: "web" },
        { ip: "10.244.2.6" },
      ],
    },
    { name: "db", namespace: "data", vip: "10.96.0.11", ports: [{ port: 5432, protocol: "tcp" }], endpoints: [] },
  ],
  traffic: TRAFFIC_SEEDS.map((o, i) => ({ ...o, name: `${o.name}-${i}` })),
};

/** Found by fuzzing: a `vip` without a string form (JSON `{"toString": 1}`) made the VIP:port key throw. */
const NO_STRING_FORM_TABLE = {
  services: [{ name: "web", namespace: "default", vip: { toString: 1 }, ports: [{ port: 80 }], endpoints: [] }],
};

describe("service table validation (fuzz)", () => {
  it("a vip without a string form is a field error, not a throw (found by fuzzing)", () => {
    expect(validateServiceTable(NO_STRING_FORM_TABLE)).toEqual([{ field: "services[0].vip", message: "must be IPv4" }]);
  });

  it("the seed table is valid", () => {
    expect(validateServiceTable(SEED_TABLE)).toEqual([]);
  });

  it("any value, or a mutated valid table: field errors, never a throw; an accepted table's traffic parses", () => {
    fc.assert(
      fc.property(fc.oneof(mutated(SEED_TABLE, 4), fc.jsonValue(), fc.anything()), (table) => {
        const errors = validateServiceTable(table);
        for (const e of errors) {
          expect(typeof e.field).toBe("string");
          expect(typeof e.message).toBe("string");
        }
        if (errors.length === 0) expect(() => parseTraffic(table as Parameters<typeof parseTraffic>[0])).not.toThrow();
      }),
      fuzzParams(500, 0.2),
    );
  });
});
