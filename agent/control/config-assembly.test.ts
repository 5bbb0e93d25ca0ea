import { describe, expect, it } from "vitest";
import type { Config, WireService } from "../../api/agent-service.ts";
import { assembleConfig, type ControllerConfig } from "./config-assembly.ts";

function wire(name: string, vip: string, endpoints: string[] = []): WireService {
  return {
    name,
    namespace: "default",
    vip,
    ports: [{ name: "", port: 80, protocol: "http" }],
    endpoints: endpoints.map((ip) => ({ ip, node: "node-a", pod: `default/${name}`, meshed: true })),
  };
}

function config(fields: Partial<Config>): Config {
  return { version: "1.0", full: true, baseVersion: "", services: [], removed: [], peers: null, ...fields };
}

function assembled(current: ControllerConfig | undefined, update: Config): ControllerConfig {
  const result = assembleConfig(current, update);
  if (!result.ok) throw new Error(result.error);
  return result.config;
}

describe("assembleConfig", () => {
  const peers = [{ name: "node-b", underlayIp: "10.0.0.2" }];
  const first = assembled(
    undefined,
    config({ services: [wire("web", "10.96.0.10"), wire("api", "10.96.0.11")], peers: { nodes: peers } }),
  );

  it("takes a full config as the whole table, in the api/services.ts shape", () => {
    expect([...first.services.keys()].sort()).toEqual(["default/api", "default/web"]);
    expect(first.services.get("default/web")).toEqual({
      name: "web",
      namespace: "default",
      vip: "10.96.0.10",
      ports: [{ port: 80, protocol: "http" }],
      endpoints: [],
    });
    expect(first.peers).toEqual(peers);
  });

  it("applies an incremental update on top of its base", () => {
    const next = assembled(
      first,
      config({
        version: "2.0",
        full: false,
        baseVersion: "1.0",
        services: [wire("web", "10.96.0.10", ["10.1.0.11"])],
        removed: ["default/api"],
      }),
    );
    expect([...next.services.keys()]).toEqual(["default/web"]);
    expect(next.services.get("default/web")!.endpoints).toEqual([
      { ip: "10.1.0.11", node: "node-a", pod: "default/web", meshed: true },
    ]);
    expect([...first.services.keys()]).toHaveLength(2); // the current config is never mutated
    expect(next.peers).toEqual(peers); // no node list in the update: unchanged
  });

  it("refuses an incremental update for another base", () => {
    const result = assembleConfig(first, config({ version: "3.0", full: false, baseVersion: "2.0" }));
    expect(result).toEqual({ ok: false, error: "incremental update 3.0 applies to 2.0, but this agent holds 1.0" });
  });

  it("refuses a table that does not validate, naming the field", () => {
    const result = assembleConfig(
      undefined,
      config({ services: [wire("web", "10.96.0.10"), wire("dup", "10.96.0.10")] }),
    );
    expect(result.ok).toBe(false);
    expect(!result.ok && result.error).toMatch(/services\[1\]\.ports\[0\]\.port: duplicate VIP:port 10\.96\.0\.10:80/);
  });
});
