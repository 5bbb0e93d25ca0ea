// The first link: a connection's bound target under the configuration in force now. A
// keep-alive connection follows configuration changes because this runs for every request.

import type { IncomingHttpHeaders } from "node:http";
import type { Endpoint } from "../endpoint.ts";
import type { Caller, PodContext, ProxyTarget } from "../pod.ts";
import { routeKey, type ServiceRoute, type Snapshot } from "../snapshot.ts";
import { headerValue } from "./headers.ts";

/** A target with the current snapshot's route. */
export type Resolved =
  | { readonly direction: "outbound"; readonly from: PodContext; readonly route: ServiceRoute }
  | {
      readonly direction: "inbound";
      readonly to: PodContext;
      readonly port: number;
      /** The Service the pod port belongs to, when known (its policy applies). */
      readonly route: ServiceRoute | undefined;
      readonly caller: Caller;
    };

/**
 * Set by the source agent on requests to a meshed endpoint: the Service the request was sent to,
 * so the destination agent applies that Service's policy (a pod can back several Services on one
 * port). Clients cannot set it: every x-nodemesh-* header from a client is removed.
 */
export const SERVICE_HEADER = "x-nodemesh-service";

/** The target under `snapshot`; undefined when its Service is gone. */
export function resolveTarget(
  snapshot: Snapshot,
  target: ProxyTarget,
  headers: IncomingHttpHeaders,
): Resolved | undefined {
  const route = routeOf(snapshot, target, headers);
  if (target.direction === "outbound") return route && { ...target, route };
  return { ...target, route };
}

/** The route a request to `target` takes under `snapshot` (inbound: the Service the source agent named, if any). */
export function routeOf(
  snapshot: Snapshot,
  target: ProxyTarget,
  headers: IncomingHttpHeaders,
): ServiceRoute | undefined {
  if (target.direction === "outbound") return snapshot.routes.get(target.routeKey);
  const key = routeKey(target.to.pod.ip, target.port);
  const named = target.caller.viaTunnel ? headerValue(headers, SERVICE_HEADER) : undefined;
  return (named && snapshot.inboundByService.get(`${named}|${key}`)) || snapshot.inbound.get(key);
}

/** The destination_service of a request: its Service, or the destination workload without one. */
export function destinationService(target: Resolved): string {
  if (target.direction === "outbound") return target.route.id;
  return target.route?.id ?? `${target.to.workload.name}.${target.to.workload.namespace}`;
}

/** The pod whose network namespace upstream connections leave from. */
export function sourcePod(target: Resolved): PodContext {
  return target.direction === "outbound" ? target.from : target.to;
}

/** A pod's own port as an endpoint: inbound requests are delivered inside the pod, never tunnelled. */
export function localEndpoint(to: PodContext, port: number, route: ServiceRoute | undefined): Endpoint {
  const slot = route?.endpoints.find((e) => e.ip === to.pod.ip && e.port === port)?.slot ?? 0;
  return {
    ip: to.pod.ip,
    port,
    meshed: false,
    pod: to.key,
    node: "",
    workload: to.workload.name,
    namespace: to.workload.namespace,
    slot,
  };
}
