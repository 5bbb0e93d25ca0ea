// What metrics and access logs cost: the same two-hop HTTP/1.1 path (client on node 1, backend on
// node 2, both agents in the path) at a fixed rate, with the agents started three ways: per-request
// metrics off, metrics on (the default), metrics on plus an access-log line per request (to a file).
//
//   node test/bench/telemetry-cost.ts [--rate 1000] [--duration 10]

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { Mesh } from "../e2e/mesh.ts";
import { World } from "../world/world.ts";
import { h2loadAtRate, type Latency } from "./h2load.ts";
import { BENCH_WORKLOAD_ARGS } from "./workload.ts";

const { values } = parseArgs({
  options: { rate: { type: "string", default: "1000" }, duration: { type: "string", default: "10" } },
});
const dir = mkdtempSync(join(tmpdir(), "nodemesh-telemetry-"));

async function run(agentArgs: string[]): Promise<Latency> {
  const world = await World.create({ nodes: 2 });
  const mesh = new Mesh(world, { agentArgs });
  try {
    const [n1, n2] = world.nodes;
    const client = await world.addPod(n1, "client");
    const backend = await world.addPod(n2, "backend");
    mesh.writeServices({
      services: [
        {
          name: "backend",
          namespace: "default",
          vip: "10.96.0.10",
          ports: [{ name: "http", port: 80, targetPort: 8080, protocol: "http" }],
          endpoints: [{ ip: backend.ip, node: n2.name, pod: backend.name, meshed: true }],
        },
      ],
    });
    await Promise.all([mesh.startAgent(n1), mesh.startAgent(n2)]);
    await mesh.startWorkload(backend, [...BENCH_WORKLOAD_ARGS]);
    for (const pod of [client, backend]) await mesh.enroll(pod);
    return await h2loadAtRate(world, client, "http://10.96.0.10/", {
      rate: Number(values.rate),
      connections: 10,
      durationS: Number(values.duration),
      grpc: false,
    });
  } finally {
    await mesh.destroy();
  }
}

try {
  const variants: Array<[string, string[]]> = [
    ["metrics off", ["--request-metrics", "off"]],
    ["metrics on (default)", []],
    ["metrics + access log", ["--access-log", "all", "--access-log-file", join(dir, "access.log")]],
  ];
  const rows: Array<[string, Latency]> = [];
  for (const [label, args] of variants) rows.push([label, await run(args)]);
  console.log(
    `\nHTTP/1.1 through two agents, h2load --rps ${values.rate} req/s, 10 connections, ${values.duration} s\n`,
  );
  console.log("| agents | ok/total | p50 ms | p90 ms | p99 ms | p99.9 ms | p50 vs off | p99 vs off |");
  console.log("|---|---|---|---|---|---|---|---|");
  const base = rows[0]![1];
  for (const [label, l] of rows) {
    console.log(
      `| ${label} | ${l.ok}/${l.total} | ${l.p50.toFixed(3)} | ${l.p90.toFixed(3)} | ${l.p99.toFixed(3)} | ${l.p999.toFixed(3)} | ${(l.p50 - base.p50).toFixed(3)} | ${(l.p99 - base.p99).toFixed(3)} |`,
    );
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
