// What every connection handler of a data-plane worker can reach: one context for the L4 and
// the L7 path. dataplane.ts builds it; unit tests build their own (with plain loopback sockets).

import type { Socket } from "node:net";
import type { Logger } from "pino";
import type { AccessLog } from "./access-log.ts";
import type { EndpointPicker } from "./balancer.ts";
import type { SocketMaker } from "./dial.ts";
import type { EdgeAggregator } from "./edges.ts";
import type { Endpoint } from "./endpoint.ts";
import type { Downstream } from "./http/downstream.ts";
import type { HttpProtocol, UpstreamPools } from "./http/upstream.ts";
import type { DataplaneMetrics } from "./metrics.ts";
import type { Keyring } from "./mtls.ts";
import type { PodContext, ProxyTarget } from "./pod.ts";
import type { DataplaneSettings } from "./settings.ts";
import type { SharedState } from "./shared-state.ts";
import type { Snapshot } from "./snapshot.ts";
import type { Tracer } from "./tracing.ts";
import type { TunnelConnections } from "./tunnel-mux.ts";

/** The HTTP servers a classified connection is handed to (http/frontend.ts). */
export interface HttpServing {
  /** Time a client has to send a complete request head. */
  readonly headersTimeoutMs: number;
  /** Serves `socket` (paused, its first bytes pushed back) as HTTP of the given version. */
  serve(socket: Socket, protocol: HttpProtocol, target: ProxyTarget): void;
  /** Serves one request that came without a connection (handed over in memory: http/attempt-local.ts). */
  serveRequest(down: Downstream, target: ProxyTarget): Promise<void>;
}

export interface DataplaneContext {
  snapshot(): Snapshot;
  readonly settings: DataplaneSettings;
  readonly shared: SharedState;
  readonly picker: EndpointPicker;
  readonly pools: UpstreamPools;
  readonly http: HttpServing;
  readonly metrics: DataplaneMetrics;
  readonly edges: EdgeAggregator;
  readonly accessLog: AccessLog;
  /** Spans and their export (http/trace.ts, tracing.ts). */
  readonly tracer: Tracer;
  readonly log: Logger;
  /** How upstream sockets are made: inside a pod's namespace (Linux), or plain ones in unit tests. */
  readonly sockets: SocketMaker;
  /** The certificates of this node's pods' identities: mTLS on the tunnel (mtls.ts). */
  readonly keyring: Keyring;
  /**
   * Resolves once `pod`'s first certificate is no longer on its way (held, or its request
   * failed), or after `timeoutMs`; at once when it is not pending.
   */
  identitySettled(pod: PodContext, timeoutMs: number): Promise<void>;
  /** The mTLS connections to other agents' pods that tunnels share (tunnel-mux.ts). */
  readonly tunnels: TunnelConnections;
  /**
   * Whether `ep` is one of this node's pods, which nothing serves until the next agent starts
   * (this one is stopping without a successor: Dataplane.stop).
   */
  waitsForNextAgent(ep: Endpoint): boolean;
  /**
   * This node's pod at `ip`, whose tunnels and requests this worker serves itself (local-tunnel.ts,
   * http/attempt-local.ts), and how each keeps the pod's namespace open until it closes (as its
   * listeners' connections do).
   */
  localPod(ip: string): LocalPod | undefined;
}

/** A same-node tunnel or handed-over request: closes once, and can be ended (the agent stopping). */
export interface LocalExchange {
  once(event: "close", listener: () => void): unknown;
  destroy(): unknown;
}

export interface LocalPod {
  readonly ctx: PodContext;
  hold(exchange: LocalExchange): void;
}
