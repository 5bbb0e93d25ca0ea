import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { HTTPRouteSpec } from "../../api/traffic.ts";
import { type CachedConfig, ConfigCacheError, loadConfigCache, saveConfigCache } from "./config-cache.ts";

describe("config cache", () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "nodemesh-cache-"));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const cached: CachedConfig = {
    version: "4.2",
    controller: "10.0.0.9:15012",
    savedAt: "2025-01-01T00:00:00.000Z",
    table: {
      services: [{ name: "web", namespace: "default", vip: "10.96.0.10", ports: [{ port: 80 }], endpoints: [] }],
    },
    peers: [{ name: "node-b", underlayIp: "10.0.0.2" }],
  };

  it("round-trips, and is absent before the first save", () => {
    const file = join(dir, "config-cache.json");
    expect(loadConfigCache(file)).toBeUndefined();
    saveConfigCache(file, cached);
    expect(loadConfigCache(file)).toEqual(cached);
  });

  it("keeps the traffic objects, and refuses a cache holding an invalid one", () => {
    const file = join(dir, "config-cache.json");
    const route = {
      kind: "HTTPRoute" as const,
      namespace: "default",
      name: "web-split",
      spec: HTTPRouteSpec.parse({ parentRefs: [{ name: "web" }], rules: [{ backendRefs: [{ name: "web-v2" }] }] }),
    };
    const withTraffic = { ...cached, table: { ...cached.table, traffic: [route] } };
    saveConfigCache(file, withTraffic);
    expect(loadConfigCache(file)).toEqual(withTraffic);
    const broken = { ...route, spec: { ...route.spec, rules: [{ backendRefs: [{ name: "web-v2", weight: -1 }] }] } };
    writeFileSync(file, JSON.stringify({ ...cached, table: { ...cached.table, traffic: [broken] } }));
    expect(() => loadConfigCache(file)).toThrow(/not a valid config cache/);
  });

  it("refuses a corrupt or invalid file instead of serving it", () => {
    const file = join(dir, "config-cache.json");
    writeFileSync(file, "{ torn");
    expect(() => loadConfigCache(file)).toThrow(ConfigCacheError);
    writeFileSync(file, JSON.stringify({ ...cached, table: { services: [{ name: "web" }] } }));
    expect(() => loadConfigCache(file)).toThrow(/not a valid config cache/);
  });
});
