// SIGTERM under load ends the agent cleanly (issue 21, item 5). The reproduction: an agent carrying
// ~300 requests/s, stopped with SIGTERM, died in 3 of 5 stops with `FATAL ERROR:
// Error::ThrowAsJavaScriptException napi_throw` (SIGABRT): its data-plane workers were terminated
// while still accepting and dialling, and a koffi call (setsockopt in connectableFd) that ran as
// the worker's isolate was being torn down could not even throw. Here the agent is stopped under
// load several times in a row; every stop must exit 0, with no FATAL line and no abort. Before the
// fix this test aborted in 3 of 3 runs at 600 requests/s (at the 1st to 4th stop) and in 2 of 3 at
// 300/s; `STOPS=… RATE=… npx vitest run test/e2e/agent-shutdown.test.ts` varies it.

import type net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Pod, World } from "../world/world.ts";
import { Mesh, oneNodeServer } from "./mesh.ts";
import { connectFrom, echoFrom, httpFrom, rawHttpFrom } from "./netns-client.ts";

const VIP = "10.96.0.10";
const STOPS = Number(process.env.STOPS ?? 10);
/**
 * Requests per second offered in all: a third HTTP on a new connection each, a third opaque TCP
 * connections, a third over keep-alive HTTP connections.
 */
const RATE = Number(process.env.RATE ?? 600);
/** Requests in flight at most: the load is bounded whatever the agent does. */
const MAX_IN_FLIGHT = 64;
/** Keep-alive connections that carry a third of the rate. */
const KEEP_ALIVE = 16;

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error("timed out")), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/**
 * One keep-alive HTTP/1.1 connection sending a request whenever asked and the previous one was
 * answered: such clients keep a worker busy after its listeners have closed, as real ones do.
 */
class KeepAliveClient {
  private text = "";
  private waiting = false;
  answered = 0;
  private socket: net.Socket | undefined;
  private closed = false;

  async open(client: Pod): Promise<void> {
    const socket = await connectFrom(client.netnsPath, VIP, 80);
    this.socket = socket;
    socket.setEncoding("latin1");
    socket.on("data", (c: string) => {
      this.text += c;
      // The sample workload's answers are small and carry a content-length: one status line each.
      const answers = this.text.split("HTTP/1.1 200 ").length - 1;
      if (answers > 0) {
        this.answered += answers;
        this.text = this.text.slice(this.text.lastIndexOf("HTTP/1.1 200 ") + 1);
        this.waiting = false;
      }
    });
    socket.on("close", () => {
      this.closed = true;
    });
    socket.on("error", () => {});
  }

  /** Sends a request unless one is still unanswered; false once the connection is gone. */
  send(): boolean {
    if (this.closed || !this.socket) return false;
    if (this.waiting) return true;
    this.waiting = true;
    this.socket.write("GET /keep-alive HTTP/1.1\r\nHost: server\r\n\r\n");
    return true;
  }

  destroy(): void {
    this.socket?.destroy();
  }
}

/** Offers RATE requests/s from the client pod until stopped; counts what was answered. */
class Load {
  ok = 0;
  failed = 0;
  private inFlight = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly done = new Set<Promise<void>>();
  private readonly keepAlive: KeepAliveClient[] = [];

  private readonly client: Pod;

  constructor(client: Pod) {
    this.client = client;
  }

  async start(): Promise<void> {
    for (let i = 0; i < KEEP_ALIVE; i++) {
      const c = new KeepAliveClient();
      await c.open(this.client);
      this.keepAlive.push(c);
    }
    let n = 0;
    let next = 0;
    const tickMs = 10;
    const perTick = (RATE * tickMs) / 1000;
    let due = 0;
    this.timer = setInterval(() => {
      due += perTick;
      while (due >= 1) {
        due--;
        const kind = n++ % 3;
        if (kind === 2) {
          // A third of the rate over the keep-alive connections, in turn.
          this.keepAlive[next++ % KEEP_ALIVE]!.send();
          continue;
        }
        if (this.inFlight >= MAX_IN_FLIGHT) continue;
        this.one(kind === 0);
      }
    }, tickMs);
  }

  private one(http: boolean): void {
    this.inFlight++;
    const attempt = http
      ? httpFrom(this.client.netnsPath, `http://${VIP}/load`, { timeoutMs: 3000 }).then((r) => r.status === 200)
      : withTimeout(echoFrom(this.client.netnsPath, VIP, 7070, Buffer.from("ping")), 3000).then(
          (b) => b.toString() === "ping",
        );
    const p: Promise<void> = attempt
      .then(
        (good) => {
          if (good) this.ok++;
          else this.failed++;
        },
        () => {
          this.failed++;
        },
      )
      .finally(() => {
        this.inFlight--;
        this.done.delete(p);
      });
    this.done.add(p);
  }

  get answered(): number {
    return this.ok + this.keepAlive.reduce((sum, c) => sum + c.answered, 0);
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    for (const c of this.keepAlive) c.destroy();
    await Promise.all([...this.done]);
  }
}

