// What tracing costs: the same two-hop HTTP/1.1 path (client on node 1, backend on node 2, both
// agents in the path) at a fixed rate, with the agents (as built: npm run build) started three
// ways: tracing off (no --otlp-endpoint), 1 % sampling (the default rate) and 100 % sampling, both
// exporting to an OTLP/HTTP sink on the underlay that answers at once without decoding. Reports
// latency (added p50/p99 against off) and the agents' CPU per 1000 requests, in one table, and
// writes it as JSON. Each run gets a world of its own; the variants take turns for `--rounds`
// rounds, each round starting with the next variant, and each figure is the median of its
// rounds, so a load that comes and goes on the machine weighs on every variant alike.
//
//   node test/bench/tracing-cost.ts [--quick] [--rounds 3] [--variants off,1,100] [--rate 1000] [--duration 10] [--json FILE]

import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { parseArgs } from "node:util";
import { BUILT_CLI, Mesh } from "../e2e/mesh.ts";
import { httpFrom, metricSum } from "../e2e/netns-client.ts";
import { type Pod, World } from "../world/world.ts";
import { h2loadAtRate, type Latency, WARM_UP_S } from "./h2load.ts";
import { cpuInWindow } from "./proc-stats.ts";
import { BENCH_WORKLOAD_ARGS } from "./workload.ts";

const { values } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    rate: { type: "string", default: "1000" },
    duration: { type: "string" },
    rounds: { type: "string", default: "3" },
    /** Sampling percentages to run beside "off" (always first: the others are compared with it). */
    variants: { type: "string", default: "1,100" },
    json: { type: "string", default: "test-results/bench-tracing.json" },
  },
});
const RATE = Number(values.rate);
const DURATION_S = Number(values.duration ?? (values.quick ? 4 : 10));
const CONNECTIONS = 10;
const SINK = new URL("../e2e/clients/otlp-sink.ts", import.meta.url).pathname;
const SINK_PORT = 4318;
/** The target: 1 % sampling adds under 5 % CPU per request (issue 15). */
const GOAL_CPU_RATIO = 1.05;

if (!existsSync(BUILT_CLI)) throw new Error(`${BUILT_CLI} is missing: run npm run build (make bench does)`);

interface Row {
  label: string;
  latency: Latency;
  /** The two agents' CPU seconds per 1000 requests, over the steady part of the run. */
  cpuPer1000: number;
  spansExported: number;
  spansDropped: number;
}

/**
 * One request through the mesh must succeed before the timed run: this benchmark measures what
 * tracing costs a warm path. (Runs of 2026-12-05 failed here with a 503 after the 1 s connect
 * budget: the world handed back underlay ports that did not forward yet, so the first ARP request
 * between the nodes was lost; the world now waits for its links, see waitForLinks.)
 */
async function warmUp(client: Pod, url: string): Promise<void> {
  const attempts: string[] = [];
  for (let i = 0; i < 20; i++) {
    const started = performance.now();
    let outcome: string;
    let ok = false;
    try {
      const reply = await httpFrom(client.netnsPath, url);
      ok = reply.status === 200;
      outcome = `${reply.status} ${reply.headers["x-nodemesh-error"] ?? ""}`.trim();
    } catch (err) {
      outcome = (err as Error).message;
    }
    attempts.push(`${outcome} after ${((performance.now() - started) / 1000).toFixed(3)} s`);
    if (ok) {
      if (attempts.length > 1) console.error(`[bench] warm-up: ${attempts.join(", ")}`);
      return;
    }
  }
  throw new Error(`no request through the mesh succeeded: ${attempts.join(", ")}`);
}

