// The enrolled pods of this node: the source of truth for which listeners the workers hold.
// Persisted (atomically) so that an agent restart brings every pod's listeners back without the
// pod's init container running again.

import { existsSync, mkdirSync, readFileSync } from "node:fs";
import type { Logger } from "pino";
import { type EnrolledPod, notAPodAddress, podKey } from "../../api/enrollment.ts";
import { writeFileAtomic } from "../sys/files.ts";
import { interfaceAddresses, Netns } from "../sys/linux.ts";
import { netnsInode } from "../sys/netns-path.ts";
import type { WorkerPool } from "./workers.ts";

/** An enrolled pod with the inode of its network namespace: what names the namespace it owns. */
export interface StoredPod extends EnrolledPod {
  netnsInode: number;
}

/**
 * Whether the pod's namespace path still opens the namespace it was enrolled with. A removed pin
 * (the runtime tore the pod down) or a dead /proc/<pid> path means the pod is gone, even though
 * the agent's own fd keeps the namespace itself alive (and so its inode unique) until removal.
 */
export function namespaceStillThere(pod: StoredPod): boolean {
  try {
    return netnsInode(pod.netnsPath) === pod.netnsInode;
  } catch {
    return false;
  }
}

export class PodRegistry {
  private readonly pods = new Map<string, StoredPod>();
  private readonly file: string;
  private readonly workers: WorkerPool;
  private readonly log: Logger;
  private queue: Promise<unknown> = Promise.resolve();
  /** Called with the pod's "namespace/name" after every enrollment or removal (the controller link reports it). */
  onChange: (key: string) => void = () => {};

  constructor(stateDir: string, workers: WorkerPool, log: Logger) {
    mkdirSync(stateDir, { recursive: true });
    this.file = `${stateDir}/pods.json`;
    this.workers = workers;
    this.log = log;
  }

  list(): EnrolledPod[] {
    return [...this.pods.values()].map(({ netnsInode: _, ...pod }) => pod);
  }

  get(namespace: string, name: string): StoredPod | undefined {
    return this.pods.get(podKey({ namespace, name }));
  }

  /** The pod of that "namespace/name". */
  byKey(key: string): StoredPod | undefined {
    return this.pods.get(key);
  }

  /** The pod enrolled for the network namespace with this inode: at most one (enroll and restore see to it). */
  inNetns(inode: number): StoredPod | undefined {
    for (const pod of this.pods.values()) if (pod.netnsInode === inode) return pod;
    return undefined;
  }

  get size(): number {
    return this.pods.size;
  }

  /** Enrollments and removals run one at a time, so the persisted file follows their order. */
  private serial<T>(work: () => Promise<T>): Promise<T> {
    const next = this.queue.then(work, work);
    this.queue = next.catch(() => {});
    return next;
  }

  /**
   * Enrolls `pod` for the network namespace with inode `netnsInode`, or re-enrolls it there. One
   * pod per namespace; a pod enrolled from another namespace that still exists is replaced only
   * when `replaceLive` (a privileged caller): otherwise anyone could take over a pod by its name.
   */
  enroll(pod: EnrolledPod, netnsInode: number, { replaceLive = false } = {}): Promise<void> {
    return this.serial(async () => {
      const inNetns = this.inNetns(netnsInode);
      if (inNetns && podKey(inNetns) !== podKey(pod)) {
        throw new EnrollmentConflict(`this network namespace is already enrolled as pod ${podKey(inNetns)}`);
      }
      const existing = this.pods.get(podKey(pod));
      if (existing && existing.netnsInode !== netnsInode && !replaceLive && namespaceStillThere(existing)) {
        throw new EnrollmentConflict(`pod ${podKey(pod)} is enrolled from another network namespace that still exists`);
      }
      await this.workers.addPod(pod);
      this.pods.set(podKey(pod), { ...pod, netnsInode });
      this.save();
      this.log.info({ pod: podKey(pod), ip: pod.ip, netns: pod.netnsPath }, "pod enrolled");
      this.onChange(podKey(pod));
    });
  }

  /** Returns false when the pod was not enrolled. */
  remove(namespace: string, name: string): Promise<boolean> {
    return this.serial(async () => {
      const k = podKey({ namespace, name });
      if (!this.pods.has(k)) return false;
      await this.workers.removePod(k);
      this.pods.delete(k);
      this.save();
      this.log.info({ pod: k }, "pod removed");
      this.onChange(k);
      return true;
    });
  }

  /** Re-opens the listeners of every pod enrolled before a restart whose namespace still exists. */
  async restore(): Promise<void> {
    if (!existsSync(this.file)) return;
    let stored: StoredPod[];
    try {
      stored = JSON.parse(readFileSync(this.file, "utf8")).pods;
    } catch (err) {
      // Never guess: an unreadable state file is kept for inspection and the agent starts empty.
      this.log.error({ file: this.file, err: (err as Error).message }, "pod state unreadable; starting with no pods");
      return;
    }
    for (const pod of stored) {
      if (!namespaceStillThere(pod)) {
        this.log.warn({ pod: podKey(pod), netns: pod.netnsPath }, "pod namespace is gone; dropping the pod");
        continue;
      }
      // A state file written before the enrollment checks may hold what they now refuse.
      const problem = this.restoreProblem(pod);
      if (problem) {
        this.log.warn(
          { pod: podKey(pod), ip: pod.ip, netns: pod.netnsPath, problem },
          "dropping a pod the agent would refuse now",
        );
        continue;
      }
      try {
        await this.workers.addPod(pod);
        this.pods.set(podKey(pod), pod);
      } catch (err) {
        this.log.error({ pod: podKey(pod), err: (err as Error).message }, "could not restore pod listeners");
      }
    }
    this.save();
    this.log.info({ pods: this.pods.size }, "restored enrolled pods");
  }

  private restoreProblem(pod: StoredPod): string | undefined {
    const sameNetns = this.inNetns(pod.netnsInode);
    if (sameNetns) return `its namespace is already enrolled as ${podKey(sameNetns)}`;
    try {
      return podAddressProblem(pod.netnsPath, pod.ip);
    } catch (err) {
      return (err as Error).message;
    }
  }

  private save(): void {
    writeFileAtomic(this.file, `${JSON.stringify({ pods: [...this.pods.values()] }, null, 2)}\n`);
  }
}

/**
 * Why `ip` cannot be the address of the pod whose network namespace is at `netnsPath`, or
 * undefined: it must be a pod address (not loopback, link-local, …) configured on a non-loopback
 * interface there. Read from inside the namespace, so a pod cannot claim another pod's address.
 */
export function podAddressProblem(netns: Netns | string, ip: string): string | undefined {
  const special = notAPodAddress(ip);
  if (special) return `${ip} is ${special}, not a pod address`;
  const ns = typeof netns === "string" ? Netns.open(netns) : netns;
  let addresses: string[];
  try {
    addresses = interfaceAddresses(ns)
      .filter((a) => !a.loopback)
      .map((a) => a.address);
  } finally {
    if (ns !== netns) ns.close();
  }
  if (addresses.includes(ip)) return undefined;
  const has = addresses.length ? `its addresses: ${addresses.join(", ")}` : "it has no address";
  return `${ip} is not an address of the pod's network namespace (${has})`;
}

/** The enrollment contradicts one already in force; nothing was changed. */
export class EnrollmentConflict extends Error {}
