// api/prom.ts loads prom-client's classes from their own files, which are not its public API: an
// upgrade that moves or replaces one must fail here, not in production.

import { createRequire } from "node:module";
import { describe, expect, it } from "vitest";
import packageJson from "../package.json" with { type: "json" };
import { AggregatorRegistry, Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "./prom.ts";

const require = createRequire(import.meta.url);

describe("prom-client internals", () => {
  it("is pinned to the exact version the internal paths were checked against", () => {
    const pinned = packageJson.dependencies["prom-client"];
    expect(pinned).toMatch(/^\d+\.\d+\.\d+$/);
    expect((require("prom-client/package.json") as { version: string }).version).toBe(pinned);
  });

  it("each internal file gives the same class as the package's index", () => {
    const index = require("prom-client") as Record<string, unknown>;
    const ours: Record<string, unknown> = {
      Registry,
      Counter,
      Gauge,
      Histogram,
      AggregatorRegistry,
      collectDefaultMetrics,
    };
    for (const [name, value] of Object.entries(ours)) expect(value, name).toBe(index[name]);
  });
});
