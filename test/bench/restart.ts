// Agent replacements under load, for `make bench`: what a restart or an upgrade costs. The world,
// the load and the two ways of replacing are the upgrade test's (test/e2e/agent-replacement.ts);
// the agents run as built. Reports, per way: failed requests per replacement, refused connections,
// and how long a replacement took (surge: from starting the new agent until the old one exited,
// the handover's overlap and the old one's drain included; stop-then-start: from SIGTERM until the next agent was ready).
//
//   node test/bench/restart.ts [--quick] [--replacements N] [--rate R] [--json FILE]

import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { parseArgs } from "node:util";
import { describeRun, type LoadRun, ReplacementWorld } from "../e2e/agent-replacement.ts";
import { BUILT_CLI } from "../e2e/mesh.ts";
import { World } from "../world/world.ts";
import { percentile } from "./h2load.ts";

const { values: args } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    replacements: { type: "string" },
    rate: { type: "string" },
    json: { type: "string", default: "test-results/bench-restart.json" },
  },
});
const replacements = Number(args.replacements ?? (args.quick ? 2 : 5));
const rate = Number(args.rate ?? 1000);
const DRAIN_S = 3;

if (!existsSync(BUILT_CLI)) throw new Error(`${BUILT_CLI} is missing: run npm run build (make bench does)`);

interface WayResult {
  way: string;
  replacements: number;
  requests: number;
  failed: number;
  failedPerReplacement: number;
  refused: number;
  takeoverMsP50: number;
  takeoverMsMax: number;
}

function summarize(way: string, run: LoadRun): WayResult {
  const sorted = [...run.takeoverMs].sort((a, b) => a - b);
  return {
    way,
    replacements,
    requests: run.requests,
    failed: run.failed,
    failedPerReplacement: Math.round((run.failed / replacements) * 10) / 10,
    refused: run.refused,
    takeoverMsP50: percentile(sorted, 50),
    takeoverMsMax: sorted.at(-1) ?? 0,
  };
}

const world = await World.create({ nodes: 2 });
const results: WayResult[] = [];
try {
  const w = await ReplacementWorld.create({ world, drainS: DRAIN_S, cli: BUILT_CLI });
  for (const [way, replace] of [
    ["surge", (i: number) => w.surge(i)],
    ["stop, then start", (i: number) => w.restartInPlace(i)],
  ] as const) {
    const run = await w.underLoad(rate, replacements, replace);
    console.log(`${way}:\n${describeRun(run)}`);
    results.push(summarize(way, run));
  }
  await w.destroy();
} finally {
  await world.destroy();
}

const table = [
  `Agent replacements on node-1 under ${rate} requests/s (HTTP/1.1 keep-alive and per-request, HTTP/2, gRPC), drain ${DRAIN_S} s`,
  "",
  "| way | replacements | requests | failed | failed per replacement | refused | replacement took p50 / max |",
  "|---|---|---|---|---|---|---|",
  ...results.map(
    (r) =>
      `| ${r.way} | ${r.replacements} | ${r.requests} | ${r.failed} | ${r.failedPerReplacement} | ${r.refused} | ${r.takeoverMsP50} / ${r.takeoverMsMax} ms |`,
  ),
].join("\n");
console.log(`\n${table}`);
mkdirSync(dirname(args.json), { recursive: true });
writeFileSync(args.json, `${JSON.stringify({ rate, drainS: DRAIN_S, results }, null, 2)}\n`);
