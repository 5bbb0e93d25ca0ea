// A node's latest probes of the other nodes (RTT, loss), held as numbers rather than as the
// report's objects. Every agent probes each node its Config lists, so a fleet reports nodes²
// probes per interval: a million objects at 1000 nodes, each replaced one interval later. Kept as
// decoded, they lived just long enough to be promoted and then died in the old generation: the
// controller's RSS under a 1000-node fleet's steady reports was 510 MB on average and 630–720 at
// most; held as numbers, 325 and 340 (test/bench/control-plane.ts --steady-s; an unchanged pod
// list not taken again is part of it, agent-registry.ts).

import type { PeerProbe, PeerSummary } from "../../api/agent-service.ts";

export class PeerProbes {
  static readonly NONE = new PeerProbes([], new Float64Array(0), new Float64Array(0), undefined);

  private readonly names: readonly string[];
  private readonly rttMs: Float64Array;
  private readonly lossRatio: Float64Array;
  /** By probe index; a round usually has none, or the same one for every peer. */
  private readonly errors: ReadonlyMap<number, string> | undefined;
  /** Worked out at the first read: the rows are immutable, and a dashboard reads every 2 s. */
  private summarized: PeerSummary | undefined;
  /** Row of each peer, built at the first partial report and handed on while the names stay. */
  private nameRows: Map<string, number> | undefined;

  private constructor(
    names: readonly string[],
    rttMs: Float64Array,
    lossRatio: Float64Array,
    errors: ReadonlyMap<number, string> | undefined,
  ) {
    this.names = names;
    this.rttMs = rttMs;
    this.lossRatio = lossRatio;
    this.errors = errors;
  }

  /**
   * `intern`: a node's name as the controller already holds it, so the report's copy dies young;
   * asked only for names not at the same place in `previous` (an agent probes in its Config's
   * order, so rounds line up). An error repeated across the round is held once.
   */
  static from(
    probes: readonly PeerProbe[],
    intern: (nodeName: string) => string,
    previous: PeerProbes = PeerProbes.NONE,
  ): PeerProbes {
    const rttMs = new Float64Array(probes.length);
    const lossRatio = new Float64Array(probes.length);
    const errors = new Map<number, string>();
    let lastError = "";
    const names = probes.map((p, i) => {
      rttMs[i] = p.rttMs;
      lossRatio[i] = p.lossRatio;
      if (p.error) {
        if (p.error !== lastError) lastError = p.error;
        errors.set(i, lastError);
      }
      const before = previous.names[i];
      return before === p.nodeName ? before : intern(p.nodeName);
    });
    return new PeerProbes(names, rttMs, lossRatio, errors.size > 0 ? errors : undefined);
  }

  /**
   * These probes with `changed` taken in (a report with peersChangedOnly): each changed peer's row
   * replaced, one not held appended; every other peer keeps its probe.
   */
  updated(changed: readonly PeerProbe[], intern: (nodeName: string) => string): PeerProbes {
    if (changed.length === 0) return this;
    let rows = this.rowOfName();
    const added: string[] = [];
    for (const p of changed) {
      if (rows.has(p.nodeName)) continue;
      if (added.length === 0) rows = new Map(rows);
      rows.set(p.nodeName, this.names.length + added.length);
      added.push(intern(p.nodeName));
    }
    const names = added.length > 0 ? [...this.names, ...added] : this.names;
    const rttMs = new Float64Array(names.length);
    const lossRatio = new Float64Array(names.length);
    rttMs.set(this.rttMs);
    lossRatio.set(this.lossRatio);
    const errors = new Map(this.errors);
    for (const p of changed) {
      const i = rows.get(p.nodeName)!;
      rttMs[i] = p.rttMs;
      lossRatio[i] = p.lossRatio;
      if (p.error) errors.set(i, p.error);
      else errors.delete(i);
    }
    const next = new PeerProbes(names, rttMs, lossRatio, errors.size > 0 ? errors : undefined);
    next.nameRows = rows; // shared while the names stay: the next report needs no new map
    return next;
  }

  private rowOfName(): Map<string, number> {
    this.nameRows ??= new Map(this.names.map((name, i) => [name, i]));
    return this.nameRows;
  }

  summary(): PeerSummary {
    this.summarized ??= this.summarize();
    return this.summarized;
  }

  private summarize(): PeerSummary {
    const answered: number[] = [];
    let unreachable = 0;
    let lossy = 0;
    let slowest = -1;
    for (let i = 0; i < this.names.length; i++) {
      const loss = this.lossRatio[i]!;
      if (this.errors?.has(i) || loss >= 1) {
        unreachable++;
        continue;
      }
      if (loss > 0) lossy++;
      answered.push(this.rttMs[i]!);
      if (slowest < 0 || this.rttMs[i]! > this.rttMs[slowest]!) slowest = i;
    }
    answered.sort((a, b) => a - b);
    return {
      probed: this.names.length,
      unreachable,
      lossy,
      rttMedianMs: answered.length > 0 ? answered[(answered.length - 1) >> 1]! : null,
      rttMaxMs: slowest >= 0 ? this.rttMs[slowest]! : null,
      slowestPeer: slowest >= 0 ? this.names[slowest]! : null,
    };
  }

  /** As the agent reported them. */
  list(): PeerProbe[] {
    return this.names.map((nodeName, i) => ({
      nodeName,
      rttMs: this.rttMs[i]!,
      lossRatio: this.lossRatio[i]!,
      error: this.errors?.get(i) ?? "",
    }));
  }
}
