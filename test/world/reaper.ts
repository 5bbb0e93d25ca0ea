// Deletes the network namespaces that dead runs left behind (a test process killed outright has
// no chance to clean up). A world namespace's name carries the pid of the process that made it, so
// the namespaces of live processes — a concurrent test run, a running demo — are never touched.
// A dead owner's pid can be reused by an unrelated process; that only delays reaping until it exits.
// Pod cgroups (cgroup.ts) of dead runs, and the eBPF pins of cgroups that are gone, go after them.
import { reapCgroups } from "./cgroup.ts";
import { deleteNamespaces, isAlive, ownerOf, worldNamespaces } from "./netns.ts";

/** World namespaces whose owner is dead, or whose name carries no owner (left by older code). */
export function orphans(): string[] {
  return worldNamespaces().filter((name) => {
    const owner = ownerOf(name);
    return owner === undefined || !isAlive(owner);
  });
}

/** Kills the processes inside every orphan, deletes it, and returns the names reaped (cgroups too). */
export async function reapOrphans(): Promise<string[]> {
  const names = orphans();
  if (names.length > 0) await deleteNamespaces(names);
  return [...names, ...(await reapCgroups())];
}
