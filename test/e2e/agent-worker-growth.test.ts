// --workers auto (the default): the agent starts with one data-plane worker and adds one when the
// running ones are busy, up to the core count; the new worker opens every enrolled pod's listeners
// and takes its share of new connections, and no request fails while it starts.

import { availableParallelism } from "node:os";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OUTBOUND_PORT } from "../../api/dataplane.ts";
import { type Pod, World } from "../world/world.ts";
import { type AgentHandle, listenersOn, Mesh, oneNodeServer } from "./mesh.ts";
import { metricSum } from "./netns-client.ts";

const VIP = "10.96.0.10";
/** Long enough for GROW_WHEN_BUSY's two busy seconds with room to spare on a slow machine. */
const LOAD_SECONDS = 8;

describe.skipIf(availableParallelism() < 2)("data-plane workers by load", () => {
  let world: World;
  let mesh: Mesh;
  let client: Pod;
  let agent: AgentHandle;

  /** Listening sockets on the outbound port inside the client pod: one per worker. */
  const outboundListeners = () => listenersOn(world, client, OUTBOUND_PORT);
  const workers = async () => metricSum(await mesh.metrics(agent.node), "nodemesh_agent_workers");

  beforeAll(async () => {
    world = await World.create({ nodes: 1 });
    mesh = new Mesh(world, { agentArgs: ["--workers", "auto"] });
    ({ client, agent } = await oneNodeServer(world, mesh, VIP));
  }, 60_000);

  afterAll(async () => {
    await mesh?.destroy();
  });

  it("starts with one worker and adds one under load, with every request answered", async () => {
    expect(await workers()).toBe(1);
    expect(await outboundListeners()).toBe(1);

    // Back-to-back HTTP/1.1 requests over 8 connections keep the one worker busy.
    const load = await world.exec(
      client,
      "h2load",
      ["--h1", "-c", "8", "-D", String(LOAD_SECONDS), "--warm-up-time", "0", `http://${VIP}/`],
      { timeoutMs: (LOAD_SECONDS + 20) * 1000 },
    );
    expect(load.code, load.stderr).toBe(0);
    const done = load.stdout.match(/requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed/);
    expect(done, load.stdout).not.toBeNull();
    expect(Number(done![4])).toBeGreaterThan(0);
    expect(Number(done![5])).toBe(0);

    const started = await agent.proc.waitForLine(/"msg":"data-plane worker started"/, 5000);
    expect(started).toContain('"worker":1');
    expect(started).toContain('"pods":2');
    expect(agent.proc.lines.some((l) => l.includes("data-plane workers busy: starting another"))).toBe(true);
    expect(await workers()).toBe(2);
    expect(await outboundListeners()).toBe(2);
  }, 60_000);

  it("gives back what a saturation grew of each worker's heap once the load is over", async () => {
    const committedMB = async () => {
      const m = await mesh.metrics(agent.node);
      return ["0", "1"].map(
        (worker) => metricSum(m, "nodemesh_agent_worker_memory_bytes", { worker, kind: "heap_committed" }) / 2 ** 20,
      );
    };
    const load = await world.exec(
      client,
      "h2load",
      ["--h1", "-c", "8", "-D", "4", "--warm-up-time", "0", `http://${VIP}/`],
      { timeoutMs: 30_000 },
    );
    expect(load.code, load.stderr).toBe(0);
    const loaded = await committedMB();
    // Busy seconds arm each worker's idle collector (api/idle-heap.ts): it collects once the
    // worker has been quiet for BURST_OVER_MS, within a few seconds of that.
    let settled = loaded;
    for (let i = 0; i < 30 && settled.some((mb, w) => mb > loaded[w]! - 8); i++) {
      await new Promise((r) => setTimeout(r, 500));
      settled = await committedMB();
    }
    console.log(
      `workers' committed heap: ${loaded.map((mb) => mb.toFixed(1))} MB loaded, ${settled.map((mb) => mb.toFixed(1))} MB after`,
    );
    for (const [w, mb] of settled.entries()) expect(mb).toBeLessThanOrEqual(loaded[w]! - 8);
  }, 60_000);
});
