// Deadlines on connection set-up (connect, tunnel answer, TLS handshake, protocol detection) that a
// busy event loop does not trip falsely. Node runs expired timers before it polls for I/O, so after
// a long turn (a connect storm on a loaded node) a deadline fires while the bytes it waits for
// already sit in the socket: the connection fails though the peer was on time. Expiring only after
// the next poll phase (setImmediate) lets such bytes win; a deadline moves by the loop's lag only.

export interface IoDeadline {
  clear(): void;
}

/** Calls `onExpiry` once `ms` have passed and the I/O that was ready by then has been handled. */
export function ioDeadline(onExpiry: () => void, ms: number): IoDeadline {
  let immediate: NodeJS.Immediate | undefined;
  const timer = setTimeout(() => {
    immediate = setImmediate(onExpiry);
  }, ms);
  return {
    clear() {
      clearTimeout(timer);
      if (immediate) clearImmediate(immediate);
    },
  };
}
