import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { describe, expect, it } from "vitest";
import type { CertificateReply, CertificateRequest } from "../../api/agent-service.ts";
import { spiffeId } from "../../api/x509.ts";
import { WorkloadCa } from "../../controller/identity/workload-ca.ts";
import { AWAIT_CONTROLLER_MS, type IdentityKey, KEPT_CERTIFICATES_FILE, WorkloadIdentities } from "./identities.ts";

/** The controller's side of a CertificateRequest: `ca` certifies the key for the identity asked. */
async function issue(ca: WorkloadCa, req: Omit<CertificateRequest, "requestId">): Promise<CertificateReply> {
  const certChainPem = await ca.issue(req.csrPem, spiffeId("mesh.test", req.namespace, req.serviceAccount), 60_000);
  return { requestId: "", certChainPem, trustBundlePem: ca.trustBundlePem, error: "" };
}

describe("WorkloadIdentities", () => {
  it("holds one certificate per wanted identity, backs off after failures, renews at half-life, drops the unwanted", async () => {
    const ca = await WorkloadCa.open("mesh.test");
    const asked: string[] = [];
    let refuse = 2;
    let wanted: IdentityKey[] = [{ namespace: "shop", serviceAccount: "checkout" }];
    const changes: number[] = [];
    const ids = new WorkloadIdentities({
      wanted: () => wanted,
      connected: () => true,
      log: pino({ level: "silent" }),
      request: async (req) => {
        asked.push(`${req.namespace}/${req.serviceAccount}`);
        if (refuse-- > 0) throw new Error("the stream ended before the answer");
        return issue(ca, req);
      },
    });
    const pending: string[][] = [];
    ids.onChange = (held) => {
      changes.push(held.length);
      pending.push(ids.pending());
    };

    await ids.refresh();
    // Pending while the first request is out, not once it failed (tunnels then stop waiting).
    expect(pending).toEqual([["shop/checkout"], []]);
    await ids.refresh(); // within the backoff: not asked again
    expect(asked).toEqual(["shop/checkout"]);
    await ids.refresh(Date.now() + 120_000);
    await ids.refresh(Date.now() + 240_000);
    expect(asked).toHaveLength(3);
    const [held] = ids.list();
    expect(held?.spiffeId).toBe("spiffe://mesh.test/ns/shop/sa/checkout");
    expect(held!.renewAt - Date.now()).toBeGreaterThan(25_000); // half of 60 s, minus the CA's skew
    expect(held!.renewAt - Date.now()).toBeLessThanOrEqual(31_000);

    await ids.refresh(); // not due
    expect(asked).toHaveLength(3);
    await ids.refresh(held!.renewAt + 1);
    expect(ids.list()[0]?.renewals).toBe(1);

    wanted = [];
    await ids.refresh();
    expect(ids.list()).toEqual([]);
    // Two failed first requests (pending, then not), the third (pending, then held), its renewal, the drop.
    expect(changes).toEqual([0, 0, 0, 0, 0, 1, 1, 0]);
    expect(pending.at(-3)).toEqual([]);
  });

  it("a first certificate wanted before the controller stream is up counts as on its way, and is asked for once it is", async () => {
    const ca = await WorkloadCa.open("mesh.test");
    let connected = false;
    const asked: string[] = [];
    const ids = new WorkloadIdentities({
      wanted: () => [{ namespace: "shop", serviceAccount: "checkout" }],
      connected: () => connected,
      log: pino({ level: "silent" }),
      request: async (req) => {
        asked.push(`${req.namespace}/${req.serviceAccount}`);
        return issue(ca, req);
      },
    });
    const pending: string[][] = [];
    ids.onChange = () => pending.push(ids.pending());
    const start = Date.now();

    // A restarted agent's pods, before its stream is up: their tunnels wait (pending), nothing asked.
    await ids.refresh(start);
    await ids.refresh(start + 1000);
    expect(asked).toEqual([]);
    expect(ids.pending()).toEqual(["shop/checkout"]);
    expect(pending).toEqual([["shop/checkout"]]);

    // The stream comes up (the link calls refresh): asked at once, no backoff from the wait.
    connected = true;
    await ids.refresh(start + 1100);
    expect(asked).toEqual(["shop/checkout"]);
    expect(ids.list()).toHaveLength(1);
    expect(ids.pending()).toEqual([]);
  });

  it("a controller away for longer stops holding the pod's tunnels after AWAIT_CONTROLLER_MS", async () => {
    let connected = false;
    const ids = new WorkloadIdentities({
      wanted: () => [{ namespace: "shop", serviceAccount: "checkout" }],
      connected: () => connected,
      log: pino({ level: "silent" }),
      request: async () => ({ requestId: "", certChainPem: "", trustBundlePem: "", error: "refused" }),
    });
    const pending: string[][] = [];
    ids.onChange = () => pending.push(ids.pending());
    const start = Date.now();
    await ids.refresh(start);
    await ids.refresh(start + AWAIT_CONTROLLER_MS - 1);
    expect(ids.pending()).toEqual(["shop/checkout"]);
    await ids.refresh(start + AWAIT_CONTROLLER_MS);
    expect(ids.pending()).toEqual([]);
    // Not pending again while the stream stays down (no 10 s on, 1 s off).
    await ids.refresh(start + 3 * AWAIT_CONTROLLER_MS);
    expect(ids.pending()).toEqual([]);
    expect(pending).toEqual([["shop/checkout"], []]);
    // Up again: asked for (and pending while asked).
    connected = true;
    const asking = ids.refresh(start + 3 * AWAIT_CONTROLLER_MS + 1);
    expect(ids.pending()).toEqual(["shop/checkout"]);
    await asking;
  });

  it("keeps its certificates for the next agent, which serves them before the controller answers and then renews them", async () => {
    const ca = await WorkloadCa.open("mesh.test");
    const dir = mkdtempSync(join(tmpdir(), "nodemesh-identities-"));
    try {
      let connected = true;
      let wanted: IdentityKey[] = [{ namespace: "shop", serviceAccount: "checkout" }];
      const asked: string[] = [];
      const make = () =>
        new WorkloadIdentities({
          wanted: () => wanted,
          connected: () => connected,
          stateDir: dir,
          log: pino({ level: "silent" }),
          request: async (req) => {
            asked.push(req.serviceAccount);
            return issue(ca, req);
          },
        });
      const first = make();
      await first.refresh();
      const held = first.list()[0]!;
      const file = join(dir, KEPT_CERTIFICATES_FILE);
      expect(statSync(file).mode & 0o777).toBe(0o600);

      // The next agent, its controller stream not up yet: the kept certificate, not pending.
      connected = false;
      const next = make();
      expect(next.list()).toEqual([]); // until a pod wants it
      await next.refresh();
      expect(next.list().map((c) => [c.spiffeId, c.chainPem, c.keyPem])).toEqual([
        ["spiffe://mesh.test/ns/shop/sa/checkout", held.chainPem, held.keyPem],
      ]);
      expect(next.pending()).toEqual([]);
      expect(asked).toEqual(["checkout"]);
      // Up: renewed at once (the controller's CA may have changed meanwhile).
      connected = true;
      await next.refresh();
      expect(asked).toEqual(["checkout", "checkout"]);
      expect(next.list()[0]!.chainPem).not.toBe(held.chainPem);

      // No pod wants it any more: dropped, and not kept.
      wanted = [];
      await next.refresh();
      expect(() => readFileSync(file)).toThrow();

      // What is not a certificate with its own key is left out: asked for as usual.
      const otherKey = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({
        type: "pkcs8",
        format: "pem",
      });
      writeFileSync(file, JSON.stringify({ certificates: [{ ...held, keyPem: otherKey }, { namespace: 1 }] }));
      wanted = [{ namespace: "shop", serviceAccount: "checkout" }];
      connected = false;
      const third = make();
      await third.refresh();
      expect(third.list()).toEqual([]);
      expect(third.pending()).toEqual(["shop/checkout"]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
