// Byte forwarding between two established sockets, both ways, with backpressure (stream.pipe
// pauses the faster side) and half-close (an end on one side becomes an end on the other; the
// other direction keeps flowing until it ends too). A reset on either side resets the other.

import type { Socket } from "node:net";
import type { Duplex } from "node:stream";
import { MAX_TIMER_MS } from "./limits.ts";
import { countForwarded } from "./read-buffers.ts";

export interface PipeResult {
  /** Bytes read from the downstream (client) side and written upstream. */
  bytesFromDownstream: number;
  /** Bytes read from upstream and written to the downstream side. */
  bytesFromUpstream: number;
}

/** Bytes read before the pipe starts (a handshake), less what is still buffered and will be forwarded. */
function alreadyConsumed(s: Socket): number {
  return s.bytesRead - s.readableLength;
}

/** A pipe without a policy's idle timeout (passthrough, inbound without a Service) has this one, as Envoy's TCP proxy. */
export const DEFAULT_IDLE_MS = 60 * 60_000;
/**
 * Once one side has ended (sent its FIN), the pipe waits for the other side's end only this long
 * without a byte moving (HAProxy's client-fin/server-fin): an app that never ends its side must not
 * pin both sockets for the full idle timeout.
 */
export const HALF_CLOSED_IDLE_MS = 30_000;

/**
 * The pipes open in this thread, downstream side → upstream side: long-lived streams a stopping
 * agent serves on for (Dataplane.outlastStreams) and then cuts (Dataplane.stop).
 */
export const openPipes = new Map<Duplex, Duplex>();

/** `idleMs`: a connection with no bytes either way for this long is closed (30 s once half-closed). */
export function pipeBoth(
  downstream: Socket,
  upstream: Socket,
  idleMs: number = DEFAULT_IDLE_MS,
  halfClosedIdleMs: number = HALF_CLOSED_IDLE_MS,
): Promise<PipeResult> {
  // A side that closed while the other was being connected has already fired "close": reset the other.
  if (downstream.destroyed || upstream.destroyed) {
    downstream.resetAndDestroy();
    upstream.resetAndDestroy();
    return Promise.resolve({ bytesFromDownstream: 0, bytesFromUpstream: 0 });
  }
  const downstreamBase = alreadyConsumed(downstream);
  const upstreamBase = alreadyConsumed(upstream);
  return new Promise((resolve) => {
    let open = 2;
    openPipes.set(downstream, upstream);
    const done = () => {
      if (--open > 0) return;
      openPipes.delete(downstream);
      resolve({
        bytesFromDownstream: downstream.bytesRead - downstreamBase,
        bytesFromUpstream: upstream.bytesRead - upstreamBase,
      });
    };
    downstream.once("close", done);
    upstream.once("close", done);
    // An error is an abortive close: pass it on as a reset rather than a clean end.
    downstream.once("error", () => upstream.resetAndDestroy());
    upstream.once("error", () => downstream.resetAndDestroy());
    // A socket that is ended in both directions is finished; close it so "close" fires.
    for (const s of [downstream, upstream]) {
      const onEnd = () => {
        if (s.writableFinished) s.destroy();
        else s.once("finish", () => s.destroy());
      };
      // A side may have ended before the pipe (a client that half-closed during detection).
      if (s.readableEnded) onEnd();
      else s.once("end", onEnd);
    }
    closeWhenIdle(downstream, upstream, idleMs, halfClosedIdleMs);
    // Counted before pipe() takes them, so its dead read buffers are collected young (read-buffers.ts).
    downstream.on("data", countForwarded);
    upstream.on("data", countForwarded);
    downstream.pipe(upstream);
    upstream.pipe(downstream);
    downstream.resume();
  });
}

/**
 * Closes both sockets once no byte has moved either way for `idleMs`, or for `halfClosedMs` once
 * either side has ended (noticed within 1.5 × the limit). A timer that polls the byte counts,
 * rather than socket timeouts, which Node refreshes on every read and write: nothing per chunk on
 * the forwarding path.
 */
function closeWhenIdle(a: Socket, b: Socket, idleMs: number, halfClosedMs: number): void {
  // 0 (or more than a timer can wait) turns the idle timeout off; the half-closed one stays.
  const idle = idleMs > 0 && idleMs <= MAX_TIMER_MS ? idleMs : Number.POSITIVE_INFINITY;
  const moved = () => a.bytesRead + b.bytesRead;
  const limit = () => (a.readableEnded || b.readableEnded ? Math.min(idle, halfClosedMs) : idle);
  let last = moved();
  let lastChange = performance.now(); // monotonic: a wall-clock step must not close busy connections
  const timer = setInterval(
    () => {
      const now = performance.now();
      if (moved() !== last) {
        last = moved();
        lastChange = now;
      } else if (now - lastChange >= limit()) {
        a.destroy();
        b.destroy();
      }
    },
    // Node caps timers at 2^31 - 1 ms (24.8 days) and fires longer ones after 1 ms.
    Math.max(10, Math.min(idle, halfClosedMs) / 2),
  );
  timer.unref();
  a.once("close", () => clearInterval(timer));
}