describe("agent shutdown under load", () => {
  let world: World;
  let mesh: Mesh;
  let client: Pod;

  beforeAll(async () => {
    world = await World.create({ nodes: 1 });
    // A drain of 1 s: the held opaque connections would otherwise keep each stop 30 s (the default).
    // No listener holder: this tests an agent that stops with none to follow it (the load's
    // requests must end, not wait for a next agent: docs/operations.md).
    mesh = new Mesh(world, { agentArgs: ["--workers", "2", "--drain-timeout-s", "1", "--hold-listeners-s", "0"] });
    ({ client } = await oneNodeServer(world, mesh, VIP, { echoPort: 7070 }));
  }, 60_000);

  afterAll(async () => {
    await mesh?.destroy();
  });

  it(`exits 0 on SIGTERM at ${RATE} requests/s, ${STOPS} times in a row, never aborting`, async () => {
    const node = world.nodes[0]!;
    const outcomes: string[] = [];
    for (let round = 0; round < STOPS; round++) {
      // The first round uses the agent started above; the enrolled pods come back with each restart.
      const agent = round === 0 ? mesh.agents.get(node)! : await mesh.startAgent(node);
      const load = new Load(client);
      await load.start();
      try {
        // Let the load run long enough to be answered through the mesh, then stop mid-stream.
        const until = Date.now() + 5000;
        while (load.answered < 200 && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
        await new Promise((r) => setTimeout(r, 500)); // at full rate
        expect(load.answered, `round ${round}: the load is answered before the stop`).toBeGreaterThanOrEqual(200);
        const signalledAt = Date.now();
        const exit = await agent.proc.stop("SIGTERM", 10_000);
        const stopMs = Date.now() - signalledAt;
        await agent.proc.exited;
        const lines = agent.proc.lines;
        const first = lines.findIndex((l) => /FATAL|napi_|Abort|core dumped/i.test(l));
        // The fatal line and the native stack after it, to see which call aborted.
        const fatal = first < 0 ? [] : lines.slice(first, first + 40);
        outcomes.push(
          `round ${round}: exit ${JSON.stringify(exit)} after ${stopMs} ms, ${load.answered} answered, fatal lines: ${fatal.length}`,
        );
        expect(fatal, `round ${round}: ${fatal.join("\n")}`).toEqual([]);
        expect(exit, `round ${round}`).toEqual({ code: 0, signal: null });
        expect(await agent.proc.waitForLine(/"msg":"agent exited"/, 2000)).toContain('"code":0');
        // The drain is bounded (--drain-timeout-s 1 in the workers, 5 s more at most before they are terminated).
        expect(stopMs, `round ${round}`).toBeLessThan(7000);
      } finally {
        await load.stop();
      }
    }
    console.log(outcomes.join("\n"));
  }, 180_000);
});

// Stop, then start: an agent with no successor beside it serves on while opaque streams keep their
// drain, instead of leaving new connections waiting that long for the next agent (agent.ts stop).
describe("an agent stopping with no successor", () => {
  let world: World;
  let mesh: Mesh;
  let client: Pod;

  beforeAll(async () => {
    world = await World.create({ nodes: 1 });
    mesh = new Mesh(world, { agentArgs: ["--drain-timeout-s", "20", "--hold-listeners-s", "30"] });
    ({ client } = await oneNodeServer(world, mesh, VIP, { echoPort: 7070 }));
  }, 60_000);

  afterAll(async () => {
    await mesh?.destroy();
  });

  it("serves new connections as usual while a stream keeps its drain, then holds the listeners and exits when the stream ends", async () => {
    const agent = mesh.agents.get(world.nodes[0]!)!;
    const stream = await connectFrom(client.netnsPath, VIP, 7070);
    const echoed = (text: string) =>
      withTimeout(
        new Promise<string>((resolve) => {
          stream.once("data", (b: Buffer) => resolve(b.toString()));
          stream.write(text);
        }),
        3000,
      );
    try {
      expect(await echoed("before")).toBe("before");
      agent.proc.kill("SIGTERM");
      await agent.proc.waitForLine(/"msg":"agent stopping"/, 5000);
      await new Promise((r) => setTimeout(r, 500));
      // Served as before the stop: no `Connection: close`, and new opaque connections too.
      // A keep-alive request: a draining agent would answer `Connection: close` and close at once.
      const keptAlive = "GET /during-drain HTTP/1.1\r\nHost: server\r\n\r\n";
      const reply = await rawHttpFrom(client.netnsPath, VIP, 80, keptAlive, 1000);
      expect(reply).toMatch(/^HTTP\/1\.1 200 /);
      expect(reply).not.toMatch(/^connection: close/im);
      expect((await echoFrom(client.netnsPath, VIP, 7070, Buffer.from("new"))).toString()).toBe("new");
      expect(await echoed("during")).toBe("during");
      expect(agent.proc.lines.join("\n")).not.toContain("pod listeners held for the next agent");
    } finally {
      stream.end();
    }
    // The stream ended: the listeners go to the holder and the agent exits, long before the 20 s drain.
    const endedAt = Date.now();
    expect(await withTimeout(agent.proc.exited, 10_000)).toEqual({ code: 0, signal: null });
    expect(Date.now() - endedAt).toBeLessThan(8000);
    expect(agent.proc.lines.join("\n")).toContain("pod listeners held for the next agent");
    // The next agent takes the held listeners over and serves.
    await mesh.startAgent(world.nodes[0]!);
    expect((await httpFrom(client.netnsPath, `http://${VIP}/after`)).status).toBe(200);
  }, 60_000);
});
