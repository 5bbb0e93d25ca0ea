// The interception modes the end-to-end suites run in: iptables (the default) and eBPF. A suite
// written once with describeModes runs once per mode; a mode this machine cannot run is skipped
// with its reason in the suite's name, never passed silently. NODEMESH_TEST_MODES=iptables (or
// ebpf) runs one.
import { execFileSync } from "node:child_process";
import { existsSync, statfsSync } from "node:fs";
import { describe } from "vitest";
import type { InterceptionMode } from "../../init-container/cli.ts";
import { BPF_FS } from "../../init-container/ebpf.ts";
import { cgroupsUnavailable } from "../world/cgroup.ts";

export const MODES: readonly InterceptionMode[] = ["iptables", "ebpf"];

/** Why `mode` cannot run on this machine, or undefined when it can. */
export function modeUnavailable(mode: InterceptionMode): string | undefined {
  if (process.getuid?.() !== 0) return "not root";
  const only = process.env.NODEMESH_TEST_MODES;
  if (only && !only.split(",").includes(mode)) return `NODEMESH_TEST_MODES=${only}`;
  if (mode === "iptables") return undefined;
  const cgroups = cgroupsUnavailable();
  if (cgroups) return cgroups;
  if (!existsSync("/sys/kernel/btf/vmlinux")) return "no kernel BTF (/sys/kernel/btf/vmlinux)";
  try {
    if (Number(statfsSync(BPF_FS).type) !== 0xcafe4a11) return `no BPF filesystem at ${BPF_FS}`;
  } catch {
    return `no BPF filesystem at ${BPF_FS}`;
  }
  let probe: { program_types?: Record<string, boolean> };
  try {
    probe = JSON.parse(execFileSync("bpftool", ["-j", "feature", "probe", "kernel"], { encoding: "utf8" }));
  } catch {
    return "bpftool is not installed (make setup)";
  }
  const types = ["cgroup_sock_addr", "sock_ops", "cgroup_sockopt"];
  const lacking = types.filter((t) => !probe.program_types?.[`have_${t}_prog_type`]);
  return lacking.length > 0 ? `the kernel lacks ${lacking.join(", ")} programs` : undefined;
}

/** `describe(name, …)` once per mode, named "name [mode]"; skipped with the reason where it cannot run. */
export function describeModes(name: string, body: (mode: InterceptionMode) => void): void {
  for (const mode of MODES) {
    const reason = modeUnavailable(mode);
    if (reason) describe.skip(`${name} [${mode}] (skipped: ${reason})`, () => body(mode));
    else describe(`${name} [${mode}]`, () => body(mode));
  }
}
