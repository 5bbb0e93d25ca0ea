import { describe, expect, it } from "vitest";
import { RoundRobin } from "./balancer.ts";
import type { Endpoint, ServiceRoute } from "./snapshot.ts";

const ep = (n: number): Endpoint => ({ ip: `10.0.0.${n}`, port: 80, meshed: true, pod: `p${n}`, node: "" });
const route = (endpoints: Endpoint[], balancerSlot = 0): ServiceRoute => ({
  id: "svc.default",
  protocol: "tcp",
  endpoints,
  balancerSlot,
});

describe("shared round robin", () => {
  it("produces one exact rotation across workers sharing the counters", () => {
    const shared = new SharedArrayBuffer(16);
    const workers = [new RoundRobin(shared), new RoundRobin(shared)];
    const r = route([ep(1), ep(2), ep(3)]);
    const picks = Array.from({ length: 12 }, (_, i) => workers[i % 2].pick(r, [])!.pod);
    expect(picks).toEqual(["p1", "p2", "p3", "p1", "p2", "p3", "p1", "p2", "p3", "p1", "p2", "p3"]);
  });

  it("keeps routes' rotations apart by slot", () => {
    const rr = new RoundRobin(new SharedArrayBuffer(16));
    const a = route([ep(1), ep(2)], 0);
    const b = route([ep(3), ep(4)], 1);
    expect([rr.pick(a, []), rr.pick(b, []), rr.pick(a, []), rr.pick(b, [])].map((e) => e!.pod)).toEqual([
      "p1",
      "p3",
      "p2",
      "p4",
    ]);
  });

  it("skips endpoints the connection already tried and gives up when all were", () => {
    const rr = new RoundRobin(new SharedArrayBuffer(16));
    const r = route([ep(1), ep(2), ep(3)]);
    const tried = [r.endpoints[0], r.endpoints[1]];
    expect(rr.pick(r, tried)?.pod).toBe("p3");
    expect(rr.pick(r, [...tried, r.endpoints[2]])).toBeUndefined();
    expect(rr.pick(route([]), [])).toBeUndefined();
  });
});
