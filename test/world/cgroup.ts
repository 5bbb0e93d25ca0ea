// Pod cgroups (v2) for the eBPF interception mode: `nodemesh init --mode ebpf --cgroup PATH`
// attaches its programs to the pod's cgroup, so the pod's processes must run in it.
//
// Every test cgroup lives under <cgroup v2 root>/nodemesh-test/ and is named after the pod's
// network namespace (nmt-<owner pid>-…), so the reaper can tell a dead run's cgroups from a live
// one's, as it does for namespaces. Removing one kills what runs inside, removes the eBPF programs
// pinned for it (detached and unpinned, the node's program with the last pod's) and the directory.
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { cgroup2Root, cgroupId, pinnedPodIds, uninstallEbpfById } from "../../init-container/ebpf.ts";
import { isAlive, ownerOf, WORLD_PREFIX } from "./netns.ts";

/** The directory, under the cgroup v2 root, of every test cgroup. */
export const TEST_CGROUP_DIR = "nodemesh-test";
/** How long a killed cgroup's processes get to leave it before rmdir gives up. */
const EMPTY_WAIT_MS = 5_000;

/** <cgroup v2 root>/nodemesh-test: the parent of every test cgroup. */
export function testCgroupRoot(): string {
  return join(cgroup2Root(), TEST_CGROUP_DIR);
}

/** Why pods cannot get cgroups here (no cgroup v2, not root), or undefined when they can. */
export function cgroupsUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return "not root";
  try {
    const root = cgroup2Root();
    if (!existsSync(join(root, "cgroup.procs"))) return `${root} is not a cgroup v2 hierarchy`;
  } catch (err) {
    return (err as Error).message;
  }
  return undefined;
}

/** Creates the cgroup named `name` (a world namespace name) and returns its path. */
export function createCgroup(name: string): string {
  const path = join(testCgroupRoot(), name);
  try {
    mkdirSync(path, { recursive: true });
  } catch (err) {
    // The parent was removed between mkdir -p's steps (removeCgroup of the last test cgroup).
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    mkdirSync(path, { recursive: true });
  }
  return path;
}

/**
 * The shell prefix that moves a command into `cgroup` before it runs: `sh -c '…' sh CGROUP cmd
 * args…` writes its own pid into cgroup.procs, then execs the command (same pid, so the cgroup,
 * the parent-death signal and the exit status are the command's).
 */
export function enterCgroupArgs(cgroup: string): string[] {
  return ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgroup];
}

/**
 * Runs `fn` with this process inside `cgroup`, then moves it back: a socket belongs to the cgroup
 * of the process that created it, so a socket created in `fn` is the pod's (test clients that
 * create their sockets in-process, e.g. test/e2e/netns-client.ts). Synchronous, so nothing else of
 * this process runs meanwhile.
 */
export function withCgroup<T>(cgroup: string, fn: () => T): T {
  const home = ownCgroup();
  writeFileSync(join(cgroup, "cgroup.procs"), String(process.pid));
  try {
    return fn();
  } finally {
    writeFileSync(join(home, "cgroup.procs"), String(process.pid));
  }
}

let homeCgroup: string | undefined;
/** This process's cgroup v2 directory when it first asked (its home, to return to). */
function ownCgroup(): string {
  if (homeCgroup === undefined) {
    const line = readFileSync("/proc/self/cgroup", "utf8")
      .split("\n")
      .find((l) => l.startsWith("0::"));
    if (!line) throw new Error("this process is in no cgroup v2");
    homeCgroup = join(cgroup2Root(), line.slice(3));
  }
  return homeCgroup;
}

/** Kills what runs in the cgroup, removes its eBPF programs and pins, and removes it. */
export async function removeCgroup(path: string): Promise<void> {
  if (!existsSync(path)) return;
  const id = cgroupId(path);
  await killAll(path);
  await uninstallEbpfById(id);
  rmdirSync(path);
  removeEmptyTestRoot();
}

/** The last test cgroup out removes nodemesh-test/ too. */
function removeEmptyTestRoot(): void {
  try {
    rmdirSync(testCgroupRoot());
  } catch {}
}

/** removeCgroup for exit paths: kills and removes the directory; the pins go with the next reap. */
export function removeCgroupSync(path: string): void {
  try {
    killNow(path);
    rmdirSync(path);
  } catch {}
  removeEmptyTestRoot();
}

/** Test cgroups whose owner (the pid in the name) is dead. */
export function orphanCgroups(): string[] {
  return testCgroupNames()
    .filter((name) => {
      const owner = ownerOf(name);
      return owner === undefined || !isAlive(owner);
    })
    .map((name) => join(testCgroupRoot(), name));
}

/**
 * Removes dead runs' cgroups and the eBPF pins of pods whose cgroup no longer exists (a cgroup
 * removed by an exit hook, which cannot run bpftool). Returns what it removed.
 */
export async function reapCgroups(): Promise<string[]> {
  const reaped: string[] = [];
  for (const path of orphanCgroups()) {
    await removeCgroup(path);
    reaped.push(path);
  }
  for (const id of stalePodPins()) {
    await uninstallEbpfById(id);
    reaped.push(`eBPF pins of cgroup ${id}`);
  }
  return reaped;
}

/** Pod ids pinned under /sys/fs/bpf/nodemesh/pods whose cgroup no longer exists. */
export function stalePodPins(): number[] {
  const pinned = pinnedPodIds();
  if (pinned.length === 0) return [];
  const live = new Set(liveTestCgroupIds());
  return pinned.filter((id) => !live.has(id) && !cgroupExists(id));
}

function liveTestCgroupIds(): number[] {
  return testCgroupNames().map((name) => statSync(join(testCgroupRoot(), name)).ino);
}

/** The world cgroups under the test root (not the root's own cgroup.* files). */
function testCgroupNames(): string[] {
  try {
    return readdirSync(testCgroupRoot(), { withFileTypes: true })
      .filter((e) => e.isDirectory() && e.name.startsWith(WORLD_PREFIX))
      .map((e) => e.name);
  } catch {
    return [];
  }
}

/** Whether any cgroup directory has this id (inode), looking under the whole v2 hierarchy. */
function cgroupExists(id: number): boolean {
  const walk = (dir: string, depth: number): boolean => {
    if (statSync(dir).ino === id) return true;
    if (depth > 8) return false;
    let entries: string[];
    try {
      entries = readdirSync(dir, { withFileTypes: true })
        .filter((e) => e.isDirectory())
        .map((e) => e.name);
    } catch {
      return false;
    }
    return entries.some((name) => {
      try {
        return walk(join(dir, name), depth + 1);
      } catch {
        return false;
      }
    });
  };
  return walk(cgroup2Root(), 0);
}

function pidsIn(path: string): number[] {
  try {
    return readFileSync(join(path, "cgroup.procs"), "utf8").split("\n").filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

function killNow(path: string): void {
  if (existsSync(join(path, "cgroup.kill"))) {
    writeFileSync(join(path, "cgroup.kill"), "1");
    return;
  }
  for (const pid of pidsIn(path)) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {}
  }
}

async function killAll(path: string): Promise<void> {
  const deadline = Date.now() + EMPTY_WAIT_MS;
  while (pidsIn(path).length > 0) {
    killNow(path);
    if (Date.now() > deadline) throw new Error(`cgroup ${path} still has processes ${pidsIn(path).join(", ")}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
