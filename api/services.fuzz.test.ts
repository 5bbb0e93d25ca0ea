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

/**
 * KNOWN BUG, reported, not fixed here (api/services.ts is not this change's to edit): a `vip` or a
 * port's `port` that is an object without a callable toString (JSON `{"toString": 1}`, or an object
 * without a prototype) makes validateServiceTable throw a TypeError ("Cannot convert object to
 * primitive value", the `${svc.vip}:${p.port}` key) instead of returning a field error. Reachable
 * through `nodemesh agent --services FILE`; the controller's wire carries strings there.
 */
const KNOWN_BUG_TABLE = {
  services: [{ name: "web", namespace: "default", vip: { toString: 1 }, ports: [{ port: 80 }], endpoints: [] }],
};

/** True when a value has no string form (a template literal throws on it). */
function noPrimitive(v: unknown): boolean {
  try {
    void `${v}`;
    return false;
  } catch {
    return true;
  }
}

/** The inputs of the known bug above, which the property leaves to its own test. */
function hitsKnownBug(table: unknown): boolean {
  const services = (table as { services?: unknown } | null)?.services;
  if (!Array.isArray(services)) return false;
  return services.some((s) => {
    if (typeof s !== "object" || s === null || Array.isArray(s)) return false;
    const { vip, ports } = s as { vip?: unknown; ports?: unknown };
    const portValues = Array.isArray(ports) ? ports.map((p) => (p as { port?: unknown } | null)?.port) : [];
    return Array.isArray(ports) && ports.length > 0 && [vip, ...portValues].some(noPrimitive);
  });
}

describe("service table validation (fuzz)", () => {
  it.fails("KNOWN BUG: a vip without a string form throws instead of a field error (flip once fixed)", () => {
    expect(validateServiceTable(KNOWN_BUG_TABLE)).toEqual([{ field: "services[0].vip", message: "must be IPv4" }]);
  });

  it("the seed table is valid", () => {
    expect(validateServiceTable(SEED_TABLE)).toEqual([]);
  });

  it("any value, or a mutated valid table: field errors, never a throw; an accepted table's traffic parses", () => {
    fc.assert(
      fc.property(fc.oneof(mutated(SEED_TABLE, 4), fc.jsonValue(), fc.anything()), (table) => {
        fc.pre(!hitsKnownBug(table));
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