async function run(label: string, tracingArgs: (sinkUrl: string) => string[]): Promise<Row> {
  const world = await World.create({ nodes: 2 });
  // The sink lives on the underlay, in the namespace a controller would have.
  const sinkPlace = await world.addController();
  const sinkUrl = `http://${sinkPlace.ip}:${SINK_PORT}`;
  const mesh = new Mesh(world, { cli: BUILT_CLI, agentArgs: tracingArgs(sinkUrl) });
  try {
    const [n1, n2] = world.nodes as [(typeof world.nodes)[0], (typeof world.nodes)[0]];
    const sink = world.spawn(sinkPlace, process.execPath, [SINK, "--port", String(SINK_PORT), "--discard"], {
      name: "otlp-sink",
    });
    await sink.waitForLine("listening");
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
    const agents = await Promise.all([mesh.startAgent(n1), mesh.startAgent(n2)]);
    await mesh.startWorkload(backend, [...BENCH_WORKLOAD_ARGS]);
    for (const pod of [client, backend]) await mesh.enroll(pod);
    const pids = agents.map((a) => a.proc.pid!);
    await warmUp(client, "http://10.96.0.10/");
    const rated = await cpuInWindow(pids, (WARM_UP_S + 0.3) * 1000, (WARM_UP_S + DURATION_S - 0.3) * 1000, () =>
      h2loadAtRate(world, client, "http://10.96.0.10/", {
        rate: RATE,
        connections: CONNECTIONS,
        durationS: DURATION_S,
        grpc: false,
      }),
    );
    const latency = rated.result;
    if (latency.ok !== latency.total) throw new Error(`${label}: ${latency.total - latency.ok} failed requests`);
    // The last batches leave within the exporters' 5 s interval.
    await new Promise((resolve) => setTimeout(resolve, 5500));
    let spansExported = 0;
    let spansDropped = 0;
    for (const node of [n1, n2]) {
      const m = await mesh.metrics(node);
      spansExported += metricSum(m, "nodemesh_agent_spans_exported_total");
      spansDropped += metricSum(m, "nodemesh_agent_spans_dropped_total");
    }
    const achievedRps = latency.total / DURATION_S;
    return {
      label,
      latency,
      cpuPer1000: (rated.cpuS / (achievedRps * rated.windowS)) * 1000,
      spansExported,
      spansDropped,
    };
  } finally {
    await mesh.destroy();
  }
}

const VARIANTS: ReadonlyArray<[string, (sinkUrl: string) => string[]]> = [
  ["off", () => []],
  ...values.variants
    .split(",")
    .filter((v) => v !== "off")
    .map((p): [string, (url: string) => string[]] => [
      `${p} %`,
      (url) => ["--otlp-endpoint", url, "--trace-sampling", p],
    ]),
];
const ROUNDS = Number(values.rounds);
const runs: Row[][] = VARIANTS.map(() => []);
for (let round = 0; round < ROUNDS; round++) {
  // Each round starts with another variant: a load that grows or shrinks during a round must not
  // always fall on the same one (runs in a fixed order made each later variant look dearer).
  for (let k = 0; k < VARIANTS.length; k++) {
    const i = (round + k) % VARIANTS.length;
    const [label, args] = VARIANTS[i]!;
    runs[i]!.push(await run(label, args));
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
/** A variant's rounds as one row: the median of each figure (totals summed). */
const rows: Row[] = runs.map((rs) => ({
  label: rs[0]!.label,
  latency: {
    p50: median(rs.map((r) => r.latency.p50)),
    p90: median(rs.map((r) => r.latency.p90)),
    p99: median(rs.map((r) => r.latency.p99)),
    p999: median(rs.map((r) => r.latency.p999)),
    ok: rs.reduce((n, r) => n + r.latency.ok, 0),
    total: rs.reduce((n, r) => n + r.latency.total, 0),
  },
  cpuPer1000: median(rs.map((r) => r.cpuPer1000)),
  spansExported: rs.reduce((n, r) => n + r.spansExported, 0),
  spansDropped: rs.reduce((n, r) => n + r.spansDropped, 0),
}));

const off = rows[0]!;
console.log(
  `\nTracing cost: HTTP/1.1 through two agents, h2load --rps ${RATE} req/s, ${CONNECTIONS} connections, ${DURATION_S} s, built agents; medians of ${ROUNDS} rounds\n`,
);
console.log(
  "| tracing | ok/total | p50 ms | p99 ms | added p50 vs off | added p99 vs off | agents' CPU s / 1000 req | CPU vs off | spans exported | spans dropped |",
);
console.log("|---|---|---|---|---|---|---|---|---|---|");
for (const r of rows) {
  const l = r.latency;
  console.log(
    `| ${r.label} | ${l.ok}/${l.total} | ${l.p50.toFixed(3)} | ${l.p99.toFixed(3)} | ${(l.p50 - off.latency.p50).toFixed(3)} | ${(l.p99 - off.latency.p99).toFixed(3)} | ${r.cpuPer1000.toFixed(3)} | ${(r.cpuPer1000 / off.cpuPer1000).toFixed(3)} | ${r.spansExported} | ${r.spansDropped} |`,
  );
}
const one = rows.find((r) => r.label === "1 %");
if (one) {
  const ratio = one.cpuPer1000 / off.cpuPer1000;
  console.log(
    `\nGoal: 1 % sampling costs under 5 % CPU per request: ${ratio.toFixed(3)}× off, ${ratio < GOAL_CPU_RATIO ? "met" : "**not met**"} (medians of ${ROUNDS} rounds taken in turn; noisy on a shared machine)`,
  );
}
mkdirSync(dirname(values.json), { recursive: true });
writeFileSync(
  values.json,
  `${JSON.stringify({ date: new Date().toISOString(), rate: RATE, durationS: DURATION_S, rounds: ROUNDS, rows, runs }, null, 2)}\n`,
);
