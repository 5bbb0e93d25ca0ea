// A configuration snapshot compiled for the data plane: built once when configuration changes,
// then only read. Lookups on the connection path are one Map.get; no configuration is parsed there.

import type { PortProtocol, ServiceTable } from "../../api/services.ts";

export interface Endpoint {
  readonly ip: string;
  readonly port: number;
  readonly meshed: boolean;
  readonly pod: string;
  readonly node: string;
}

export interface ServiceRoute {
  /** "name.namespace", the value of the destination_service label. */
  readonly id: string;
  readonly protocol: PortProtocol;
  readonly endpoints: readonly Endpoint[];
  /** Index of this route's round-robin counter in the shared counter array (stable across swaps). */
  readonly balancerSlot: number;
}

export interface Snapshot {
  readonly version: string;
  /** Keyed by "vip:port". */
  readonly routes: ReadonlyMap<string, ServiceRoute>;
}

export const EMPTY_SNAPSHOT: Snapshot = { version: "", routes: new Map() };

/** What the control thread sends to the data-plane workers: plain data plus the slot assignment. */
export interface SnapshotMessage {
  version: string;
  table: ServiceTable;
  /** "vip:port" → balancer slot. */
  slots: Record<string, number>;
}

export function routeKey(ip: string, port: number): string {
  return `${ip}:${port}`;
}

export function compileSnapshot(msg: SnapshotMessage): Snapshot {
  const routes = new Map<string, ServiceRoute>();
  for (const svc of msg.table.services) {
    for (const p of svc.ports) {
      const key = routeKey(svc.vip, p.port);
      routes.set(key, {
        id: `${svc.name}.${svc.namespace}`,
        protocol: p.protocol ?? "tcp",
        balancerSlot: msg.slots[key],
        endpoints: svc.endpoints.map((e) => ({
          ip: e.ip,
          port: e.port ?? p.targetPort ?? p.port,
          meshed: e.meshed ?? false,
          pod: e.pod ?? "",
          node: e.node ?? "",
        })),
      });
    }
  }
  return { version: msg.version, routes };
}

/**
 * Assigns each route a slot in the shared round-robin counters; a route keeps its slot across
 * snapshots so its rotation carries on instead of restarting at the first endpoint.
 */
export class BalancerSlots {
  private readonly slots = new Map<string, number>();
  private readonly capacity: number;
  constructor(capacity: number) {
    this.capacity = capacity;
  }
  assign(table: ServiceTable): Record<string, number> {
    const out: Record<string, number> = {};
    for (const svc of table.services) {
      for (const p of svc.ports) {
        const key = routeKey(svc.vip, p.port);
        let slot = this.slots.get(key);
        if (slot === undefined) {
          // Past capacity routes share counters: rotation stays fair per route, only less exact.
          slot = this.slots.size % this.capacity;
          this.slots.set(key, slot);
        }
        out[key] = slot;
      }
    }
    return out;
  }
}
