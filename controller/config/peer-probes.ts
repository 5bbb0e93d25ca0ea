// A node's latest probes of the other nodes (RTT, loss), held as numbers rather than as the
// report's objects. Every agent probes each node its Config lists, so a fleet reports nodes²
// probes per interval: a million objects at 1000 nodes, each replaced one interval later. Kept as
// decoded, they lived just long enough to be promoted and then died in the old generation: the
// controller's RSS under a 1000-node fleet's steady reports was 510 MB on average and 630–720 at
// most; held as numbers, 325 and 340 (test/bench/control-plane.ts --steady-s; an unchanged pod
// list not taken again is part of it, agent-registry.ts). A stream's later reports carry only the
// probes taken since the previous one (Report.peersChangedOnly), written into these rows in place.

import type { PeerProbe, PeerSummary } from "../../api/agent-service.ts";

export class PeerProbes {
  static readonly NONE = new PeerProbes([], new Float64Array(0), new Float64Array(0), undefined);

  private readonly names: readonly string[];
  private readonly rttMs: Float64Array;
  private readonly lossRatio: Float64Array;
  /** By probe index; a round usually has none, or the same one for every peer. */
  private errors: Map<number, string> | undefined;
  /** Worked out at the first read after a change: a dashboard reads every 2 s, reports come every 5. */
  private summarized: PeerSummary | undefined;
  /** Row of each peer, built at the first partial report. */
  private nameRows: Map<string, number> | undefined;

  private constructor(
    names: readonly string[],
    rttMs: Float64Array,
    lossRatio: Float64Array,
    errors: Map<number, string> | undefined,
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
   * Takes in `changed` (a report with peersChangedOnly): each changed peer's row is written in
   * place, so a 1000-node fleet's reports allocate nothing here; a peer not held (a node that
   * joined) grows the rows into new ones. Returns what holds the rows now: these, or the grown.
   */
  merged(changed: readonly PeerProbe[], intern: (nodeName: string) => string): PeerProbes {
    if (changed.length === 0) return this;
    const rows = this.rowOfName();
    const joined = changed.filter((p) => !rows.has(p.nodeName));
    // NONE holds no rows, so it is never written: everything reported to it has joined.
    const into = joined.length === 0 ? this : this.grownBy(joined.map((p) => intern(p.nodeName)));
    into.write(changed);
    return into;
  }

  private grownBy(names: readonly string[]): PeerProbes {
    const grown = [...this.names, ...names];
    const rttMs = new Float64Array(grown.length);
    const lossRatio = new Float64Array(grown.length);
    rttMs.set(this.rttMs);
    lossRatio.set(this.lossRatio);
    return new PeerProbes(grown, rttMs, lossRatio, this.errors && new Map(this.errors));
  }

  private write(changed: readonly PeerProbe[]): void {
    const rows = this.rowOfName();
    const errors = this.errors ?? new Map<number, string>();
    for (const p of changed) {
      const i = rows.get(p.nodeName)!;
      this.rttMs[i] = p.rttMs;
      this.lossRatio[i] = p.lossRatio;
      if (p.error) errors.set(i, p.error);
      else errors.delete(i);
    }
    this.errors = errors.size > 0 ? errors : undefined;
    this.summarized = undefined;
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
