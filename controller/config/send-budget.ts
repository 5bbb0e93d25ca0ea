// How many Config bytes may be on their way to agents at once. A thousand agents connecting
// together would otherwise each get a multi-megabyte table written at the same moment: every
// copy sits in memory until its agent has read it, and all of them crawl in parallel. With a
// budget, tables go out a few at a time at full speed, and an agent that waits for its turn gets
// the newest table when it comes (one message instead of a table and the updates that followed).
// The budget admits while under the limit, so one message larger than the limit still goes alone.

export class SendBudget {
  private readonly limitBytes: number;
  private inFlight = 0;
  /** Senders waiting for bytes to be released, oldest first. */
  private readonly waiting = new Set<() => void>();

  constructor(limitBytes: number) {
    this.limitBytes = limitBytes;
  }

  /** Counts `bytes` as in flight and returns true, or returns false and calls `retry` once bytes are released. */
  take(bytes: number, retry: () => void): boolean {
    if (this.inFlight >= this.limitBytes) {
      this.waiting.add(retry);
      return false;
    }
    this.inFlight += bytes;
    return true;
  }

  release(bytes: number): void {
    this.inFlight -= bytes;
    for (const retry of this.waiting) {
      if (this.inFlight >= this.limitBytes) break;
      this.waiting.delete(retry);
      retry();
    }
  }

  /** A sender that went away stops waiting. */
  forget(retry: () => void): void {
    this.waiting.delete(retry);
  }
}
