import { afterEach, describe, expect, it } from "vitest";
import { DataplaneMetrics } from "./metrics.ts";
import { Tracer } from "./tracing.ts";

const settings = { samplingPercent: 10, node: "node-1", version: "0.1.0" };
const TRACE = "4bf92f3577b34da6a3ce929d0e0e4736";
const SPAN = "00f067aa0ba902b7";

/** A deterministic stream in [0, 1): mulberry32. */
function seeded(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const tracers: Tracer[] = [];
afterEach(async () => {
  for (const t of tracers.splice(0)) await t.stop();
});

function tracer(random: () => number, otlpEndpoint?: string): Tracer {
  const t = new Tracer({ ...settings, otlpEndpoint }, new DataplaneMetrics(), undefined, random);
  tracers.push(t);
  return t;
}

describe("Tracer", () => {
  it("makes spans only with an OTLP endpoint", () => {
    expect(tracer(Math.random).enabled).toBe(false);
    expect(tracer(Math.random, "http://127.0.0.1:4318").enabled).toBe(true);
  });

  it("honours a caller's sampled flag whatever the rate", () => {
    const never = tracer(() => 0.999_999);
    expect(never.decide({ traceId: TRACE, spanId: SPAN, sampled: true }, false, 0)).toBe(true);
    expect(never.decide({ sampled: true }, true, 0)).toBe(true);
  });

  it("follows a peer agent's 'not sampled'; decides by rate for a caller that is not an agent", () => {
    const always = tracer(() => 0);
    const unsampled = { traceId: TRACE, spanId: SPAN, sampled: false };
    expect(always.decide(unsampled, true, 100)).toBe(false);
    expect(always.decide(unsampled, false, 100)).toBe(true);
    // B3 deferred the decision: this agent takes it, even behind another agent.
    expect(always.decide({ traceId: TRACE, spanId: SPAN }, true, 100)).toBe(true);
  });

  it("samples no request at 0 % and every request at 100 %", () => {
    const t = tracer(seeded(1));
    for (let i = 0; i < 1000; i++) {
      expect(t.decide(undefined, false, 0)).toBe(false);
      expect(t.decide(undefined, false, 100)).toBe(true);
    }
  });

  it("samples the policy's rate, else the agent's", () => {
    const t = tracer(seeded(42));
    const share = (percent: number | undefined) => {
      let n = 0;
      for (let i = 0; i < 100_000; i++) if (t.decide(undefined, false, percent)) n++;
      return n / 1000; // percent
    };
    // 100 000 draws: the binomial's standard deviation is under 0.2 percentage points here.
    expect(share(undefined)).toBeCloseTo(10, 0); // --trace-sampling 10
    expect(Math.abs(share(1) - 1)).toBeLessThan(0.15);
    expect(Math.abs(share(50) - 50)).toBeLessThan(1);
  });
});
