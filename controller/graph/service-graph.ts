// The service-graph API's answers (api/service-graph.ts), assembled from the traffic window, the
// current service table and the stored routes and policies with their propagation status.

import type { PropagationStatus, Resource } from "../../api/resources.ts";
import type { ServiceDetail, ServiceGraph } from "../../api/service-graph.ts";
import type { Service } from "../../api/services.ts";
import type { TrafficPolicySpec } from "../../api/traffic.ts";
import type { Store } from "../store/store.ts";
import type { TrafficWindow } from "./traffic-window.ts";

export const DEFAULT_WINDOW_SECONDS = 300;
export const MIN_WINDOW_SECONDS = 10;
export const MAX_WINDOW_SECONDS = 900;

export interface GraphSources {
  traffic: TrafficWindow;
  store: Store;
  /** The Service as the agents currently have it (with its endpoints). */
  service(namespace: string, name: string): Service | undefined;
  propagation(key: { plural: string; namespace: string; name: string }): PropagationStatus | undefined;
  now?: () => number;
}

const POLICY_KINDS = [
  "httproutes",
  "grpcroutes",
  "trafficpolicies",
  "authorizationpolicies",
  "peerauthentications",
  "requestauthentications",
] as const;
/** Kinds that select pods where they are: without targetRefs, every pod of their namespace. */
const POD_KINDS = new Set(["AuthorizationPolicy", "PeerAuthentication", "RequestAuthentication"]);

/** Does a route or policy name the Service (as parent, backend or target)? */
function namesService(obj: Resource, namespace: string, name: string): boolean {
  const attachesInItsNamespace = obj.kind === "TrafficPolicy" || POD_KINDS.has(obj.kind);
  if (obj.metadata.namespace !== namespace && attachesInItsNamespace) return false;
  const spec = obj.spec as {
    parentRefs?: { name: string; namespace?: string }[];
    rules?: { backendRefs?: { name: string; namespace?: string }[] }[];
    targetRefs?: TrafficPolicySpec["targetRefs"];
  };
  const same = (ref: { name: string; namespace?: string }) =>
    ref.name === name && (ref.namespace ?? obj.metadata.namespace) === namespace;
  return (
    (spec.parentRefs ?? []).some(same) ||
    (spec.rules ?? []).some((r) => (r.backendRefs ?? []).some(same)) ||
    (spec.targetRefs ?? []).some((t) => t.name === name) ||
    (POD_KINDS.has(obj.kind) && spec.targetRefs === undefined)
  );
}

export class GraphQueries {
  private readonly src: GraphSources;
  constructor(src: GraphSources) {
    this.src = src;
  }

  private now(): number {
    return this.src.now?.() ?? Date.now();
  }

  graph(windowSeconds: number): ServiceGraph {
    return this.src.traffic.graph(this.now(), windowSeconds);
  }

  service(namespace: string, name: string, windowSeconds: number): ServiceDetail | undefined {
    const svc = this.src.service(namespace, name);
    if (!svc) return undefined;
    // About 60 points whatever the window, never finer than a second.
    const step = Math.max(1, Math.round(windowSeconds / 60));
    const traffic = this.src.traffic.service(this.now(), windowSeconds, `${name}.${namespace}`, step);
    const policies = POLICY_KINDS.flatMap((plural) =>
      this.src.store
        .list(plural)
        .filter((o) => namesService(o, namespace, name))
        .map((o) => {
          const status = this.src.propagation({ plural, namespace: o.metadata.namespace, name: o.metadata.name });
          return {
            kind: o.kind,
            namespace: o.metadata.namespace,
            name: o.metadata.name,
            agentsApplied: status?.agentsApplied ?? 0,
            agentsTotal: status?.agentsTotal ?? 0,
          };
        }),
    );
    return {
      service: {
        name: svc.name,
        namespace: svc.namespace,
        vip: svc.vip,
        ports: svc.ports.map((p) => ({ name: p.name, port: p.port, protocol: p.protocol })),
      },
      ...traffic,
      endpoints: svc.endpoints.map((e) => ({ pod: e.pod ?? "", ip: e.ip, node: e.node ?? "" })),
      policies,
    };
  }
}
