// A data-plane worker that fails does not take the node down (issue 20): its uncaught exception is
// logged with its stack, the worker is replaced and reopens its listeners in every enrolled pod,
// and its sibling keeps serving throughout; a worker that fails every time it starts is replaced
// at a bounded rate; /healthz turns red while a worker is down or stuck, or a pod's listener is
// gone; and whatever ends the process (a signal, an uncaught exception on the control thread) is
// logged. The faults are real uncaught exceptions thrown inside the agent's threads by a
// module the test preloads into it (fixtures/worker-fault.ts), triggered by a file: nothing on the
// network can reach it.

import { rmSync, writeFileSync } from "node:fs";
import type net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_PORT, OUTBOUND_PORT } from "../../api/dataplane.ts";
import { type Pod, World } from "../world/world.ts";
import { eventually } from "./eventually.ts";
import { type AgentHandle, listenersOn, Mesh, oneNodeServer } from "./mesh.ts";
import { connectFrom, httpFrom } from "./netns-client.ts";

const VIP = "10.96.0.10";
const FAULT_MODULE = new URL("./fixtures/worker-fault.ts", import.meta.url).pathname;
/** Keep-alive connections held across the fault: the kernel spreads them over both workers. */
const HELD = 12;

/** One keep-alive HTTP/1.1 connection that can send a request and tell whether it was answered. */
class HeldConnection {
  private text = "";
  closed = false;
  private readonly socket: net.Socket;
  constructor(socket: net.Socket) {
    this.socket = socket;
    socket.setEncoding("latin1");
    socket.on("data", (c: string) => {
      this.text += c;
    });
    socket.on("close", () => {
      this.closed = true;
    });
    socket.on("error", () => {});
  }

  private get answers(): number {
    return (this.text.match(/HTTP\/1\.1 200 /g) ?? []).length;
  }

  /** True when a GET got its 200 within `ms`. */
  async get(ms = 2000): Promise<boolean> {
    if (this.closed) return false;
    const want = this.answers + 1;
    this.socket.write("GET /held HTTP/1.1\r\nHost: server\r\n\r\n");
    for (let waited = 0; this.answers < want && !this.closed && waited < ms; waited += 10) {
      await new Promise((r) => setTimeout(r, 10));
    }
    return this.answers >= want;
  }

  destroy(): void {
    this.socket.destroy();
  }
}

