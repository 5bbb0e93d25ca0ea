// Low-level pieces shared by the world and the reaper: running a command with a timeout, naming
// namespaces so that their owner can be told, and killing what lives inside them.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readdirSync, readlinkSync, statSync } from "node:fs";

/** Where `ip netns add` mounts named namespaces. */
export const NETNS_DIR = "/run/netns";
/** Every namespace a test world creates starts with this prefix. */
export const WORLD_PREFIX = "nmt-";
const COMMAND_TIMEOUT_MS = 10_000;
/** Output kept per stream of a command; a runaway command must not exhaust the test process. */
const MAX_OUTPUT_CHARS = 4 << 20;

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  input?: string;
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
  /** Called with the child as soon as it exists (the world uses it to track the process). */
  onSpawn?: (child: ChildProcess) => void;
}

/** Runs a command to completion. Resolves whatever its exit code; rejects on timeout (after killing it). */
export function run(command: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  const timeoutMs = options.timeoutMs ?? COMMAND_TIMEOUT_MS;
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env: options.env, stdio: "pipe" });
    options.onSpawn?.(child);
    const out = { stdout: "", stderr: "" };
    for (const stream of ["stdout", "stderr"] as const) {
      child[stream].setEncoding("utf8").on("data", (chunk: string) => {
        if (out[stream].length < MAX_OUTPUT_CHARS) out[stream] += chunk;
      });
    }
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${command} ${args.join(" ")}: timed out after ${timeoutMs} ms\n${out.stdout}${out.stderr}`));
    }, timeoutMs);
    child.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, ...out });
    });
    child.stdin.on("error", () => {}); // EPIPE when the command exits without reading its input
    child.stdin.end(options.input ?? "");
  });
}

/**
 * Runs `ip -batch -` (inside `netns` when given): one process for many changes, which is what makes
 * building a world fast. With `force`, ip carries on past failing lines (used for deletion).
 */
export async function ipBatch(lines: readonly string[], opts: { netns?: string; force?: boolean } = {}): Promise<void> {
  if (lines.length === 0) return;
  const args = [...(opts.netns ? ["-n", opts.netns] : []), ...(opts.force ? ["-force"] : []), "-batch", "-"];
  const { code, stderr } = await run("ip", args, { input: `${lines.join("\n")}\n` });
  if (code !== 0) throw new Error(`ip ${args.join(" ")} failed (${code}): ${stderr.trim()}\n  ${lines.join("\n  ")}`);
}

/** How long links may take to carry traffic after they were set up (a loaded kernel is slow). */
const LINK_READY_TIMEOUT_MS = 10_000;
const LINK_POLL_MS = 20;

/**
 * Waits until the named links in `netns` carry traffic: each is operationally UP and, if it is a
 * bridge port, forwarding. `ip link set up` returns before that: the kernel applies a veth's carrier
 * (its queue, the bridge port's state) later, in its link-watch work, which waits for the rtnl lock
 * that another world's teardown can hold for a second or more. Until then frames are dropped: an
 * underlay port still "disabled" lost a node's first ARP request, and the first connection to
 * another node waited a second for the retransmission (a 503 after the agent's 1 s connect budget).
 */
export async function waitForLinks(
  netns: string,
  names: readonly string[],
  timeoutMs = LINK_READY_TIMEOUT_MS,
): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const { code, stdout, stderr } = await run("ip", ["-n", netns, "-j", "-d", "link", "show"]);
    if (code !== 0) throw new Error(`ip -n ${netns} link show failed (${code}): ${stderr.trim()}`);
    const links = JSON.parse(stdout) as LinkJson[];
    const notReady = names.filter((name) => {
      const link = links.find((l) => l.ifname === name);
      const port = link?.linkinfo?.info_slave_kind === "bridge" ? link.linkinfo.info_slave_data?.state : "forwarding";
      return link?.operstate !== "UP" || port !== "forwarding";
    });
    if (notReady.length === 0) return;
    if (performance.now() > deadline) {
      throw new Error(`links ${notReady.join(", ")} in ${netns} did not come up within ${timeoutMs} ms`);
    }
    await new Promise((resolve) => setTimeout(resolve, LINK_POLL_MS));
  }
}

interface LinkJson {
  ifname: string;
  operstate: string;
  linkinfo?: { info_slave_kind?: string; info_slave_data?: { state?: string } };
}

/** `owner` is a pid; base36 keeps names short. The random part separates worlds of one process. */
export function newWorldPrefix(owner = process.pid): string {
  return `${WORLD_PREFIX}${owner.toString(36)}-${randomBytes(2).toString("hex")}-`;
}

/** The owner pid encoded in a world namespace name, or undefined when the name is not ours. */
export function ownerOf(name: string): number | undefined {
  const match = /^nmt-([0-9a-z]+)-[0-9a-f]{4}-/.exec(name);
  return match ? Number.parseInt(match[1], 36) : undefined;
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM"; // exists, but not ours to signal
  }
}

/** Names of all world namespaces on the machine, from every run. */
export function worldNamespaces(): string[] {
  try {
    return readdirSync(NETNS_DIR).filter((name) => name.startsWith(WORLD_PREFIX));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw err;
  }
}

/**
 * Pids of the processes inside any of the named namespaces. This is what `ip netns pids` does, but
 * in one pass over /proc for all namespaces, and synchronously so the exit hook can use it.
 */
export function pidsInside(names: Iterable<string>): number[] {
  const inodes = new Set<number>();
  for (const name of names) {
    try {
      inodes.add(statSync(`${NETNS_DIR}/${name}`).ino);
    } catch {} // already gone
  }
  if (inodes.size === 0) return [];
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const inode = /\[(\d+)\]/.exec(readlinkSync(`/proc/${entry}/ns/net`))?.[1];
      if (inode !== undefined && inodes.has(Number(inode))) pids.push(Number(entry));
    } catch {} // exited meanwhile, or a zombie (which no longer holds its namespace)
  }
  return pids;
}

/** SIGKILLs everything inside the namespaces. A few rounds, in case something forks while we kill. */
export function killInside(names: readonly string[]): void {
  for (let round = 0; round < 3; round++) {
    const pids = pidsInside(names);
    if (pids.length === 0) return;
    for (const pid of pids) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {}
    }
  }
}

/** Kills what is inside, then deletes the namespaces (veths inside them go with them). */
export async function deleteNamespaces(names: readonly string[]): Promise<void> {
  killInside(names);
  await ipBatch(
    names.map((name) => `netns del ${name}`),
    { force: true },
  ).catch(() => {}); // some may be gone already; what remains is checked by the caller
  const existing = new Set(worldNamespaces());
  const left = names.filter((name) => existing.has(name));
  if (left.length > 0) throw new Error(`could not delete network namespaces: ${left.join(", ")}`);
}

/** The same, synchronously, for the process exit hook. */
export function deleteNamespacesSync(names: readonly string[]): void {
  if (names.length === 0) return;
  killInside(names);
  spawnSync("ip", ["-force", "-batch", "-"], {
    input: names.map((name) => `netns del ${name}\n`).join(""),
    timeout: COMMAND_TIMEOUT_MS,
    stdio: ["pipe", "ignore", "ignore"],
  });
}
