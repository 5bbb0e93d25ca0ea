import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { type AdminState, isLoopback, startAdminServer } from "./admin.ts";
import type { ControllerStatus } from "./controller-client.ts";
import type { ConfigSource } from "./service-source.ts";

let server: Server | undefined;
afterEach(() => new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve())));

async function admin(
  controller?: () => ControllerStatus,
  source: ConfigSource = "cache",
  health: () => Promise<string[]> = async () => [],
): Promise<string> {
  const state: AdminState = {
    node: "node-a",
    ready: () => true,
    workers: () => 1,
    configInForce: () => ({ version: "7.2", source }),
    pods: () => [],
    config: () => ({}),
    workerMetrics: async () => [],
    health,
    controller,
  };
  server = await startAdminServer("127.0.0.1", 0, state);
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

describe("admin with a controller", () => {
  const status: ControllerStatus = {
    address: "10.0.0.9:15012",
    connected: false,
    appliedVersion: "7.2",
    lastNack: { version: "7.3", error: "bad table", at: "2025-01-01T00:00:00.000Z" },
    lastError: { error: "unable to verify the first certificate", hint: "check it", at: "2025-01-01T00:00:01.000Z" },
    rejected: [{ kind: "HTTPRoute", namespace: "shop", name: "split", reason: "does not compile: x" }],
    tls: true,
  };

  it("shows the controller link in /readyz and /metrics, and what is in force in one place", async () => {
    const base = await admin(() => status);
    const ready = (await (await fetch(`${base}/readyz`)).json()) as { config: unknown; controller: unknown };
    // Served from the cache after a restart: config says so, and nothing else claims otherwise.
    expect(ready.config).toEqual({ version: "7.2", source: "cache" });
    expect(ready.controller).toEqual({
      address: "10.0.0.9:15012",
      connected: false,
      tls: true,
      credential: null,
      nodeCertificate: null,
      lastError: status.lastError,
      lastNack: status.lastNack,
      rejected: status.rejected,
      certificates: [],
    });
    const metrics = await (await fetch(`${base}/metrics`)).text();
    expect(metrics).toContain("nodemesh_controller_connected 0");
    expect(metrics).toContain('nodemesh_config_applied_version_info{version="7.2",source="cache"} 1');
  });

  it("shows no applied version before the cache or the controller gave one", async () => {
    const base = await admin(() => ({ ...status, appliedVersion: undefined }), "none");
    const ready = (await (await fetch(`${base}/readyz`)).json()) as { config: unknown };
    expect(ready.config).toEqual({ version: "7.2", source: "none" });
    expect(await (await fetch(`${base}/metrics`)).text()).not.toMatch(/^nodemesh_config_applied_version_info\{/m);
  });

  it("leaves both out when the agent runs from a static file", async () => {
    const base = await admin(undefined, "file");
    expect(((await (await fetch(`${base}/readyz`)).json()) as { controller?: unknown }).controller).toBeUndefined();
    expect(await (await fetch(`${base}/metrics`)).text()).not.toContain("nodemesh_controller_connected");
  });
});

describe("admin debug endpoints", () => {
  it("answer loopback callers", async () => {
    const base = await admin(undefined, "file");
    const reply = await fetch(`${base}/debug/config`);
    expect(reply.status).toBe(200);
    expect(((await reply.json()) as { node: string }).node).toBe("node-a");
  });

  it("check and explain: 503 before the data plane runs; bad requests are 400; only explain takes a POST", async () => {
    const base = await admin(undefined, "file");
    const check = await fetch(`${base}/debug/check?pod=default/web`);
    expect(check.status).toBe(503);
    expect(((await check.json()) as { error: { code: string } }).error.code).toBe("NOT_READY");
    expect((await fetch(`${base}/debug/check`)).status).toBe(400);
    const post = (path: string, body: string) =>
      fetch(`${base}${path}`, { method: "POST", headers: { "content-type": "application/json" }, body });
    expect((await post("/debug/config", "{}")).status).toBe(405);
    expect((await post("/debug/explain", "{}")).status).toBe(503);
  });

  it.each([
    ["127.0.0.1", true],
    ["127.3.2.1", true],
    ["::1", true],
    ["::ffff:127.0.0.1", true],
    ["10.244.1.1", false],
    ["::ffff:10.244.1.12", false],
    ["fe80::1", false],
    ["1127.0.0.1", false],
    ["", false],
    [undefined, false],
  ])("tells loopback from the rest: %s → %s", (address, loopback) => {
    expect(isLoopback(address)).toBe(loopback);
  });
});

describe("health", () => {
  it("/healthz and /readyz fail with what is wrong while the data plane reports a problem", async () => {
    let problems: string[] = [];
    const base = await admin(undefined, "cache", async () => problems);
    expect(await (await fetch(`${base}/healthz`)).json()).toEqual({ status: "ok" });
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
    problems = ["data-plane worker 1 is stuck: its event loop has not run for 6.0 s"];
    const health = await fetch(`${base}/healthz`);
    expect(health.status).toBe(503);
    expect(await health.json()).toEqual({ status: "unhealthy", problems });
    const ready = await fetch(`${base}/readyz`);
    expect(ready.status).toBe(503);
    expect(await ready.json()).toMatchObject({ ready: false, notReady: problems });
  });
});