describe("data-plane worker failure", () => {
  let world: World;
  let mesh: Mesh;
  let client: Pod;
  let server: Pod;
  let agent: AgentHandle;
  let pid: number | undefined;
  let trigger: string;
  const held: HeldConnection[] = [];

  /** Lines the agent printed so far that match. */
  const agentLines = (match: string) => agent.proc.lines.filter((l) => l.includes(match));
  /** Listening sockets on the outbound port inside the client pod: one per worker. */
  const outboundListeners = () => listenersOn(world, client, OUTBOUND_PORT);
  const fresh = async () => (await httpFrom(client.netnsPath, `http://${VIP}/fresh`)).status;
  /** The agent's /healthz: its status and, when red, what it says is wrong. */
  const healthz = async () => {
    const r = await httpFrom(agent.node.netnsPath, `http://127.0.0.1:${ADMIN_PORT}/healthz`);
    return { status: r.status, problems: (JSON.parse(r.body).problems ?? []) as string[] };
  };

  beforeAll(async () => {
    world = await World.create({ nodes: 1 });
    trigger = join(tmpdir(), `nodemesh-worker-fault-${process.pid}`);
    rmSync(trigger, { force: true });
    mesh = new Mesh(world, {
      agentArgs: ["--workers", "2"],
      agentNodeArgs: ["--import", FAULT_MODULE],
      agentEnv: { NODEMESH_TEST_WORKER_FAULT: trigger },
    });
    ({ client, server, agent } = await oneNodeServer(world, mesh, VIP));
    pid = agent.proc.pid;
  }, 60_000);

  afterAll(async () => {
    for (const c of held) c.destroy();
    rmSync(trigger, { force: true });
    await mesh?.destroy();
  });

  it("logs a worker's uncaught exception with its stack, replaces the worker, and the sibling serves meanwhile", async () => {
    // Both workers listening before the held connections are made: a worker still starting (the
    // full suite's load) would leave them all to the other, and none to the sibling.
    await eventually("both workers listening", 10_000, async () =>
      (await outboundListeners()) === 2 ? true : undefined,
    );
    for (let i = 0; i < HELD; i++) held.push(new HeldConnection(await connectFrom(client.netnsPath, VIP, 80)));
    for (const c of held) expect(await c.get()).toBe(true);
    expect(await outboundListeners()).toBe(2);

    writeFileSync(trigger, "0 once");
    const failed = await agent.proc.waitForLine(/"msg":"data-plane worker failed"/, 5000);
    expect(failed).toContain("test fault: data-plane worker 0 throws");
    expect(failed).toMatch(/"stack":"Error: test fault[^"]*\\n\s+at /);

    // The connections the failed worker held are gone; the sibling's keep being served.
    const served = await Promise.all(held.map((c) => c.get()));
    expect(served.filter(Boolean).length).toBeGreaterThan(0);
    expect(served.filter(Boolean).length).toBeLessThan(HELD);

    const replaced = await agent.proc.waitForLine(/"msg":"data-plane worker replaced"/, 10_000);
    expect(replaced).toContain('"worker":0');
    expect(replaced).toContain('"pods":2');
    expect(await outboundListeners()).toBe(2);

    expect(agent.proc.exit).toBeUndefined();
    expect(agent.proc.pid).toBe(pid);
    expect((await httpFrom(agent.node.netnsPath, `http://127.0.0.1:${ADMIN_PORT}/healthz`)).status).toBe(200);
    for (let i = 0; i < 20; i++) expect(await fresh()).toBe(200);
    // The survivors still serve after the replacement.
    for (const [i, c] of held.entries()) if (served[i]) expect(await c.get()).toBe(true);
  });

  it("replaces a worker that fails on every start at a bounded rate, the sibling serving throughout", async () => {
    const survivors = held.filter((c) => !c.closed);
    expect(survivors.length).toBeGreaterThan(0);
    const exitsBefore = agentLines('"msg":"data-plane worker exited; replacing it"').length;

    writeFileSync(trigger, "0 always");
    // Four seconds of a worker that dies as soon as it starts, with the sibling's clients asking.
    const until = Date.now() + 4000;
    const seen = new Set<string>();
    while (Date.now() < until) {
      for (const c of survivors) expect(await c.get()).toBe(true);
      for (const problem of (await healthz()).problems) seen.add(problem.replace(/\d+ time\(s\)/, "N time(s)"));
      await new Promise((r) => setTimeout(r, 200));
    }
    // Liveness says so while the worker is down between attempts.
    expect([...seen]).toContain("data-plane worker 0 is down (failed N time(s) in a row; being replaced)");
    const exits = agentLines('"msg":"data-plane worker exited; replacing it"').slice(exitsBefore);
    // Each failure in a row doubles the wait (0, 1 s, 2 s, 4 s …; the first test's failure counts,
    // less than a minute ago): at most three failures in four seconds, not one per start.
    expect(exits.length).toBeGreaterThanOrEqual(2);
    expect(exits.length).toBeLessThanOrEqual(3);
    const delays = exits.map((l) => Number(/"delayMs":(\d+)/.exec(l)?.[1]));
    for (let i = 1; i < delays.length; i++) expect(delays[i]).toBe(Math.max(1000, 2 * delays[i - 1]!));

    const replacedAtStop = agentLines('"msg":"data-plane worker replaced"').length;
    rmSync(trigger, { force: true });
    // The next attempt (4 s later at most) runs normally and reopens the pods' listeners.
    for (let waited = 0; waited < 15_000; waited += 200) {
      if (agentLines('"msg":"data-plane worker replaced"').length > replacedAtStop && (await outboundListeners()) === 2)
        break;
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(agentLines('"msg":"data-plane worker replaced"').length).toBeGreaterThan(replacedAtStop);
    const exitsAfter = agentLines('"msg":"data-plane worker exited; replacing it"').length;
    expect(agent.proc.exit).toBeUndefined();
    expect(agent.proc.pid).toBe(pid);
    expect(await outboundListeners()).toBe(2);
    for (let i = 0; i < 10; i++) expect(await fresh()).toBe(200);
    expect(agentLines('"msg":"data-plane worker exited; replacing it"').length).toBe(exitsAfter);
    expect(await healthz()).toEqual({ status: 200, problems: [] });
  }, 40_000);

  it("turns /healthz red, naming the pod and port, when a pod's listener is closed under the agent", async () => {
    expect(await healthz()).toEqual({ status: 200, problems: [] });
    // The kernel destroys the client pod's outbound listening sockets (both workers'); Node never notices.
    for (let i = 0; i < 5 && (await outboundListeners()) > 0; i++) {
      await world.exec(client, "ss", ["-K", "-tln", `sport = :${OUTBOUND_PORT}`]);
    }
    expect(await outboundListeners()).toBe(0);
    const red = await healthz();
    expect(red.status).toBe(503);
    for (const worker of [0, 1]) {
      expect(red.problems).toContain(
        `pod default/client: worker ${worker}'s listener on port ${OUTBOUND_PORT} is no longer listening`,
      );
    }
    const ready = await httpFrom(agent.node.netnsPath, `http://127.0.0.1:${ADMIN_PORT}/readyz`);
    expect(ready.status).toBe(503);
    expect(JSON.parse(ready.body).notReady.sort()).toEqual(red.problems.sort());
    // Enrolling the pod again opens new listeners: green again.
    await mesh.enroll(client);
    expect(await outboundListeners()).toBe(2);
    expect(await healthz()).toEqual({ status: 200, problems: [] });
  });

  it("turns /healthz red within a few seconds when a worker is stuck in a busy loop", async () => {
    writeFileSync(trigger, "1 busy");
    const started = Date.now();
    let red = await healthz();
    while (red.status === 200 && Date.now() - started < 15_000) {
      await new Promise((r) => setTimeout(r, 250));
      red = await healthz();
    }
    // First it does not answer the probe (2 s); once its heartbeat is 5 s old it is called stuck.
    expect(red.status).toBe(503);
    expect(red.problems).toEqual(["data-plane worker 1 did not answer within 2000 ms"]);
    expect(Date.now() - started).toBeLessThan(4000);
    while (!red.problems.some((p) => p.includes("stuck")) && Date.now() - started < 15_000) {
      await new Promise((r) => setTimeout(r, 250));
      red = await healthz();
    }
    expect(red.problems).toEqual([
      expect.stringMatching(/^data-plane worker 1 is stuck: its event loop has not run for \d+\.\d s$/),
    ]);
    expect(Date.now() - started).toBeLessThan(8000);
    // A stuck thread cannot be asked to drain: a restart is what the probe leads to.
    await mesh.stopAgent(agent.node, "SIGKILL");
    agent = await mesh.startAgent(agent.node);
    await mesh.enroll(client);
    await mesh.enroll(server);
    expect(await healthz()).toEqual({ status: 200, problems: [] });
  }, 40_000);

  it("logs why it stops on a signal", async () => {
    const node = agent.node;
    const exit = await agent.proc.stop("SIGTERM", 5000);
    expect(exit).toEqual({ code: 0, signal: null });
    expect(agentLines('"msg":"agent stopping"').join()).toContain('"signal":"SIGTERM"');
    expect(await agent.proc.waitForLine(/"msg":"agent exited"/, 2000)).toContain('"code":0');
    agent = await mesh.startAgent(node);
  });

  it("logs an uncaught exception on the control thread with its stack, then exits with status 70", async () => {
    writeFileSync(trigger, "main once");
    const exit = await Promise.race([agent.proc.exited, new Promise((r) => setTimeout(r, 5000))]);
    expect(exit).toEqual({ code: 70, signal: null });
    const failed = agentLines('"msg":"agent failed"');
    expect(failed).toHaveLength(1);
    expect(failed[0]).toContain("test fault: the control thread throws");
    expect(failed[0]).toMatch(/"stack":"Error: test fault[^"]*\\n\s+at /);
    // Proc.exited comes before the last output is read.
    expect(await agent.proc.waitForLine(/"msg":"agent exited"/, 2000)).toContain('"code":70');
  });
});
