// Replacing a node's agent loses nothing (issue 14): a new agent started beside the running one
// takes over (control/handover.ts) while traffic runs through the node — HTTP/1.1 on keep-alive
// connections, HTTP/1.1 with a new connection per request, gRPC (HTTP/2, grpc-js), and one long
// opaque TCP stream — and after each replacement enrollment, the admin port and the controller
// stream work.
//
// HTTP/2 clients meet a GOAWAY at each drain (the graceful one, RFC 9113 §6.8: the highest stream
// id first). grpc-js honours it; undici 7 does not (it fails the request at the head of its queue
// on any GOAWAY: "we do not verify the valid stream id" in its client-h2.js), so undici is not the
// HTTP/2 client here.
//
//   node-1: client, web-1 (the agent replaced)       node-2: web-2

import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_PORT } from "../../api/dataplane.ts";
import { type Node, type Pod, World } from "../world/world.ts";
import type { GrpcArgs } from "./clients/grpc-call.ts";
import type { LoadArgs, LoadReport } from "./clients/http-load.ts";
import { grpcCallIn, httpLoadIn } from "./clients/in-pod.ts";
import { eventually } from "./eventually.ts";
import { type AgentHandle, Mesh } from "./mesh.ts";
import { connectFrom, httpFrom } from "./netns-client.ts";

const VIP = "10.96.0.10";
const REPLACEMENTS = 10;
/** The test agents' drain deadline: what a long opaque stream gets after the listeners closed. */
const DRAIN_S = 3;

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

