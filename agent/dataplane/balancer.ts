// Round robin across every data-plane worker: the rotation counter of each route lives in shared
// memory, so N workers together produce one exact rotation (Atomics.add is the only cost).

import type { Endpoint, ServiceRoute } from "./snapshot.ts";

export class RoundRobin {
  private readonly counters: Int32Array;
  constructor(shared: SharedArrayBuffer) {
    this.counters = new Int32Array(shared);
  }

  /**
   * The next endpoint in rotation that this connection has not tried yet. A failover re-picks
   * from the rotation (as a fresh pick would) rather than taking the dead endpoint's neighbour, so
   * one dead endpoint does not double the load of the one after it.
   */
  pick(route: ServiceRoute, tried: readonly Endpoint[]): Endpoint | undefined {
    const eps = route.endpoints;
    const n = eps.length;
    for (let i = 0; i < n; i++) {
      const ep = eps[(Atomics.add(this.counters, route.balancerSlot, 1) >>> 0) % n];
      if (!tried.includes(ep)) return ep;
    }
    return undefined;
  }
}
