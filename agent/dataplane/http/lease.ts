// A request's hold on one endpoint: it counts against the endpoint's circuit-breaker limit on
// requests in flight (shared by all workers) and feeds least-request. Released exactly once,
// whichever way the attempt ends: a failover, a retry, a committed answer, an error, the client
// leaving.

import type { Endpoint } from "../endpoint.ts";
import type { SharedState } from "../shared-state.ts";

export class EndpointLease {
  private released = false;
  private readonly shared: SharedState;
  readonly endpoint: Endpoint;

  private constructor(shared: SharedState, endpoint: Endpoint) {
    this.shared = shared;
    this.endpoint = endpoint;
  }

  /** A lease, or undefined when the endpoint already has `maxRequests` in flight (breaker open). */
  static acquire(shared: SharedState, endpoint: Endpoint, maxRequests: number): EndpointLease | undefined {
    return shared.tryStartRequest(endpoint.slot, maxRequests) ? new EndpointLease(shared, endpoint) : undefined;
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    this.shared.requestEnded(this.endpoint.slot);
  }
}
