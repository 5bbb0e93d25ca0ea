// L7 latency per hop at a fixed rate: h2load sends HTTP/1.1 (and gRPC unary over HTTP/2) at a
// fixed request rate, paced per connection, from a pod on node 1 to the sample workload on node 2:
//
//   direct    unmeshed client → unmeshed backend
//   one hop   meshed client → its agent (L7) → unmeshed backend       (the source agent's cost)
//   two hops  meshed client → its agent → backend's agent → backend   (+ the destination agent's)
//
//
//   node test/bench/l7-latency.ts [--rate 1000] [--duration 10] [--connections 10]

import { parseArgs } from "node:util";
import type { ServiceTable } from "../../api/services.ts";
import { Mesh } from "../e2e/mesh.ts";
import { type Pod, World } from "../world/world.ts";
import { h2loadAtRate, type Latency } from "./h2load.ts";
import { BENCH_WORKLOAD_ARGS } from "./workload.ts";

const { values } = parseArgs({
  options: {
    rate: { type: "string", default: "1000" },
    duration: { type: "string", default: "10" },
    connections: { type: "string", default: "10" },
  },
});
const RATE = Number(values.rate);
const CONNECTIONS = Number(values.connections);

const world = await World.create({ nodes: 2 });
const h2load = (from: Pod, url: string, grpc: boolean) =>
  h2loadAtRate(world, from, url, { rate: RATE, connections: CONNECTIONS, durationS: Number(values.duration), grpc });
const mesh = new Mesh(world);
try {
  const [n1, n2] = world.nodes;
  const client = await world.addPod(n1, "client");
  const plainClient = await world.addPod(n1, "plain-client");
  const meshedBackend = await world.addPod(n2, "backend-meshed");
  const plainBackend = await world.addPod(n2, "backend-plain");
  const svc = (name: string, vip: string, pod: Pod, meshed: boolean) => ({
    name,
    namespace: "default",
    vip,
    ports: [
      { name: "http", port: 80, targetPort: 8080, protocol: "http" as const },
      { name: "grpc", port: 9090, protocol: "grpc" as const },
    ],
    endpoints: [{ ip: pod.ip, node: pod.node.name, pod: pod.name, meshed }],
  });
  const table: ServiceTable = {
    services: [svc("meshed", "10.96.0.10", meshedBackend, true), svc("plain", "10.96.0.11", plainBackend, false)],
  };
  mesh.writeServices(table);
  await Promise.all([mesh.startAgent(n1), mesh.startAgent(n2)]);
  for (const pod of [meshedBackend, plainBackend]) await mesh.startWorkload(pod, [...BENCH_WORKLOAD_ARGS]);
  for (const pod of [client, meshedBackend]) await mesh.enroll(pod);

  const rows: Array<[string, string, Latency]> = [];
  for (const [proto, port, grpc] of [
    ["HTTP/1.1", 8080, false],
    ["gRPC unary", 9090, true],
  ] as const) {
    const path = grpc ? "/echo.Echo/Unary" : "/";
    const servicePort = grpc ? 9090 : 80;
    rows.push([proto, "direct", await h2load(plainClient, `http://${plainBackend.ip}:${port}${path}`, grpc)]);
    rows.push([proto, "one hop", await h2load(client, `http://10.96.0.11:${servicePort}${path}`, grpc)]);
    rows.push([proto, "two hops", await h2load(client, `http://10.96.0.10:${servicePort}${path}`, grpc)]);
  }

  console.log(
    `\nh2load --rps, ${RATE} req/s total over ${CONNECTIONS} connections, ${values.duration} s, 1 KiB responses, cross-node\n`,
  );
  console.log("| protocol | path | ok/total | p50 ms | p90 ms | p99 ms | p99.9 ms | added p50 | added p99 |");
  console.log("|---|---|---|---|---|---|---|---|---|");
  for (let i = 0; i < rows.length; i++) {
    const [proto, path, l] = rows[i]!;
    const prev = path === "direct" ? undefined : rows[i - 1]![2];
    const added = prev ? `${(l.p50 - prev.p50).toFixed(3)} | ${(l.p99 - prev.p99).toFixed(3)}` : " | ";
    console.log(
      `| ${proto} | ${path} | ${l.ok}/${l.total} | ${l.p50.toFixed(3)} | ${l.p90.toFixed(3)} | ${l.p99.toFixed(3)} | ${l.p999.toFixed(3)} | ${added} |`,
    );
  }
  console.log("\n(added = this row minus the row above: the cost of the hop it adds)");
} finally {
  await mesh.destroy();
}
