// Leader election on a Lease in the stand-in API server: one leader at a time, a hand-over when
// the leader stops (released at once) or dies (taken over once the lease expired).
import pino from "pino";
import { afterEach, beforeEach, expect, it } from "vitest";
import { FakeApiServer } from "../../test/kubernetes/api-server.ts";
import { kubeConfigFor } from "../../test/kubernetes/kubeconfig.ts";
import { KubeClient } from "./kube-client.ts";
import { LeaderElection } from "./leader-election.ts";

let api: FakeApiServer;
const electors: LeaderElection[] = [];

beforeEach(async () => {
  api = new FakeApiServer({ bookmarkIntervalMs: 0 });
  await api.start();
});

afterEach(async () => {
  for (const e of electors.splice(0)) await e.stop();
  await api.stop();
});

function elector(identity: string, events: string[]): LeaderElection {
  const e = new LeaderElection({
    client: new KubeClient(kubeConfigFor(api.url)),
    namespace: "nodemesh-system",
    name: "nodemesh-controller",
    identity,
    log: pino({ level: "silent" }),
    leaseDurationMs: 600,
    renewDeadlineMs: 400,
    retryPeriodMs: 100,
    onStartedLeading: () => events.push(`${identity} leads`),
    onStoppedLeading: () => events.push(`${identity} stops`),
  });
  electors.push(e);
  return e;
}

async function until(check: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if (check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what} not reached in 5 s`);
}

it("elects one leader and hands over at once when it stops", async () => {
  const events: string[] = [];
  const a = elector("controller-a", events);
  a.start();
  await until(() => a.leading, "a leading");
  const b = elector("controller-b", events);
  b.start();
  await new Promise((r) => setTimeout(r, 800)); // longer than the lease: a keeps renewing it
  expect(a.leading && !b.leading).toBe(true);
  expect(api.get("leases", "nodemesh-system", "nodemesh-controller")?.spec.holderIdentity).toBe("controller-a");
  await a.stop();
  await until(() => b.leading, "b leading");
  expect(events).toEqual(["controller-a leads", "controller-a stops", "controller-b leads"]);
  expect(api.get("leases", "nodemesh-system", "nodemesh-controller")?.spec.leaseTransitions).toBe(1);
});

it("takes over from a dead holder only once the lease expired on its own clock", async () => {
  api.apply({
    apiVersion: "coordination.k8s.io/v1",
    kind: "Lease",
    metadata: { name: "nodemesh-controller", namespace: "nodemesh-system" },
    // A holder that died: its renewTime is "now" by its clock, and never moves again.
    spec: {
      holderIdentity: "controller-z",
      leaseDurationSeconds: 1,
      renewTime: new Date().toISOString().replace("Z", "000Z"),
    },
  });
  const events: string[] = [];
  const b = elector("controller-b", events);
  const started = Date.now();
  b.start();
  await new Promise((r) => setTimeout(r, 500));
  expect(b.leading).toBe(false);
  await until(() => b.leading, "b leading");
  expect(Date.now() - started).toBeGreaterThanOrEqual(1000);
  expect(api.get("leases", "nodemesh-system", "nodemesh-controller")?.spec.holderIdentity).toBe("controller-b");
});

it("a leader that cannot renew steps down within its renew deadline", async () => {
  const events: string[] = [];
  const a = elector("controller-a", events);
  a.start();
  await until(() => a.leading, "a leading");
  await api.down();
  await until(() => !a.leading, "a stepping down");
  expect(events).toEqual(["controller-a leads", "controller-a stops"]);
});
