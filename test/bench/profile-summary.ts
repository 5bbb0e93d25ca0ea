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

/** Markdown rows (self % of busy time, self ms, function) of the `top` functions across `files`. */
export function summarizeProfiles(files: readonly string[], top = 25): string[] {
  const selfUs = new Map<string, number>();
  let totalUs = 0;
  for (const file of files) {
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
  return [
    `${files.length} profiles, ${(totalUs / 1e6).toFixed(1)} s sampled, ${(busyUs / 1e6).toFixed(2)} s busy`,
    "",
    "| self % of busy | self ms | function |",
    "|---|---|---|",
    ...[...selfUs]
      .filter(([k]) => k !== "(idle)")
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([key, us]) => `| ${((100 * us) / busyUs).toFixed(1)} | ${(us / 1000).toFixed(0)} | \`${key}\` |`),
  ];
}

if (import.meta.main) {
  const { values, positionals } = parseArgs({
    options: { top: { type: "string", default: "25" } },
    allowPositionals: true,
  });
  console.log(summarizeProfiles(positionals, Number(values.top)).join("\n"));
}
