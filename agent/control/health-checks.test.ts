import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import pino from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { Registry } from "../../api/prom.ts";
import type { ServiceTable } from "../../api/services.ts";
import { parseTrafficObject, type TrafficObject } from "../../api/traffic.ts";
import { allocateSharedBuffers, SharedState } from "../dataplane/shared-state.ts";
import { HealthChecker } from "./health-checks.ts";

let server: Server | undefined;
let checker: HealthChecker | undefined;
afterEach(async () => {
  checker?.stop();
  await new Promise((resolve) => (server ? server.close(resolve) : resolve(undefined)));
});

function policy(healthCheck: unknown): TrafficObject {
  const parsed = parseTrafficObject({
    kind: "TrafficPolicy",
    namespace: "default",
    name: "web-health",
    spec: { targetRefs: [{ name: "web" }], healthCheck },
  });
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.errors));
  return parsed.value;
}

async function until(what: string, check: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("active health checks", () => {
  it("takes an endpoint out after unhealthyThreshold failed GETs and back after healthyThreshold passes", async () => {
    let status = 200;
    const paths: string[] = [];
    server = createServer((req, res) => {
      paths.push(`${req.method} ${req.url} ${req.headers["user-agent"]}`);
      res.writeHead(status).end();
    });
    await new Promise<void>((resolve) => server!.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as AddressInfo).port;
    const shared = new SharedState(allocateSharedBuffers());
    const registry = new Registry();
    checker = new HealthChecker({
      node: "node-1",
      shared,
      pods: () => [],
      slot: (key) => (key === `127.0.0.1:${port}` ? 7 : undefined),
      log: pino({ level: "silent" }),
    });
    checker.registerMetrics(registry);
    const table: ServiceTable = {
      services: [
        {
          name: "web",
          namespace: "default",
          vip: "10.96.0.10",
          ports: [{ port: 80, targetPort: port }],
          endpoints: [{ ip: "127.0.0.1", meshed: false }],
        },
      ],
      traffic: [
        policy({
          http: { path: "/healthz" },
          interval: "50ms",
          timeout: "200ms",
          unhealthyThreshold: 2,
          healthyThreshold: 2,
        }),
      ],
    };
    checker.update(table);
    await until("a first check", () => paths.length >= 1);
    expect(paths[0]).toBe("GET /healthz nodemesh-health-check");
    expect(shared.isUnhealthy(7)).toBe(false);

    status = 503;
    const failingFrom = paths.length;
    await until("the endpoint to be out", () => shared.isUnhealthy(7));
    expect(paths.length - failingFrom).toBeGreaterThanOrEqual(2); // not after one failure
    expect(shared.isEjected(7, Date.now())).toBe(true); // the balancer's view
    const metrics = await registry.metrics();
    expect(metrics).toContain('nodemesh_endpoints_unhealthy{destination_service="web.default"} 1');
    expect(metrics).toMatch(
      /nodemesh_health_checks_total\{destination_service="web\.default",result="failure"\} [2-9]/,
    );

    status = 200;
    await until("the endpoint to be back", () => !shared.isUnhealthy(7));
    // The policy goes: nothing is checked any more, and nothing stays out.
    status = 503;
    await until("the endpoint to be out again", () => shared.isUnhealthy(7));
    checker.update({ ...table, traffic: [] });
    expect(shared.isUnhealthy(7)).toBe(false);
    const after = paths.length;
    await new Promise((r) => setTimeout(r, 200));
    expect(paths.length).toBe(after);
  });

  it("TCP: an endpoint whose port refuses connections is out; meshed endpoints of other nodes are their agents'", async () => {
    const shared = new SharedState(allocateSharedBuffers());
    checker = new HealthChecker({
      node: "node-1",
      shared,
      pods: () => [],
      slot: (key) => ({ "127.0.0.1:1": 3, "10.0.2.5:8080": 4 })[key],
      log: pino({ level: "silent" }),
    });
    checker.update({
      services: [
        {
          name: "web",
          namespace: "default",
          vip: "10.96.0.10",
          ports: [{ port: 80, targetPort: 1 }],
          endpoints: [
            { ip: "127.0.0.1", meshed: false },
            { ip: "10.0.2.5", port: 8080, meshed: true, node: "node-2" },
          ],
        },
      ],
      traffic: [policy({ tcp: {}, interval: "50ms", unhealthyThreshold: 1 })],
    });
    await until("the refusing endpoint to be out", () => shared.isUnhealthy(3));
    expect(shared.isUnhealthy(4)).toBe(false);
  });
});
