// An endpoint of a Service as the data plane sees it (a leaf type: snapshot, balancer and both
// paths use it).

export interface Endpoint {
  readonly ip: string;
  readonly port: number;
  readonly meshed: boolean;
  readonly pod: string;
  readonly node: string;
  /** The serving pod's workload and namespace (metric labels); "unknown" when not known. */
  readonly workload: string;
  readonly namespace: string;
  /** A meshed endpoint's service account (its identity with `namespace`); undefined when not known. */
  readonly serviceAccount?: string;
  /** Index of the endpoint's shared counters (SharedState), stable across snapshots. */
  readonly slot: number;
}
