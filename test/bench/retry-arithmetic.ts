// The numbers of docs/traffic.md's retry worked example: `node test/bench/retry-arithmetic.ts`.
// The table is closed-form; the success rates under a budget come from a discrete-event simulation
// that follows the agent's rules (agent/dataplane/http/call.ts and retry.ts, shared-state.ts): a request takes a
// budget slot at each retry decision (its previous one released first) and holds it through the
// backoff and the retry; the limit is max(minConcurrency, floor(requests in flight × percent / 100));
// the backoff before retry k is uniform over [0, min(250 ms, 25 ms × 2^(k-1))].

const TARGET = 0.99;
const MAX_ATTEMPTS = 10; // api/traffic.ts RetryPolicy.attempts
const meanBackoffMs = (k: number) => Math.min(250, 25 * 2 ** (k - 1)) / 2;

/** Share of in-flight requests that are retrying: time spent retrying over time in flight. */
function retryingShare(p: number, attempts: number, tryMs: number): number {
  let retrying = 0;
  for (let k = 1; k <= attempts; k++) retrying += p ** k * (meanBackoffMs(k) + tryMs);
  return retrying / (tryMs + retrying);
}

function table(): void {
  const pct = (x: number) => `${(x * 100).toFixed(2)} %`;
  console.log("| p | tries | attempts | success | default attempts: 2 | tries/request | share 100 ms / 10 ms |");
  for (const p of [0.1, 0.2, 0.3, 0.5, 0.7]) {
    const tries = Math.ceil(Math.log(1 - TARGET) / Math.log(p) - 1e-12);
    const attempts = tries - 1;
    let perRequest = 0;
    for (let k = 0; k < tries; k++) perRequest += p ** k;
    const shares = [100, 10].map((ms) => `${(retryingShare(p, attempts, ms) * 100).toFixed(1)} %`).join(" / ");
    const over = attempts > MAX_ATTEMPTS ? " (over the maximum)" : "";
    console.log(
      `| ${p} | ${tries} | ${attempts}${over} | ${pct(1 - p ** tries)} | ${pct(1 - p ** 3)} | ${perRequest.toFixed(3)} | ${shares} |`,
    );
  }
  const after = [1, 2, 3, 4, 5, 6].reduce((sum, k) => sum + 0.5 ** k * (meanBackoffMs(k) + 100), 0);
  console.log(`p = 0.5, attempts 6, 100 ms tries: ${after.toFixed(1)} ms retrying of ${(100 + after).toFixed(1)} ms`);
}

/** mulberry32: a seeded generator, so the printed figures are the same on every run. */
function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Request {
  retries: number;
  holdsSlot: boolean;
}
type Event = { at: number; seq: number; kind: "arrive" | "outcome" | "retry"; req: Request };

/** A binary min-heap of events by time, then insertion order. */
class Events {
  private readonly heap: Event[] = [];
  private seq = 0;
  get size(): number {
    return this.heap.length;
  }
  push(at: number, kind: Event["kind"], req: Request): void {
    const h = this.heap;
    h.push({ at, seq: this.seq++, kind, req });
    for (let i = h.length - 1; i > 0; ) {
      const parent = (i - 1) >> 1;
      if (!this.less(h[i], h[parent])) break;
      [h[i], h[parent]] = [h[parent], h[i]];
      i = parent;
    }
  }
  pop(): Event {
    const h = this.heap;
    const top = h[0];
    const last = h.pop()!;
    if (h.length > 0) {
      h[0] = last;
      for (let i = 0; ; ) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && this.less(h[l], h[m])) m = l;
        if (r < h.length && this.less(h[r], h[m])) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m], h[i]];
        i = m;
      }
    }
    return top;
  }
  private less(a: Event, b: Event): boolean {
    return a.at < b.at || (a.at === b.at && a.seq < b.seq);
  }
}

/** Success rate of `requests` Poisson arrivals at `perSecond`, each try `tryMs` long, failing with p. */
function simulate(
  p: number,
  attempts: number,
  percent: number,
  minConcurrency: number,
  perSecond: number,
  tryMs: number,
) {
  const rnd = random(1);
  const events = new Events();
  const requests = 100_000;
  let at = 0;
  for (let i = 0; i < requests; i++) {
    at += (-Math.log(1 - rnd()) / perSecond) * 1000;
    events.push(at, "arrive", { retries: 0, holdsSlot: false });
  }
  let inFlight = 0;
  let slots = 0;
  let succeeded = 0;
  while (events.size > 0) {
    const { at: now, kind, req } = events.pop();
    if (kind === "arrive" || kind === "retry") {
      if (kind === "arrive") inFlight++;
      events.push(now + tryMs, "outcome", req);
      continue;
    }
    if (req.holdsSlot) {
      slots--;
      req.holdsSlot = false;
    }
    const failed = rnd() < p;
    const limit = Math.max(minConcurrency, Math.floor((inFlight * percent) / 100));
    if (!failed || req.retries >= attempts || slots >= limit) {
      if (!failed) succeeded++;
      inFlight--;
      continue;
    }
    slots++;
    req.holdsSlot = true;
    const backoff = rnd() * Math.min(250, 25 * 2 ** req.retries);
    req.retries++;
    events.push(now + backoff, "retry", req);
  }
  return succeeded / requests;
}

table();
console.log("\nSimulated success, p = 0.5 (percent budget, minConcurrency 3):");
for (const [attempts, percent] of [
  [2, 20],
  [6, 20],
  [6, 90],
  [6, 100],
]) {
  const rates = [5, 50, 500].map(
    (rps) => `${rps}/s ${(simulate(0.5, attempts, percent, 3, rps, 100) * 100).toFixed(2)} %`,
  );
  console.log(`attempts ${attempts}, budget ${percent} %, 100 ms tries: ${rates.join(", ")}`);
}
console.log(`p = 0.2, attempts 2, budget 20 %, 500/s: ${(simulate(0.2, 2, 20, 3, 500, 100) * 100).toFixed(2)} %`);
