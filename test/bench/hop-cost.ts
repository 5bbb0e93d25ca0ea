// One L7 hop, on loopback, without network namespaces, tunnels or other processes sharing it: the
// agent's HTTP/1.1 chain (routing, policy, picking, pooled upstream, request metrics) in a process
// of its own (the real Dataplane over plain sockets, testing/loopback.ts), beside a direct
// connection and one HAProxy `mode http` in the same place. h2load (16 connections) sends to each
// against the same backend, a fixed 1 KiB answer written by a bare TCP server. The quiet way to
// weigh a change to the request path: `compare.ts` runs two agents, a tunnel, mTLS and the
// workloads on the same two cores, and its spread is wider than most single changes.
//
//   node test/bench/hop-cost.ts [--requests 30000] [--rate 1000] [--duration 10] [--rounds 3]
//
// Per system and round: saturation (req/s, closed loop) and CPU per 1000 requests of the proxy
// process (all its threads), at saturation and at the fixed rate.

import { type ChildProcess, execFileSync, fork, spawn } from "node:child_process";
import { rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { handleOutbound } from "../../agent/dataplane/outbound.ts";
import { acceptor, loopbackDataplane, loopbackPod } from "../../agent/dataplane/testing/loopback.ts";
import { h2loadSummary } from "./h2load.ts";
import { cpuSeconds } from "./proc-stats.ts";

const BACKEND_PORT = 19_901;
const HAPROXY_PORT = 19_902;
const CONNECTIONS = 16;
const VIP = "10.96.0.1";

/** A backend as cheap as can be: a fixed answer per request head, nothing parsed. */
function serveBackend(): void {
  const body = "x".repeat(1024);
  const answer = Buffer.from(
    `HTTP/1.1 200 OK\r\ncontent-length: ${body.length}\r\ncontent-type: text/plain\r\n\r\n${body}`,
  );
  const server = net.createServer((socket) => {
    socket.on("error", () => {}); // a client's reset as it finishes
    socket.on("data", (data: Buffer) => {
      for (let at = data.indexOf("\r\n\r\n"); at >= 0; at = data.indexOf("\r\n\r\n", at + 4)) socket.write(answer);
    });
  });
  server.listen(BACKEND_PORT, "127.0.0.1", () => process.send?.("ready"));
}

/** The agent's data plane, its outbound side bound to a pod on loopback: one L7 hop. */
async function serveHop(): Promise<void> {
  const dataplane = loopbackDataplane([
    {
      name: "web",
      namespace: "default",
      vip: VIP,
      ports: [{ name: "http", port: 80, protocol: "http" }],
      endpoints: [{ ip: "127.0.0.1", port: BACKEND_PORT, node: "node-a", pod: "web-0" }],
    },
  ]);
  const client = loopbackPod("127.0.0.1", "client-0", "client");
  const accepted = await acceptor((socket) => void handleOutbound(dataplane, client, socket, { ip: VIP, port: 80 }));
  process.send?.(accepted.port);
}

if (process.argv[2] === "--backend") serveBackend();
else if (process.argv[2] === "--hop") await serveHop();
else await main();

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      requests: { type: "string", default: "30000" },
      rate: { type: "string", default: "1000" },
      duration: { type: "string", default: "10" },
      rounds: { type: "string", default: "3" },
    },
  });
  const requests = Number(values.requests);
  const rounds = Number(values.rounds);
  const children: ChildProcess[] = [];
  const haproxyCfg = join(tmpdir(), `hop-cost-${process.pid}.cfg`);
  try {
    await started(fork(import.meta.filename, ["--backend"]), children);
    const hop = fork(import.meta.filename, ["--hop"]);
    const hopPort = (await started(hop, children)) as number;
    writeFileSync(
      haproxyCfg,
      `global\n  maxconn 4096\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n` +
        `listen hop\n  bind 127.0.0.1:${HAPROXY_PORT}\n  server s 127.0.0.1:${BACKEND_PORT}\n`,
    );
    const haproxy = spawn("haproxy", ["-db", "-f", haproxyCfg], { stdio: "ignore" });
    children.push(haproxy);
    await waitForPort(HAPROXY_PORT);

    const systems = [
      { name: "direct", port: BACKEND_PORT, pid: undefined },
      { name: "HAProxy http", port: HAPROXY_PORT, pid: haproxy.pid },
      { name: "nodemesh L7 hop", port: hopPort, pid: hop.pid },
    ];
    console.log("| round | system | saturation req/s | CPU s / 1000 req, saturated | CPU s / 1000 req, at rate |");
    console.log("|---|---|---|---|---|");
    for (const s of systems) h2load(s.port, ["-n", "5000"]); // warm-up (JIT, pools)
    for (let round = 1; round <= rounds; round++) {
      for (const s of systems) {
        const saturated = measure(s.pid, () => h2load(s.port, ["-n", String(requests)]));
        const perClient = String(Number(values.rate) / CONNECTIONS);
        const paced = measure(s.pid, () => h2load(s.port, ["--rps", perClient, "-D", values.duration]));
        const cpu = (m: Measured) => (m.cpuPer1000 === undefined ? "" : m.cpuPer1000.toFixed(3));
        console.log(`| ${round} | ${s.name} | ${saturated.rps.toFixed(0)} | ${cpu(saturated)} | ${cpu(paced)} |`);
      }
    }
  } finally {
    for (const c of children) c.kill("SIGKILL");
    rmSync(haproxyCfg, { force: true });
  }
}

interface Measured {
  rps: number;
  cpuPer1000?: number;
}

function measure(pid: number | undefined, run: () => { rps: number; done: number }): Measured {
  const before = pid ? cpuSeconds([pid]) : 0;
  const { rps, done } = run();
  if (!pid) return { rps };
  return { rps, cpuPer1000: ((cpuSeconds([pid]) - before) / done) * 1000 };
}

function h2load(port: number, args: string[]): { rps: number; done: number } {
  const out = execFileSync("h2load", ["--h1", "-c", String(CONNECTIONS), ...args, `http://127.0.0.1:${port}/x`], {
    encoding: "utf8",
  });
  const { rps, succeeded, failed } = h2loadSummary(out);
  if (failed > 0) throw new Error(`${failed} requests failed on port ${port}:\n${out}`);
  return { rps, done: succeeded };
}

/** Resolves with the child's first message (its port, or "ready"); fails if it exits first. */
function started(child: ChildProcess, children: ChildProcess[]): Promise<unknown> {
  children.push(child);
  return new Promise((resolve, reject) => {
    child.once("message", resolve);
    child.once("exit", (code) => reject(new Error(`a benchmark process exited (${code}) before it was ready`)));
  });
}

async function waitForPort(port: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const open = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, "127.0.0.1", () => resolve(true)).on("error", () => resolve(false));
      s.once("connect", () => s.destroy());
    });
    if (open) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nothing listens on ${port} after 5 s`);
}
