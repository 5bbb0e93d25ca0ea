// Two numbers the data path compares against in several places.

/** "No limit" for a breaker or outlier threshold: the largest value the shared int32 counters hold. */
export const UNLIMITED = 2 ** 31 - 1;

/** Node timers cannot wait longer (a longer one fires at once): a longer timeout means none. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * What one pod, or one client connection, may hold of an agent (--help "Limits", docs/operations.md):
 * the bounds that keep a flooding pod from starving the others of memory and CPU.
 */
export interface FloodLimits {
  /**
   * Connections one pod may have open on each of its listeners (outbound, inbound, tunnel), over
   * the whole agent; each worker enforces its share (the kernel spreads connections across them).
   */
  readonly podConnections: number;
  /** Of a pod's tunnel-port connections, how many may be in their handshake at once (each worker's share). */
  readonly podHandshakes: number;
  /** Concurrent streams on one HTTP/2 connection from a client (SETTINGS_MAX_CONCURRENT_STREAMS). */
  readonly http2Streams: number;
}

export const DEFAULT_FLOOD_LIMITS: FloodLimits = { podConnections: 4096, podHandshakes: 256, http2Streams: 250 };

/**
 * HTTP/2 rapid reset (CVE-2023-44487), the way Envoy's premature-reset check judges it (with its
 * defaults): once a connection opened PREMATURE_RESET_MIN_STREAMS streams, if more than half of
 * them were reset by the client within PREMATURE_RESET_WINDOW_MS and before their answer ended,
 * the connection is closed. Cancelling now and then, as gRPC clients do, stays far below; so does a
 * client giving up on a backlog of requests that waited in a listener's queue while agents changed
 * over (at 100, the agent-upgrade test at 1000 requests/s saw that cut legitimate connections).
 */
export const PREMATURE_RESET_MIN_STREAMS = 500;
export const PREMATURE_RESET_WINDOW_MS = 1000;

/** SETTINGS and PING frames a client may send per second on one connection (a keepalive needs one). */
export const HTTP2_CONTROL_FRAMES_PER_S = 100;

/** A count with a cap: what is taken below the cap is given back once; at the cap nothing is taken. */
export class Gate {
  private held = 0;
  /** Read at each take: a worker's share changes as --workers auto starts more workers. */
  private readonly cap: () => number;

  constructor(cap: number | (() => number)) {
    this.cap = typeof cap === "number" ? () => cap : cap;
  }

  tryTake(): boolean {
    if (this.held >= this.cap()) return false;
    this.held++;
    return true;
  }

  release(): void {
    this.held--;
  }
}

/** One worker's share of an agent-wide cap (the kernel spreads a pod's connections over the workers). */
export function workerShare(cap: number, workers: number): number {
  return Math.max(1, Math.ceil(cap / workers));
}
