// Summarizes V8 CPU profiles (node --cpu-prof) by self time per function, across every file given:
// what dominates a benchmark run. Node writes one profile per thread (CPU.<date>.<pid>.<thread>…).
//
//   node test/bench/profile-summary.ts [--top 25] PROFILE.cpuprofile...

import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const { values, positionals } = parseArgs({
  options: { top: { type: "string", default: "25" } },
  allowPositionals: true,
});

const selfUs = new Map<string, number>();
let totalUs = 0;
for (const file of positionals) {
  const profile = JSON.parse(readFileSync(file, "utf8")) as Profile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  profile.samples.forEach((id, i) => {
    const { functionName, url, lineNumber } = byId.get(id)!.callFrame;
    const where = url ? `${url.replace(/^.*\/(node_modules|dist|work\/main)\//, "")}:${lineNumber + 1}` : "";
    const key = `${functionName || "(anonymous)"} ${where}`.trim();
    const us = profile.timeDeltas[i] ?? 0;
    selfUs.set(key, (selfUs.get(key) ?? 0) + us);
    totalUs += us;
  });
}
const busyUs = totalUs - (selfUs.get("(idle)") ?? 0);
console.log(
  `${positionals.length} profiles, ${(totalUs / 1e6).toFixed(1)} s sampled, ${(busyUs / 1e6).toFixed(2)} s busy`,
);
console.log("| self % of busy | self ms | function |\n|---|---|---|");
for (const [key, us] of [...selfUs]
  .filter(([k]) => k !== "(idle)")
  .sort((a, b) => b[1] - a[1])
  .slice(0, Number(values.top))) {
  console.log(`| ${((100 * us) / busyUs).toFixed(1)} | ${(us / 1000).toFixed(0)} | \`${key}\` |`);
}
