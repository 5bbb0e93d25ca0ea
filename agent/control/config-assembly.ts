// The pure step of applying a Config: the agent's current table plus a full or incremental
// update → the next table, or the reason it cannot be applied (then the agent NACKs and keeps
// what it has).

import { type Config, fromWireService, fromWireTraffic, type Peer, serviceKey } from "../../api/agent-service.ts";
import { type Service, type ServiceTable, validateServiceTable } from "../../api/services.ts";
import { type TrafficObject, trafficKey } from "../../api/traffic.ts";

/** What the agent holds from the controller. */
export interface ControllerConfig {
  version: string;
  /** Keyed by serviceKey ("namespace/name"). */
  services: ReadonlyMap<string, Service>;
  /** Keyed by trafficKey ("kind/namespace/name"). */
  traffic: ReadonlyMap<string, TrafficObject>;
  /** Every node the controller knows, this one included. */
  peers: readonly Peer[];
}

export type Assembly = { ok: true; config: ControllerConfig; table: ServiceTable } | { ok: false; error: string };

/** Traffic objects are sorted by key: the same set gives the same table, whatever updates built it. */
export function toServiceTable(config: ControllerConfig): ServiceTable {
  const traffic = [...config.traffic].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, o]) => o);
  return { services: [...config.services.values()], traffic };
}

export function fromServiceTable(version: string, table: ServiceTable, peers: readonly Peer[]): ControllerConfig {
  return {
    version,
    services: new Map(table.services.map((s) => [serviceKey(s), s])),
    traffic: new Map((table.traffic ?? []).map((o) => [trafficKey(o), o])),
    peers,
  };
}

/** `current` with the update's removals and upserts applied (never mutated). */
function merged<T>(
  current: ReadonlyMap<string, T> | undefined,
  removed: readonly string[],
  upserts: readonly T[],
  key: (item: T) => string,
): Map<string, T> {
  const next = new Map(current ?? []);
  for (const k of removed) next.delete(k);
  for (const item of upserts) next.set(key(item), item);
  return next;
}

export function assembleConfig(current: ControllerConfig | undefined, update: Config): Assembly {
  if (!update.full && current?.version !== update.baseVersion) {
    return {
      ok: false,
      error: `incremental update ${update.version} applies to ${update.baseVersion}, but this agent holds ${current?.version ?? "nothing"}`,
    };
  }
  const base = update.full ? undefined : current;
  let traffic: Map<string, TrafficObject>;
  try {
    traffic = merged(base?.traffic, update.removedTraffic, update.traffic.map(fromWireTraffic), trafficKey);
  } catch (err) {
    return { ok: false, error: `invalid traffic object ${(err as Error).message}` };
  }
  const config: ControllerConfig = {
    version: update.version,
    services: merged(base?.services, update.removed, update.services.map(fromWireService), serviceKey),
    traffic,
    peers: update.peers ? update.peers.nodes : (current?.peers ?? []),
  };
  const table = toServiceTable(config);
  const errors = validateServiceTable(table);
  if (errors.length > 0) {
    const fields = errors.map((e) => `${namedField(e.field, table)}: ${e.message}`);
    return { ok: false, error: `invalid service table: ${fields.join("; ")}` };
  }
  return { ok: true, config, table };
}

/** "traffic[3].spec.x" → "traffic[HTTPRoute/default/r].spec.x": the operator knows objects by name. */
function namedField(field: string, table: ServiceTable): string {
  const at = /^traffic\[(\d+)\]/.exec(field);
  const object = at && table.traffic?.[Number(at[1])];
  return object ? `traffic[${trafficKey(object)}]${field.slice(at[0].length)}` : field;
}
