// Replacing a node's agent under load, the two ways a supervisor does it, shared by the upgrade
// test (test/e2e/agent-upgrade.test.ts) and the restart benchmark (test/bench/restart.ts).
//
//   const world = await replacementWorld({ drainS: 3 });
//   const run = await world.underLoad(1000, 5, (i) => world.surge(i));   // or world.restartInPlace(i)
//
// The world: two nodes, a controller, node-1's agent the one replaced; a client on node-1 calls
// the Service `web` (web-1 on node-1, web-2 on node-2) with HTTP/1.1 on keep-alive connections,
// HTTP/1.1 with a new connection per request, HTTP/2 (node:http2, which honours GOAWAY) and gRPC,
// in the shares 3:3:2:2, while one long opaque TCP stream echoes a line every 100 ms.

import { setTimeout as sleep } from "node:timers/promises";
import { HANDOVER_OVERLAP_MS } from "../../agent/control/handover.ts";
import type { Node, Pod, World } from "../world/world.ts";
import type { GrpcReport } from "./clients/grpc-call.ts";
import type { LoadReport } from "./clients/http-load.ts";
import { grpcCallIn, httpLoadIn } from "./clients/in-pod.ts";
import { type AgentHandle, Mesh } from "./mesh.ts";
import { connectFrom } from "./netns-client.ts";

export const VIP = "10.96.0.10";

/** A pino line's time (epoch ms): both agents log on this machine's clock. */
function logTime(line: string): number {
  return (JSON.parse(line) as { time: number }).time;
}

const SERVICE = `apiVersion: nodemesh.io/v1alpha1
kind: Service
metadata: { name: web, namespace: default }
spec:
  vip: ${VIP}
  ports:
    - { name: http, port: 80, targetPort: 8080, protocol: http }
    - { name: echo, port: 7070, protocol: tcp }
    - { name: grpc, port: 9090, protocol: grpc }
  selector: { app: web }
`;

export interface LoadRun {
  requests: number;
  /** Requests that did not end in 200 / OK. */
  failed: number;
  /** Connections refused (ECONNREFUSED) by any HTTP client. */
  refused: number;
  /**
   * Per replacement, ms: surge, from starting the new agent until the old one exited (its drain
   * included); stop-then-start, from SIGTERM until the next agent was ready.
   */
  takeoverMs: number[];
  reports: { keepAlive: LoadReport; perRequest: LoadReport; h2: LoadReport; grpc: GrpcReport };
  stream: { lines: string[]; endedAt?: number; firstReplacementAt?: number };
}

export interface ReplacementWorldOptions {
  world: World;
  /** The agents' --drain-timeout-s. */
  drainS: number;
  /** The nodemesh command line to run (default: from source). */
  cli?: string;
  /** Checks after each replacement (the upgrade test asks enrollment, admin and the controller). */
  afterEach?: (i: number) => Promise<void>;
}

export class ReplacementWorld {
  readonly mesh: Mesh;
  readonly world: World;
  readonly node1: Node;
  client!: Pod;
  agent!: AgentHandle;
  private readonly drainS: number;
  private readonly afterEach?: (i: number) => Promise<void>;

  private constructor(opts: ReplacementWorldOptions) {
    this.world = opts.world;
    this.drainS = opts.drainS;
    this.afterEach = opts.afterEach;
    this.mesh = new Mesh(opts.world, { agentArgs: ["--drain-timeout-s", String(opts.drainS)], cli: opts.cli });
    this.node1 = opts.world.nodes[0]!;
  }

  static async create(opts: ReplacementWorldOptions): Promise<ReplacementWorld> {
    const w = new ReplacementWorld(opts);
    const { mesh, world } = w;
    const [n1, n2] = world.nodes;
    await mesh.startController();
    w.agent = await mesh.startAgent(n1!);
    await mesh.startAgent(n2!);
    w.client = await world.addPod(n1!, "client");
    const web = [await world.addPod(n1!, "web-1"), await world.addPod(n2!, "web-2")];
    for (const pod of web)
      await mesh.startWorkload(pod, ["--http-port", "8080", "--grpc-port", "9090", "--tcp-echo-port", "7070"]);
    await mesh.enroll(w.client, ["--label", "app=client"]);
    for (const pod of web) await mesh.enroll(pod, ["--label", "app=web"]);
    const applied = await mesh.cli(["apply", "-f", "-"], SERVICE);
    if (applied.code !== 0) throw new Error(`apply failed: ${applied.stderr}`);
    // Polled by hand, not with eventually.ts: the benchmark runs this outside vitest.
    for (let waited = 0; !/2\/2/.test((await mesh.cli(["get", "service", "web"])).stdout); waited += 200) {
      if (waited > 15_000) throw new Error("the Service did not reach both agents within 15 s");
      await sleep(200);
    }
    return w;
  }

  /**
   * Surge: a new agent starts beside the running one and takes over; both serve for the handover's
   * overlap, then the old one drains and exits 0.
   */
  async surge(i: number): Promise<void> {
    const old = this.agent;
    const next = this.mesh.spawnAgent(this.node1, `agent node-1 #${i}`);
    const ready = logTime(await next.proc.waitForLine(/"msg":"agent ready"/, 30_000));
    const limitMs = HANDOVER_OVERLAP_MS + (this.drainS + 10) * 1000;
    const exit = await Promise.race([old.proc.exited, sleep(limitMs).then(() => "still running")]);
    if (JSON.stringify(exit) !== JSON.stringify({ code: 0, signal: null })) {
      throw new Error(`replacement ${i}: the old agent's exit was ${JSON.stringify(exit)}`);
    }
    const stopping = old.proc.lines.find((line) => line.includes('"msg":"agent stopping"'));
    const overlapMs = stopping ? logTime(stopping) - ready : Number.NaN;
    if (!(overlapMs >= HANDOVER_OVERLAP_MS - 50)) {
      throw new Error(`replacement ${i}: the old agent stopped ${overlapMs} ms after the new one was ready`);
    }
    this.agent = { ...next, node: this.node1 };
  }

