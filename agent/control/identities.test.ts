import pino from "pino";
import { describe, expect, it } from "vitest";
import type { CertificateRequest } from "../../api/agent-service.ts";
import { spiffeId } from "../../api/x509.ts";
import { WorkloadCa } from "../../controller/identity/workload-ca.ts";
import { type IdentityKey, WorkloadIdentities } from "./identities.ts";

describe("WorkloadIdentities", () => {
  it("holds one certificate per wanted identity, backs off after failures, renews at half-life, drops the unwanted", async () => {
    const ca = await WorkloadCa.open("mesh.test");
    const asked: string[] = [];
    let refuse = 2;
    let wanted: IdentityKey[] = [{ namespace: "shop", serviceAccount: "checkout" }];
    const changes: number[] = [];
    const ids = new WorkloadIdentities({
      wanted: () => wanted,
      log: pino({ level: "silent" }),
      request: async (req: Omit<CertificateRequest, "requestId">) => {
        asked.push(`${req.namespace}/${req.serviceAccount}`);
        if (refuse-- > 0) throw new Error("not connected to the controller");
        const certChainPem = await ca.issue(
          req.csrPem,
          spiffeId("mesh.test", req.namespace, req.serviceAccount),
          60_000,
        );
        return { requestId: "", certChainPem, trustBundlePem: ca.trustBundlePem, error: "" };
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
});
