// The pure step from two tables to the Config message that takes an agent from one to the other.

import { type Config, type Peer, toWireService } from "../../api/agent-service.ts";
import type { ConfigTable } from "./service-table.ts";

function samePeers(a: readonly Peer[], b: readonly Peer[]): boolean {
  return a.length === b.length && a.every((p, i) => p.name === b[i].name && p.underlayIp === b[i].underlayIp);
}

/**
 * The full table when `from` is undefined, else the services added, changed and removed since
 * `from`; the peer list only when it differs from `from`'s.
 */
export function diffTables(from: ConfigTable | undefined, to: ConfigTable): Config {
  const peers = !from || !samePeers(from.peers, to.peers) ? { nodes: [...to.peers] } : null;
  if (!from) {
    return {
      version: to.version,
      full: true,
      baseVersion: "",
      services: [...to.services.values()].map((e) => toWireService(e.service)),
      removed: [],
      peers,
    };
  }
  const services = [];
  for (const [key, entry] of to.services) {
    if (from.services.get(key)?.fingerprint !== entry.fingerprint) services.push(toWireService(entry.service));
  }
  const removed = [...from.services.keys()].filter((key) => !to.services.has(key));
  return { version: to.version, full: false, baseVersion: from.version, services, removed, peers };
}
