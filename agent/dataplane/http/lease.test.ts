import { describe, expect, it } from "vitest";
import type { Endpoint } from "../endpoint.ts";
import { allocateSharedBuffers, SharedState } from "../shared-state.ts";
import { EndpointLease } from "./lease.ts";

const EP: Endpoint = {
  ip: "10.0.0.1",
  port: 80,
  meshed: false,
  pod: "p",
  node: "n",
  workload: "w",
  namespace: "d",
  slot: 7,
};

describe("EndpointLease", () => {
  it("holds one request in flight until released, exactly once however often release is called", () => {
    const shared = new SharedState(allocateSharedBuffers());
    const a = EndpointLease.acquire(shared, EP, 2)!;
    const b = EndpointLease.acquire(shared, EP, 2)!;
    expect(EndpointLease.acquire(shared, EP, 2)).toBeUndefined(); // the breaker's max requests
    a.release();
    a.release();
    a.release();
    const c = EndpointLease.acquire(shared, EP, 2);
    expect(c).toBeDefined();
    expect(EndpointLease.acquire(shared, EP, 2)).toBeUndefined(); // b and c hold it: a's extra releases freed nothing
    b.release();
    c!.release();
    expect(EndpointLease.acquire(shared, EP, 1)).toBeDefined();
  });
});