  /** Stop, then start: SIGTERM, wait for the exit (the drain), start again with the same arguments. */
  async restartInPlace(i: number): Promise<void> {
    const exit = await this.agent.proc.stop("SIGTERM", (this.drainS + 10) * 1000);
    if (JSON.stringify(exit) !== JSON.stringify({ code: 0, signal: null })) {
      throw new Error(`replacement ${i}: the old agent's exit was ${JSON.stringify(exit)}`);
    }
    if (!this.agent.proc.lines.join("\n").includes("pod listeners held for the next agent")) {
      throw new Error(`replacement ${i}: the stopping agent held no listeners`);
    }
    this.agent = await this.mesh.startAgent(this.node1);
    if (!this.agent.proc.lines.join("\n").includes("took over the pod listeners the previous agent held")) {
      throw new Error(`replacement ${i}: the new agent did not take over the held listeners`);
    }
  }

  /**
   * Runs `rate` requests/s (the shares above) while `replace` runs `replacements` times, 1 s apart
   * after each one's checks, with 2 s of load before the first and the rest after the last.
   */
  async underLoad(rate: number, replacements: number, replace: (i: number) => Promise<void>): Promise<LoadRun> {
    const stream = await connectFrom(this.client.netnsPath, VIP, 7070);
    const streamState: LoadRun["stream"] = { lines: [] };
    let echoed = "";
    stream.setEncoding("utf8");
    stream.on("data", (chunk: string) => {
      echoed += chunk;
    });
    stream.on("close", () => {
      streamState.endedAt ??= Date.now();
    });
    stream.on("error", () => {});
    let sent = 0;
    const ticker = setInterval(() => {
      if (!stream.destroyed) stream.write(`line ${sent++}\n`);
    }, 100);

    const seconds = 10 + replacements * (this.drainS + 3);
    const share = (part: number) => Math.round((rate * part) / 10);
    const url = `http://${VIP}/`;
    const load = (args: Parameters<typeof httpLoadIn>[2]) => httpLoadIn(this.world, this.client, args, 240_000);
    const loads = Promise.all([
      load({ url, requests: seconds * share(3), rate: share(3) }),
      load({ url, requests: seconds * share(3), rate: share(3), headers: { connection: "close" } }),
      load({ url, requests: seconds * share(2), rate: share(2), protocol: "h2-node" }),
    ]);
    const grpcCalls = grpcCallIn(
      this.world,
      this.client,
      { target: `${VIP}:9090`, mode: "unary", calls: seconds * share(2), rate: share(2) },
      240_000,
    );

    const takeoverMs: number[] = [];
    let failure: unknown;
    try {
      await sleep(2000);
      for (let i = 1; i <= replacements; i++) {
        const started = Date.now();
        streamState.firstReplacementAt ??= started;
        await replace(i);
        takeoverMs.push(Date.now() - started);
        await this.afterEach?.(i);
        await sleep(1000);
      }
    } catch (err) {
      failure = err;
    }
    // The loads end on their own (open loop, bounded by their request counts), also after a failure.
    const [keepAlive, perRequest, h2] = await loads;
    const grpc = await grpcCalls;
    clearInterval(ticker);
    stream.destroy();
    if (failure) throw failure;
    streamState.lines = echoed.split("\n").filter(Boolean);
    const reports = { keepAlive, perRequest, h2, grpc };
    const http = [reports.keepAlive, reports.perRequest, reports.h2];
    const requests = http.reduce((n, r) => n + r.requests, 0) + seconds * share(2);
    const ok = http.reduce((n, r) => n + (r.statuses["200"] ?? 0), 0) + (reports.grpc.codes.OK ?? 0);
    const refused = http.reduce(
      (n, r) => n + Object.entries(r.errors).reduce((m, [e, c]) => m + (/ECONNREFUSED/.test(e) ? c : 0), 0),
      0,
    );
    return { requests, failed: requests - ok, refused, takeoverMs, reports, stream: streamState };
  }

  async destroy(): Promise<void> {
    await this.mesh.destroy();
  }
}

/** One line per client: statuses, connection errors and the agent's error codes. */
export function describeRun(run: LoadRun): string {
  const { keepAlive, perRequest, h2, grpc } = run.reports;
  const line = (name: string, r: LoadReport) =>
    `${name}: ${JSON.stringify(r.statuses)} errors ${JSON.stringify(r.errors)} nm ${JSON.stringify(r.nmErrors)}`;
  return [
    line("keep-alive", keepAlive),
    line("per-request", perRequest),
    line("h2", h2),
    `grpc: ${JSON.stringify(grpc.codes)} ${JSON.stringify(grpc.details)}`,
    `takeover ms: ${run.takeoverMs.join(", ")}`,
    `failed: ${run.failed} of ${run.requests}, refused ${run.refused}`,
  ].join("\n");
}
