// The pure step from two tables to the Config message that takes an agent from one to the other.

import { type Config, type Peer, toWireService, toWireTraffic } from "../../api/agent-service.ts";
import type { ConfigTable } from "./service-table.ts";

function samePeers(a: readonly Peer[], b: readonly Peer[]): boolean {
  return a.length === b.length && a.every((p, i) => p.name === b[i].name && p.underlayIp === b[i].underlayIp);
}

/** The entries of `to` whose fingerprint differs from `from`'s (all of them without `from`), and the keys gone. */
function changes<E extends { fingerprint: string }>(
  from: ReadonlyMap<string, E> | undefined,
  to: ReadonlyMap<string, E>,
) {
  const changed = [...to].filter(([key, entry]) => from?.get(key)?.fingerprint !== entry.fingerprint);
  const removed = from ? [...from.keys()].filter((key) => !to.has(key)) : [];
  return { changed: changed.map(([, entry]) => entry), removed };
}

/**
 * The full table when `from` is undefined, else the services and traffic objects added, changed
 * and removed since `from`; the peer list only when it differs from `from`'s.
 */
export function diffTables(from: ConfigTable | undefined, to: ConfigTable): Config {
  const services = changes(from?.services, to.services);
  const traffic = changes(from?.traffic, to.traffic);
  return {
    version: to.version,
    full: !from,
    baseVersion: from?.version ?? "",
    services: services.changed.map((e) => toWireService(e.service)),
    removed: services.removed,
    peers: !from || !samePeers(from.peers, to.peers) ? { nodes: [...to.peers] } : null,
    traffic: traffic.changed.map((e) => toWireTraffic(e.object)),
    removedTraffic: traffic.removed,
  };
}
