// Runs once around the whole test suite. At setup it removes what an earlier, killed run left
// behind; at teardown it fails the run if this run left anything: namespaces of a dead owner (all
// test workers have exited by then), processes of the mesh, or nodemesh rules in the root namespace.
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { PODS_PIN_DIR } from "../../init-container/ebpf.ts";
import { orphanCgroups, stalePodPins } from "./cgroup.ts";
import { orphans, reapOrphans } from "./reaper.ts";

const REPO = new URL("../..", import.meta.url).pathname;
/** Programs the tests start; any still running at the end was leaked by a test. */
const SUITE_PROGRAMS = ["bin/nodemesh.ts", "test/workload/workload.ts", "test/demo.ts"].map((p) => `${REPO}${p}`);

function leakedProcesses(): string[] {
  const found: string[] = [];
  for (const pid of readdirSync("/proc").filter((name) => /^\d+$/.test(name))) {
    let cmdline: string;
    try {
      cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ");
    } catch {
      continue; // gone meanwhile
    }
    if (SUITE_PROGRAMS.some((p) => cmdline.includes(p))) found.push(`${pid}: ${cmdline.trim()}`);
  }
  return found;
}

function rootNamespaceRules(): string[] {
  try {
    return execFileSync("iptables-save", { encoding: "utf8" })
      .split("\n")
      .filter((line) => line.includes("NODEMESH"));
  } catch {
    return []; // no iptables on this machine: nothing can have been left there
  }
}

export async function setup(): Promise<void> {
  const reaped = await reapOrphans();
  if (reaped.length > 0) console.warn(`reaped network namespaces left by dead runs: ${reaped.join(", ")}`);
}

export async function teardown(): Promise<void> {
  const problems: string[] = [];
  const left = orphans();
  const leftCgroups = orphanCgroups();
  // Pods enrolled with --mode ebpf must have had their programs removed with their cgroups.
  const pins = stalePodPins();
  if (left.length > 0 || leftCgroups.length > 0 || pins.length > 0) {
    await reapOrphans();
    if (left.length > 0) problems.push(`network namespaces: ${left.join(", ")}`);
    if (leftCgroups.length > 0) problems.push(`cgroups: ${leftCgroups.join(", ")}`);
    if (pins.length > 0) problems.push(`eBPF pins: ${pins.map((id) => `${PODS_PIN_DIR}/${id}`).join(", ")}`);
  }
  const procs = leakedProcesses();
  if (procs.length > 0) problems.push(`processes:\n  ${procs.join("\n  ")}`);
  const rules = rootNamespaceRules();
  if (rules.length > 0) problems.push(`iptables rules in the root namespace:\n  ${rules.join("\n  ")}`);
  if (problems.length > 0) {
    // Vitest 4 only logs an error thrown here and still exits 0: set the exit code ourselves.
    process.exitCode = 1;
    throw new Error(`the suite left behind ${problems.join("; ")}`);
  }
}
