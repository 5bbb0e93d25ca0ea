// `nodemesh init --cgroup parent`: the pod's cgroup found from inside the pod. In Kubernetes each
// container has a cgroup of its own under the pod's, so the pod's is the parent of the init
// container's; the eBPF programs go there to cover every container of the pod.
//
// With the container in the node's cgroup namespace, /proc/self/cgroup names its cgroup's path
// in the hierarchy. In a cgroup namespace of its own (the default of containerd and CRI-O on
// cgroup v2) it says "/", and the container's /sys/fs/cgroup shows only its own cgroup: then
// the node's hierarchy, mounted into the container (the webhook mounts the node's /sys/fs/cgroup
// at /host/sys/fs/cgroup), is searched for the directory of the container's own cgroup, by its
// inode number (one hierarchy: the same inode in every mount of it).
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { INIT_ERROR_CODES, InitError } from "./errors.ts";

/** Bounds on the search: deeper than kubelet's layouts (kubepods/burstable/pod…/container). */
const MAX_DEPTH = 8;
const MAX_DIRECTORIES = 100_000;

export interface ParentCgroupOptions {
  /** Where the node's cgroup v2 hierarchy is mounted here (--cgroup-root). */
  hierarchy: string;
  /** This process's cgroup path, as /proc/self/cgroup's "0::" line gives it. */
  ownPath?: string;
  /** A mount of this process's own cgroup (in its own cgroup namespace: /sys/fs/cgroup). */
  ownMount?: string;
}

/** The directory of the parent of this process's cgroup under `hierarchy`. */
export function parentCgroup(options: ParentCgroupOptions): string {
  const { hierarchy } = options;
  const ownPath = options.ownPath ?? ownCgroupPath();
  if (ownPath !== "/") {
    const parent = join(hierarchy, dirname(ownPath));
    if (!existsSync(parent)) {
      throw notFound(`${parent} (this process's cgroup ${ownPath} under --cgroup-root ${hierarchy}) does not exist`);
    }
    return parent;
  }
  const ownMount = options.ownMount ?? "/sys/fs/cgroup";
  const inode = statSync(ownMount).ino;
  const found = findDirectory(hierarchy, inode);
  if (!found) {
    throw notFound(
      `this process has a cgroup namespace of its own and its cgroup (inode ${inode} at ${ownMount}) is not under ` +
        `--cgroup-root ${hierarchy}: mount the node's /sys/fs/cgroup there`,
    );
  }
  if (found === hierarchy) throw notFound(`this process's cgroup is the root of ${hierarchy}: it has no parent`);
  return dirname(found);
}

function ownCgroupPath(): string {
  const line = readFileSync("/proc/self/cgroup", "utf8")
    .split("\n")
    .find((l) => l.startsWith("0::"));
  if (!line) throw notFound("this process is in no cgroup v2 hierarchy (no 0:: line in /proc/self/cgroup)");
  return line.slice(3);
}

/** Breadth first, bounded: the directory under `root` whose inode is `inode`. */
function findDirectory(root: string, inode: number): string | undefined {
  let level = [root];
  let seen = 0;
  for (let depth = 0; depth <= MAX_DEPTH && level.length > 0; depth++) {
    const next: string[] = [];
    for (const dir of level) {
      if (++seen > MAX_DIRECTORIES) return undefined;
      try {
        if (statSync(dir).ino === inode) return dir;
        for (const entry of readdirSync(dir, { withFileTypes: true })) {
          if (entry.isDirectory()) next.push(join(dir, entry.name));
        }
      } catch {} // a cgroup removed meanwhile
    }
    level = next;
  }
  return undefined;
}

function notFound(what: string): InitError {
  return new InitError(INIT_ERROR_CODES.INVALID_ARGUMENT, `--cgroup parent: ${what}`);
}
