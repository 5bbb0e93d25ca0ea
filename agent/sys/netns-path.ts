// Finding a path that names a pod's network namespace, so the agent can reopen it after a
// restart. Container runtimes (containerd, CRI-O) and `ip netns` pin pod namespaces under
// /var/run/netns; /proc/<pid>/ns/net of the enrolling process is the fallback, valid only while
// some process of the pod lives.

import { readdirSync, statSync } from "node:fs";

const PIN_DIRS = ["/run/netns", "/var/run/netns"];

export interface NetnsIdentity {
  path: string;
  inode: number;
}

export function netnsInode(path: string): number {
  return statSync(path).ino;
}

/** The pinned path of the namespace the process `pid` is in, else its /proc path. */
export function identifyNetnsOfPid(pid: number): NetnsIdentity {
  const procPath = `/proc/${pid}/ns/net`;
  const inode = netnsInode(procPath);
  for (const dir of PIN_DIRS) {
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      continue;
    }
    for (const name of names) {
      try {
        if (statSync(`${dir}/${name}`).ino === inode) return { path: `${dir}/${name}`, inode };
      } catch {}
    }
  }
  return { path: procPath, inode };
}

export function ownNetnsInode(): number {
  return netnsInode("/proc/self/ns/net");
}
