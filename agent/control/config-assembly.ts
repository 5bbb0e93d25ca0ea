// The pure step of applying a Config: the agent's current table plus a full or incremental
// update → the next table, or the reason it cannot be applied (then the agent NACKs and keeps
// what it has).

import { type Config, fromWireService, type Peer, serviceKey } from "../../api/agent-service.ts";
import { type Service, type ServiceTable, validateServiceTable } from "../../api/services.ts";

/** What the agent holds from the controller. */
export interface ControllerConfig {
  version: string;
  /** Keyed by serviceKey ("namespace/name"). */
  services: ReadonlyMap<string, Service>;
  /** Every node the controller knows, this one included. */
  peers: readonly Peer[];
}

export type Assembly = { ok: true; config: ControllerConfig; table: ServiceTable } | { ok: false; error: string };

export function toServiceTable(config: ControllerConfig): ServiceTable {
  return { services: [...config.services.values()] };
}

export function fromServiceTable(version: string, table: ServiceTable, peers: readonly Peer[]): ControllerConfig {
  return { version, services: new Map(table.services.map((s) => [serviceKey(s), s])), peers };
}

export function assembleConfig(current: ControllerConfig | undefined, update: Config): Assembly {
  if (!update.full && current?.version !== update.baseVersion) {
    return {
      ok: false,
      error: `incremental update ${update.version} applies to ${update.baseVersion}, but this agent holds ${current?.version ?? "nothing"}`,
    };
  }
  const services = new Map(update.full ? [] : current!.services);
  for (const key of update.removed) services.delete(key);
  for (const wire of update.services) {
    const service = fromWireService(wire);
    services.set(serviceKey(service), service);
  }
  const peers = update.peers ? update.peers.nodes : (current?.peers ?? []);
  const config: ControllerConfig = { version: update.version, services, peers };
  const table = toServiceTable(config);
  const errors = validateServiceTable(table);
  if (errors.length > 0) {
    return { ok: false, error: `invalid service table: ${errors.map((e) => `${e.field}: ${e.message}`).join("; ")}` };
  }
  return { ok: true, config, table };
}
