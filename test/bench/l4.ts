// L4 benchmark: HTTP/1.1 load from a pod to the sample workload, directly and through the mesh
// (opaque TCP: client agent → tunnel → destination agent), same-node and cross-node, in one run
// with the same client (wrk) and the same backend. Prints a markdown table with ratios to direct.
//
//   node test/bench/l4.ts [--duration 10] [--connections 16] [--workers N]

import { parseArgs } from "node:util";
import type { ServiceTable } from "../../api/services.ts";
import { Mesh } from "../e2e/mesh.ts";
import { type Pod, World } from "../world/world.ts";

const { values } = parseArgs({
  options: {
    duration: { type: "string", default: "10" },
    connections: { type: "string", default: "16" },
    workers: { type: "string" },
  },
});

interface WrkResult {
  rps: number;
  p50: number;
  p90: number;
  p99: number;
}

/** Milliseconds from wrk's "1.23ms" / "456.00us" / "1.2s". */
function ms(text: string): number {
  const m = /^([\d.]+)(us|ms|s)$/.exec(text);
  if (!m) throw new Error(`cannot read wrk latency "${text}"`);
  return Number(m[1]) * { us: 0.001, ms: 1, s: 1000 }[m[2] as "us" | "ms" | "s"];
}

async function wrk(world: World, from: Pod, url: string): Promise<WrkResult> {
  const args = ["-t2", `-c${values.connections}`, `-d${values.duration}s`, "--latency", url];
  const r = await world.exec(from, "wrk", args, { timeoutMs: (Number(values.duration) + 30) * 1000 });
  if (r.code !== 0) throw new Error(`wrk failed: ${r.stderr}${r.stdout}`);
  const pct = (p: string) => ms(new RegExp(`^\\s+${p}%\\s+(\\S+)`, "m").exec(r.stdout)![1]);
  if (/Non-2xx|Socket errors/.test(r.stdout)) throw new Error(`wrk saw errors:\n${r.stdout}`);
  return {
    rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(r.stdout)![1]),
    p50: pct("50"),
    p90: pct("90"),
    p99: pct("99"),
  };
}

const world = await World.create({ nodes: 2 });
const mesh = new Mesh(world, { agentArgs: values.workers ? ["--workers", values.workers] : [] });
try {
  const [n1, n2] = world.nodes;
  const meshed = await world.addPod(n1, "client");
  const plain = await world.addPod(n1, "plain-client");
  const near = await world.addPod(n1, "backend-near");
  const far = await world.addPod(n2, "backend-far");
  const svc = (name: string, vip: string, pod: Pod) => ({
    name,
    namespace: "default",
    vip,
    // Declared opaque: this bench measures byte forwarding, not the HTTP proxy.
    ports: [{ port: 80, targetPort: 8080, protocol: "tcp" as const }],
    endpoints: [{ ip: pod.ip, node: pod.node.name, pod: pod.name, meshed: true }],
  });
  const table: ServiceTable = { services: [svc("near", "10.96.0.10", near), svc("far", "10.96.0.11", far)] };
  mesh.writeServices(table);
  await Promise.all([mesh.startAgent(n1), mesh.startAgent(n2)]);
  for (const pod of [near, far]) {
    await mesh.startWorkload(pod, [
      "--http-port",
      "8080",
      "--grpc-port",
      "0",
      "--tcp-echo-port",
      "0",
      "--response-bytes",
      "1024",
    ]);
  }
  for (const pod of [meshed, near, far]) await mesh.enroll(pod);

  // The backends are enrolled, so even the "direct" client reaches them through their inbound
  // listener; the unmeshed client therefore targets the backend with its redirect uninstalled.
  const rows: Array<[string, WrkResult]> = [];
  for (const [label, backend, vip] of [
    ["same-node", near, "10.96.0.10"],
    ["cross-node", far, "10.96.0.11"],
  ] as const) {
    await mesh.init(backend, ["--uninstall"]);
    rows.push([`direct, ${label}`, await wrk(world, plain, `http://${backend.ip}:8080/`)]);
    await mesh.enroll(backend);
    rows.push([`nodemesh opaque TCP, ${label}`, await wrk(world, meshed, `http://${vip}/`)]);
  }

  console.log(`\nwrk -t2 -c${values.connections} -d${values.duration}s, 1 KiB responses, HTTP/1.1 keep-alive\n`);
  console.log("| path | req/s | p50 ms | p90 ms | p99 ms | req/s vs direct | added p50 ms | added p99 ms |");
  console.log("|---|---|---|---|---|---|---|---|");
  for (let i = 0; i < rows.length; i += 2) {
    const [dLabel, d] = rows[i];
    const [mLabel, m] = rows[i + 1];
    console.log(
      `| ${dLabel} | ${d.rps.toFixed(0)} | ${d.p50.toFixed(3)} | ${d.p90.toFixed(3)} | ${d.p99.toFixed(3)} | 1.00 | | |`,
    );
    console.log(
      `| ${mLabel} | ${m.rps.toFixed(0)} | ${m.p50.toFixed(3)} | ${m.p90.toFixed(3)} | ${m.p99.toFixed(3)} | ${(m.rps / d.rps).toFixed(2)} | ${(m.p50 - d.p50).toFixed(3)} | ${(m.p99 - d.p99).toFixed(3)} |`,
    );
  }
} finally {
  await mesh.destroy();
}
