// The pure step from two tables to what takes an agent from one to the other: the entries added or
// changed, the keys removed and, when it changed, the node list. `diffTables` gives it as the Config
// message object; config-encoding.ts gives the same as wire bytes.

import { type Config, type Peer, toWireService, toWireTraffic } from "../../api/agent-service.ts";
import type { ConfigTable, TableEntry, TrafficEntry } from "./service-table.ts";

export interface TableDiff {
  /** undefined: the full table. */
  readonly from: ConfigTable | undefined;
  readonly to: ConfigTable;
  readonly full: boolean;
  readonly services: readonly TableEntry[];
  readonly removed: readonly string[];
  /** The node list; null when unchanged since `from`. */
  readonly peers: readonly Peer[] | null;
  readonly traffic: readonly TrafficEntry[];
  readonly removedTraffic: readonly string[];
}

function samePeers(a: readonly Peer[], b: readonly Peer[]): boolean {
  return a.length === b.length && a.every((p, i) => p.name === b[i].name && p.underlayIp === b[i].underlayIp);
}

/** The entries of `to` whose fingerprint differs from `from`'s (all of them without `from`), and the keys gone. */
function changes<E extends { fingerprint: string }>(
  from: ReadonlyMap<string, E> | undefined,
  to: ReadonlyMap<string, E>,
) {
  const changed: E[] = [];
  for (const [key, entry] of to) {
    const before = from?.get(key);
    // A rebuild reuses unchanged entries, so identity settles most of them without a string compare.
    if (before !== entry && before?.fingerprint !== entry.fingerprint) changed.push(entry);
  }
  const removed = from ? [...from.keys()].filter((key) => !to.has(key)) : [];
  return { changed, removed };
}

/**
 * The full table when `from` is undefined, else the services and traffic objects added, changed
 * and removed since `from`; the peer list only when it differs from `from`'s.
 */
export function tableDiff(from: ConfigTable | undefined, to: ConfigTable): TableDiff {
  const services = changes(from?.services, to.services);
  const traffic = changes(from?.traffic, to.traffic);
  return {
    from,
    to,
    full: !from,
    services: services.changed,
    removed: services.removed,
    peers: !from || !samePeers(from.peers, to.peers) ? to.peers : null,
    traffic: traffic.changed,
    removedTraffic: traffic.removed,
  };
}

/** The Config message of tableDiff(from, to). */
export function diffTables(from: ConfigTable | undefined, to: ConfigTable): Config {
  const diff = tableDiff(from, to);
  return {
    version: to.version,
    full: diff.full,
    baseVersion: from?.version ?? "",
    services: diff.services.map((e) => toWireService(e.service)),
    removed: [...diff.removed],
    peers: diff.peers ? { nodes: [...diff.peers] } : null,
    traffic: diff.traffic.map((e) => toWireTraffic(e.object)),
    removedTraffic: [...diff.removedTraffic],
  };
}
