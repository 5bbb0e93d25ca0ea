// 200 simulated agents (real grpc-js clients, one connection each) and 1000 Services: how long
// from one store write to the last agent's ACK. Prints the figures; asserts only a generous bound.

import pino from "pino";
import { Registry } from "prom-client";
import { afterAll, expect, it, vi } from "vitest";
import type { Resource, ServiceSpec } from "../../api/resources.ts";
import { MemoryStore } from "../store/memory-store.ts";
import { AgentServer } from "./agent-server.ts";
import { newServiceObject } from "./testing/fixtures.ts";
import { histogramTotals } from "./testing/metrics.ts";
import { SimAgent } from "./testing/sim-agent.ts";

const AGENTS = 200;
const SERVICES = 1000;
const WRITES = 5;
const BOUND_MS = 10_000;

let server: AgentServer | undefined;
const agents: SimAgent[] = [];

afterAll(async () => {
  for (const a of agents) a.close();
  await server?.stop();
});

function vip(i: number): string {
  return `10.96.${Math.floor(i / 250)}.${(i % 250) + 1}`;
}

function waitFor(condition: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  return vi.waitFor(
    async () => {
      if (!(await condition())) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    },
    { timeout: timeoutMs, interval: 2 },
  );
}

it(`propagates a write to ${AGENTS} agents holding ${SERVICES} services`, { timeout: 120_000 }, async () => {
  const store = new MemoryStore();
  await store.open();
  for (let i = 0; i < SERVICES; i++) await store.create(newServiceObject(`svc-${i}`, vip(i), { app: `svc-${i}` }));
  const metrics = new Registry();
  server = await AgentServer.start({
    store,
    metrics,
    host: "127.0.0.1",
    port: 0,
    startupGraceMs: 0,
    log: pino({ level: "silent" }),
  });

  const connectStart = performance.now();
  for (let i = 0; i < AGENTS; i++) {
    agents.push(new SimAgent(server.port, `node-${i}`, { underlayIp: `10.250.${i >> 8}.${i & 255}` }));
  }
  const allApplied = () => {
    const target = server!.configVersion();
    return agents.every((a) => a.version === target && a.services.size === store.list("services").length);
  };
  await waitFor(allApplied, 60_000, "every agent to apply the full table");
  const syncMs = performance.now() - connectStart;

  const observed = () => histogramTotals(metrics, "nodemesh_controller_config_propagation_seconds");

  const measured: number[] = [];
  for (let w = 0; w < WRITES; w++) {
    const before = await observed();
    const current = store.get({ plural: "services", namespace: "default", name: "svc-0" }) as Resource<ServiceSpec>;
    const changed = { ...current, spec: { ...current.spec, ports: [{ port: 81 + w, protocol: "tcp" as const }] } };
    const start = performance.now();
    await store.update(changed);
    // The histogram is observed when the controller receives the last ACK.
    await waitFor(async () => (await observed()).count > before.count, BOUND_MS, "every agent to ACK the write");
    const wallMs = performance.now() - start;
    const after = await observed();
    expect(after.count).toBe(before.count + 1);
    expect(allApplied()).toBe(true);
    measured.push((after.sum - before.sum) * 1000);
    console.log(`write ${w + 1}: last ACK after ${wallMs.toFixed(1)} ms (histogram ${measured.at(-1)!.toFixed(1)} ms)`);
  }
  const sorted = [...measured].sort((a, b) => a - b);
  console.log(
    `${AGENTS} agents × ${SERVICES} services: initial full sync ${syncMs.toFixed(0)} ms; ` +
      `write → last ACK min ${sorted[0].toFixed(1)} / median ${sorted[sorted.length >> 1].toFixed(1)} / max ${sorted.at(-1)!.toFixed(1)} ms`,
  );
  expect(sorted.at(-1)!).toBeLessThan(BOUND_MS);
  expect(server.agents().filter((a) => a.connected)).toHaveLength(AGENTS);
});
