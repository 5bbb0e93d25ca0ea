// Who a connection is from or to: an enrolled pod, a caller, and where a connection's HTTP
// requests go. Plain types, imported by both paths and by the context.

import type { EnrolledPod } from "../../api/enrollment.ts";
import type { Netns } from "../sys/linux.ts";
import type { Gate } from "./limits.ts";

/** An enrolled pod as a worker sees it: its namespace is held open for the pod's lifetime. */
export interface PodContext {
  readonly key: string; // "namespace/name"
  readonly pod: EnrolledPod;
  readonly netns: Netns;
  /** The pod's workload (its `app` label, else its name) and namespace: metrics, per-source limits. */
  readonly workload: { readonly name: string; readonly namespace: string };
  /** This worker's share of the pod's tunnel connections still in their handshake (FloodLimits.podHandshakes). */
  readonly handshakes: Gate;
}

/** A caller as the destination side knows it: the workload named in the tunnel, or no one. */
export interface Caller {
  readonly workload: { readonly name: string; readonly namespace: string };
  /** Rate-limit key per source: "namespace/workload", or the address of a caller outside the mesh. */
  readonly key: string;
  /** The caller's address as this agent sees it (the source agent's, through the tunnel). */
  readonly address?: string;
  /**
   * The source pod's address: the caller's own outside the mesh; through the tunnel, the one the
   * source agent names, when the tunnel is authenticated (mTLS or the tunnel key), else `address`.
   */
  readonly sourceIp?: string;
  /** Came through the tunnel: its agent's `x-nodemesh-service` names the Service addressed. */
  readonly viaTunnel: boolean;
  /** The caller's SPIFFE id when it proved one (mTLS on the tunnel); undefined in plaintext. */
  readonly principal?: string;
}

/**
 * Where a connection's HTTP requests go. Bound once per client connection; the route is looked
 * up again for every request, so a keep-alive connection follows configuration changes.
 */
export type ProxyTarget =
  | { readonly direction: "outbound"; readonly from: PodContext; readonly routeKey: string }
  | { readonly direction: "inbound"; readonly to: PodContext; readonly port: number; readonly caller: Caller };