describe("agent replacement under load", () => {
  let world: World;
  let mesh: Mesh;
  let n1: Node;
  let client: Pod;
  let agent: AgentHandle;

  const load = (args: LoadArgs) => httpLoadIn(world, client, args, 120_000);
  const grpcLoad = (args: GrpcArgs) => grpcCallIn(world, client, args, 120_000);
  const admin = async (path: string) => (await httpFrom(n1.netnsPath, `http://127.0.0.1:${ADMIN_PORT}${path}`)).status;

  beforeAll(async () => {
    world = await World.create({ nodes: 2 });
    mesh = new Mesh(world, { agentArgs: ["--drain-timeout-s", String(DRAIN_S)] });
    const [a, b] = world.nodes;
    n1 = a!;
    await mesh.startController();
    agent = await mesh.startAgent(n1);
    await mesh.startAgent(b!);
    client = await world.addPod(n1, "client");
    const web = [await world.addPod(n1, "web-1"), await world.addPod(b!, "web-2")];
    for (const pod of web)
      await mesh.startWorkload(pod, ["--http-port", "8080", "--grpc-port", "9090", "--tcp-echo-port", "7070"]);
    await mesh.enroll(client, ["--label", "app=client"]);
    for (const pod of web) await mesh.enroll(pod, ["--label", "app=web"]);
    expect((await mesh.cli(["apply", "-f", "-"], SERVICE)).code).toBe(0);
    await eventually("the Service on both agents", 15_000, async () => {
      const get = await mesh.cli(["get", "service", "web"]);
      return /2\/2/.test(get.stdout) ? true : undefined;
    });
  }, 90_000);

  afterAll(async () => {
    await mesh?.destroy();
  });

  /** Runs the loads while `replace` swaps node-1's agent REPLACEMENTS times; checks nothing was lost. */
  const underLoad = async (replace: (i: number) => Promise<void>, allowedFailures: number) => {
    // One long opaque stream through node-1's agent: a line every 100 ms, each echoed.
    const stream = await connectFrom(client.netnsPath, VIP, 7070);
    let echoed = "";
    let streamEnded: number | undefined;
    stream.setEncoding("utf8");
    stream.on("data", (chunk: string) => {
      echoed += chunk;
    });
    stream.on("close", () => {
      streamEnded ??= Date.now();
    });
    stream.on("error", () => {});
    let sent = 0;
    const ticker = setInterval(() => {
      if (!stream.destroyed) stream.write(`line ${sent++}\n`);
    }, 100);

    const seconds = 10 + REPLACEMENTS * (DRAIN_S + 3);
    const loads = Promise.all([
      load({ url: `http://${VIP}/`, requests: seconds * 200, rate: 200 }),
      load({ url: `http://${VIP}/`, requests: seconds * 200, rate: 200, headers: { connection: "close" } }),
    ]);
    const grpcCalls = grpcLoad({ target: `${VIP}:9090`, mode: "unary", calls: seconds * 100, rate: 100 });

    const takeovers: number[] = [];
    let firstDrainStarted: number | undefined;
    await sleep(2000);
    for (let i = 1; i <= REPLACEMENTS; i++) {
      const started = Date.now();
      firstDrainStarted ??= Date.now();
      await replace(i);
      takeovers.push(Date.now() - started);
      // After each: the admin port, enrollment and the controller stream are the new agent's.
      expect(await admin("/healthz")).toBe(200);
      expect(await admin("/readyz")).toBe(200);
      const listed = await mesh.enrollmentCall(n1, n1, "GET", "/v1/pods");
      expect(listed.status, `replacement ${i}: enrollment`).toBe(200);
      expect(listed.body).toContain('"name":"web-1"');
      await eventually(`replacement ${i}: node-1 in sync with the controller`, 10_000, async () => {
        const status = JSON.parse((await mesh.cli(["status", "-o", "json"])).stdout) as {
          node: string;
          connected: boolean;
          appliedVersion?: string;
          currentVersion: string;
        }[];
        const n = status.find((a) => a.node === "node-1");
        return n?.connected && n.appliedVersion === n.currentVersion ? true : undefined;
      });
      await sleep(1000);
    }

    const [keepAlive, perRequest] = await loads;
    const grpcReport = await grpcCalls;
    clearInterval(ticker);
    const report = (name: string, r: LoadReport) =>
      `${name}: ${JSON.stringify(r.statuses)} errors ${JSON.stringify(r.errors)} nm ${JSON.stringify(r.nmErrors)}`;
    console.log(
      [report("keep-alive", keepAlive), report("per-request", perRequest)].join("\n"),
      `\ngrpc: ${JSON.stringify(grpcReport.codes)} ${JSON.stringify(grpcReport.details)}`,
      `\ntakeover ms: ${takeovers.join(", ")}`,
    );
    const requests = seconds * 500;
    const failed =
      requests - (keepAlive.statuses["200"] ?? 0) - (perRequest.statuses["200"] ?? 0) - (grpcReport.codes.OK ?? 0);
    console.log(`failed: ${failed} of ${requests}`);
    // Never a refused connection; failures within what this way of replacing allows.
    for (const r of [keepAlive, perRequest])
      expect(Object.keys(r.errors).filter((e) => /ECONNREFUSED/.test(e))).toEqual([]);
    expect(failed).toBeLessThanOrEqual(allowedFailures);
    // The stream through the first replaced agent: it carried every line until the drain deadline,
    // then ended (no reset before it).
    const lines = echoed.split("\n").filter(Boolean);
    expect(lines.length).toBeGreaterThan(10);
    expect(lines.every((l, i) => l === `line ${i}`)).toBe(true);
    expect(streamEnded).toBeDefined();
    expect(streamEnded! - firstDrainStarted!).toBeGreaterThanOrEqual(DRAIN_S * 1000 - 500);
    stream.destroy();
  };

  it(`${REPLACEMENTS} surge replacements of node-1's agent under 500 requests/s: nothing failed or refused`, async () => {
    await underLoad(async (i) => {
      const old = agent;
      const next = mesh.spawnAgent(n1, `agent node-1 #${i}`);
      await next.proc.waitForLine(/"msg":"agent ready"/, 20_000);
      // The old one drains (its HTTP clients leave at once; the opaque stream at the deadline) and exits 0.
      const exit = await Promise.race([old.proc.exited, sleep((DRAIN_S + 10) * 1000).then(() => "still running")]);
      expect(exit, `replacement ${i}: the old agent's exit`).toEqual({ code: 0, signal: null });
      agent = { ...next, node: n1 };
    }, 0);
  }, 180_000);

  it(`${REPLACEMENTS} stop-then-start replacements under 500 requests/s: connections wait in the held listeners, none refused, under 2 % failed`, async () => {
    await underLoad(async (i) => {
      // SIGTERM, wait for the exit (the drain), then start: what a supervisor that restarts in place does.
      const exit = await agent.proc.stop("SIGTERM", (DRAIN_S + 10) * 1000);
      expect(exit, `replacement ${i}: the old agent's exit`).toEqual({ code: 0, signal: null });
      expect(agent.proc.lines.join("\n")).toContain("pod listeners held for the next agent");
      agent = await mesh.startAgent(n1);
      expect(agent.proc.lines.join("\n")).toContain("took over the pod listeners the previous agent held");
      // Measured: 0 refused; 4 to 335 of 35,000 failed over runs, the most inside the full suite on a
      // busy machine (connections waiting past the clients' 10 s connect and header timeouts, and
      // keep-alive reuse races). Surge: 0.
    }, 700);
  }, 180_000);
});
