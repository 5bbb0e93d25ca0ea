// Round robin across every data-plane worker: the rotation counter of each route lives in shared
// memory, so N workers together produce one exact rotation (Atomics.add is the only cost).

import type { Endpoint, ServiceRoute } from "./snapshot.ts";

export class RoundRobin {
  private readonly counters: Int32Array;
  constructor(shared: SharedArrayBuffer) {
    this.counters = new Int32Array(shared);
  }

  /**
   * The endpoints in the order to try them: the next in rotation first, then the others as
   * failover. Failover does not advance the shared rotation.
   */
  order(route: ServiceRoute): Endpoint[] {
    const eps = route.endpoints;
    const n = eps.length;
    if (n === 0) return [];
    const start = (Atomics.add(this.counters, route.balancerSlot, 1) >>> 0) % n;
    const out = new Array<Endpoint>(n);
    for (let i = 0; i < n; i++) out[i] = eps[(start + i) % n];
    return out;
  }
}
