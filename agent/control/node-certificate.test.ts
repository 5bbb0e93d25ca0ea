// The agent's node certificate on disk: asked for with a key of its own (ECDSA P-256, 0600 beside
// it), held while in date and while the key beside it is its own, due again at half-life, dropped
// on demand.

import { createPrivateKey, X509Certificate } from "node:crypto";
import { mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { CertificateReply, CertificateRequest } from "../../api/agent-service.ts";
import { generateKeys, nodeSpiffeId, pkcs8Pem } from "../../api/x509.ts";
import { WorkloadCa } from "../../controller/identity/workload-ca.ts";
import { NODE_CERT_FILE, NODE_KEY_FILE, NodeCertificate } from "./node-certificate.ts";

const log = pino({ level: "silent" });
const SPIFFE = nodeSpiffeId("cluster.local", "node-a");
let dir: string;
let ca: WorkloadCa;

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), "nodemesh-nodecert-"));
  ca = await WorkloadCa.open("cluster.local");
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** A controller that certifies what it is asked, for `lifetimeMs`; records the requests. */
function controller(lifetimeMs = 60_000, requests: Array<Omit<CertificateRequest, "requestId">> = []) {
  return async (req: Omit<CertificateRequest, "requestId">): Promise<CertificateReply> => {
    requests.push(req);
    const certChainPem = await ca.issueNode(req.csrPem, SPIFFE, "tag", lifetimeMs);
    return { requestId: "1", certChainPem, trustBundlePem: ca.trustBundlePem, error: "" };
  };
}

describe("NodeCertificate", () => {
  it("asks for a node certificate for a P-256 key it keeps 0600, and holds it", async () => {
    const node = new NodeCertificate(dir, log);
    expect(node.current()).toBeUndefined();
    expect(node.due()).toBe(true);
    const requests: Array<Omit<CertificateRequest, "requestId">> = [];
    await node.refresh(controller(60_000, requests));
    expect(requests).toHaveLength(1);
    expect(requests[0]).toMatchObject({ node: true, namespace: "", serviceAccount: "" });
    expect(statSync(join(dir, NODE_KEY_FILE)).mode & 0o777).toBe(0o600);
    const held = node.current()!;
    expect(held.spiffeId).toBe(SPIFFE);
    expect(createPrivateKey(held.keyPem).asymmetricKeyDetails).toMatchObject({ namedCurve: "prime256v1" });
    expect(new X509Certificate(held.chainPem).checkPrivateKey(createPrivateKey(held.keyPem))).toBe(true);
    expect(node.due()).toBe(false);
    await node.refresh(controller(60_000, requests)); // not due: nothing asked
    expect(requests).toHaveLength(1);
  });

  it("is due again at half-life (counted from when it came, not from its backdated notBefore), and renewed then", async () => {
    const node = new NodeCertificate(dir, log);
    await node.refresh(controller(60_000));
    const held = node.current()!;
    expect(held.notBefore).toBeLessThan(Date.now() - 30_000); // the controller's allowance for clock skew
    expect(held.renewAt).toBeGreaterThan(Date.now() + 25_000);
    expect(node.due(held.renewAt - 1000)).toBe(false);
    expect(node.due(held.renewAt + 1000)).toBe(true);
    expect(node.current(held.notAfter + 1)).toBeUndefined(); // expired: not presented

    // Dates have whole seconds: 4 s, renewed after 2.
    const short = new NodeCertificate(mkdtempSync(join(dir, "short-")), log);
    await short.refresh(controller(4_000));
    const first = short.current()!;
    expect(short.due()).toBe(false);
    await new Promise((r) => setTimeout(r, 2_100));
    await short.refresh(controller(4_000));
    expect(short.current()!.chainPem).not.toBe(first.chainPem);
  });

  it("holds nothing when the key beside the certificate is not its own (a write cut short)", async () => {
    const node = new NodeCertificate(dir, log);
    await node.refresh(controller());
    const other = await generateKeys();
    writeFileSync(join(dir, NODE_KEY_FILE), await pkcs8Pem(other.privateKey), { mode: 0o600 });
    expect(node.current()).toBeUndefined();
    expect(node.due()).toBe(true);
  });

  it("writes nothing for a refused request, keeps what it held, and forgets it when told", async () => {
    const refusing = async (): Promise<CertificateReply> => ({
      requestId: "1",
      certChainPem: "",
      trustBundlePem: "",
      error: "this controller issues no node certificates",
    });
    await new NodeCertificate(dir, log).refresh(refusing);
    expect(() => statSync(join(dir, NODE_KEY_FILE))).toThrow();

    const node = new NodeCertificate(dir, log);
    await node.refresh(controller(4_000));
    const held = node.current()!;
    await new Promise((r) => setTimeout(r, 2_100)); // due
    await node.refresh(refusing);
    expect(node.current()?.chainPem).toBe(held.chainPem);
    node.discard();
    expect(node.current()).toBeUndefined();
    expect(() => statSync(join(dir, NODE_CERT_FILE))).toThrow();
  });
});
