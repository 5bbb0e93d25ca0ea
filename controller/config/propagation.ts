// Propagation bookkeeping: which table version first carried each resource's current generation,
// which agents have ACKed a version at least that new, and when. It also turns store writes into
// "write → last connected agent's ACK" durations. Pure state: the caller passes the time in.

import type { PropagationStatus } from "../../api/resources.ts";
import type { ConfigTable } from "./service-table.ts";
import { compareVersions, isAtLeast } from "./version.ts";

interface VersionRecord {
  readonly version: string;
  /** Store writes (ms timestamps) this version is the first to carry; measured once all agents ACK it. */
  writes: number[];
  /**
   * While there are writes: the connected agents that have not ACKed this version or a newer one.
   * Kept as a set so that an ACK costs O(1) per pending version rather than a pass over every agent.
   */
  readonly waiting: Set<string>;
  /** When each agent first ACKed this version or a newer one. */
  readonly appliedAt: Map<string, number>;
}

interface ResourceRecord {
  generation: number;
  /** The first table version that carried this generation. */
  since: string;
}

export class PropagationTracker {
  private readonly resources = new Map<string, ResourceRecord>();
  /** Oldest first; only versions that a resource or a pending write still needs. */
  private versions: VersionRecord[] = [];
  /** Connected agents → the newest version each has ACKed. */
  private readonly agents = new Map<string, string | undefined>();
  /** Connected agents → the resources (keys) their newest ACK left out, and why. */
  private readonly rejections = new Map<string, ReadonlyMap<string, string>>();

  /** Call for every table built, before it is sent. `writes` are the store writes folded into it. */
  recordTable(table: ConfigTable, writes: readonly number[]): void {
    const seen = new Set<string>();
    let record: VersionRecord | undefined;
    const recordForThisVersion = () => {
      record ??= { version: table.version, writes: [], waiting: new Set(), appliedAt: new Map() };
      return record;
    };
    for (const { resource } of [...table.services.values(), ...table.traffic.values()]) {
      seen.add(resource.key);
      const known = this.resources.get(resource.key);
      if (known?.generation === resource.generation) continue;
      this.resources.set(resource.key, { generation: resource.generation, since: table.version });
      recordForThisVersion();
    }
    for (const key of this.resources.keys()) if (!seen.has(key)) this.resources.delete(key);
    // A write seen while no agent is connected reaches nobody: there is nothing to measure.
    if (writes.length > 0 && this.agents.size > 0) {
      const r = recordForThisVersion();
      r.writes.push(...writes);
      for (const [node, acked] of this.agents) if (!isAtLeast(acked, r.version)) r.waiting.add(node);
    }
    if (record) this.versions.push(record);
    this.prune();
  }

  agentConnected(node: string): void {
    this.agents.set(node, undefined);
    for (const record of this.versions) if (record.writes.length > 0) record.waiting.add(node);
  }

  /** Returns the durations (seconds) of the writes this disconnection leaves fully propagated. */
  agentDisconnected(node: string, now: number): number[] {
    this.agents.delete(node);
    this.rejections.delete(node);
    for (const record of this.versions) record.waiting.delete(node);
    return this.completedWrites(now);
  }

  /**
   * Returns the durations (seconds) of the writes that this ACK made fully propagated. `rejected`:
   * the resources (keys) the agent left out of this version, and why. A write counts as propagated
   * to an agent that rejected it: it reached the agent, which said no (shown in the status).
   */
  agentAcked(node: string, version: string, now: number, rejected: ReadonlyMap<string, string> = new Map()): number[] {
    const previous = this.agents.get(node);
    if (!this.agents.has(node) || isAtLeast(previous, version)) return [];
    this.agents.set(node, version);
    if (rejected.size > 0) this.rejections.set(node, rejected);
    else this.rejections.delete(node);
    // Newest first: stop at the versions this agent had already ACKed.
    for (let i = this.versions.length - 1; i >= 0; i--) {
      const record = this.versions[i];
      if (isAtLeast(previous, record.version)) break;
      if (compareVersions(record.version, version) > 0) continue;
      if (!record.appliedAt.has(node)) record.appliedAt.set(node, now);
      record.waiting.delete(node);
    }
    return this.completedWrites(now);
  }

  /** N of M for a resource's current generation; undefined when no table carries the resource. */
  status(resourceKey: string): PropagationStatus | undefined {
    const resource = this.resources.get(resourceKey);
    if (!resource) return undefined;
    const record = this.versions.find((v) => v.version === resource.since);
    let applied = 0;
    let last: number | undefined;
    const rejections: { node: string; reason: string }[] = [];
    for (const [node, acked] of this.agents) {
      if (!isAtLeast(acked, resource.since)) continue;
      const reason = this.rejections.get(node)?.get(resourceKey);
      if (reason !== undefined) {
        rejections.push({ node, reason });
        continue;
      }
      applied++;
      const at = record?.appliedAt.get(node);
      if (at !== undefined && (last === undefined || at > last)) last = at;
    }
    return {
      observedGeneration: resource.generation,
      agentsApplied: applied,
      agentsTotal: this.agents.size,
      ...(rejections.length > 0 ? { agentsRejected: rejections.length, rejections } : {}),
      ...(last !== undefined ? { lastAppliedTime: new Date(last).toISOString() } : {}),
    };
  }

  private completedWrites(now: number): number[] {
    const durations: number[] = [];
    for (const record of this.versions) {
      if (record.writes.length === 0) continue;
      if (this.agents.size > 0) {
        if (record.waiting.size > 0) continue;
        for (const writtenAt of record.writes) durations.push((now - writtenAt) / 1000);
      } // else everyone left before applying it: not a propagation to measure
      record.writes = [];
      record.waiting.clear();
    }
    if (durations.length > 0) this.prune();
    return durations;
  }

  private prune(): void {
    const needed = new Set([...this.resources.values()].map((r) => r.since));
    this.versions = this.versions.filter((v) => v.writes.length > 0 || needed.has(v.version));
  }
}
