// The handover over the enrollment socket (handover.ts): the running agent answers a new agent of
// its node with its pid, stops taking enrollments, and keeps no connection open afterwards. Its
// stop waits for the enrollment socket's connections, so a successor's kept-alive connection held
// the old agent's exit for seconds after the drain (8.3 s surge takeovers, of which 3.3 s that).

import { mkdtempSync, rmSync } from "node:fs";
import type { Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it, vi } from "vitest";
import { startEnrollmentServer } from "./enrollment-server.ts";
import { requestHandover } from "./handover.ts";
import type { PodRegistry } from "./pods.ts";

/** The handover touches no pod: any use of the registry fails the test. */
const NO_PODS = new Proxy({} as PodRegistry, {
  get(_target, name) {
    throw new Error(`the handover used the pod registry (${String(name)})`);
  },
});

/** The gate's open connections. */
function connections(gate: Server): Promise<number> {
  return new Promise((resolve, reject) => gate.getConnections((err, n) => (err ? reject(err) : resolve(n))));
}

describe("the handover", () => {
  let dir: string | undefined;
  let gate: Server | undefined;
  afterEach(() => {
    gate?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("answers with the running agent's pid, closes enrollment, and leaves no connection open", async () => {
    dir = mkdtempSync(join(tmpdir(), "nodemesh-handover-"));
    const socketPath = join(dir, "agent.sock");
    let handedOver = 0;
    gate = await startEnrollmentServer(socketPath, NO_PODS, { handOver: () => handedOver++ });

    expect(await requestHandover(socketPath)).toEqual({ pid: process.pid });
    expect(handedOver).toBe(1);
    expect(gate.listening).toBe(false);
    // Without the answer's `Connection: close` the connection stayed until the keep-alive timeout (5 s).
    const open = gate;
    await vi.waitFor(async () => expect(await connections(open)).toBe(0), { timeout: 1000, interval: 20 });
    // Nobody listens any more: a later successor finds no agent to take over from.
    expect(await requestHandover(socketPath)).toBeUndefined();
  });
});
