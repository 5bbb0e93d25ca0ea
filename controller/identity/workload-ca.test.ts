import { type webcrypto, X509Certificate } from "node:crypto";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { generateKeys, KEY_ALGORITHM, spiffeId, x509 } from "../../api/x509.ts";
import { CsrRefused, WorkloadCa } from "./workload-ca.ts";

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

async function csrFor(): Promise<string> {
  const k: webcrypto.CryptoKeyPair = await generateKeys();
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: "CN=ignored",
    keys: k as never,
    signingAlgorithm: KEY_ALGORITHM,
  });
  return csr.toString("pem");
}

const ID = spiffeId("cluster.local", "shop", "checkout");

describe("WorkloadCa", () => {
  it("certifies the CSR's key for the identity and lifetime it is told, chained to its root", async () => {
    const ca = await WorkloadCa.open("cluster.local");
    const now = Date.now();
    const chain = await ca.issue(await csrFor(), ID, 10_000, now);
    const [leafPem, rootPem] = chain.split(/(?<=-----END CERTIFICATE-----)\n+/).filter((p) => p.includes("BEGIN"));
    const leaf = new X509Certificate(leafPem!);
    const root = new X509Certificate(rootPem!);
    expect(rootPem!.trim()).toBe(ca.trustBundlePem.trim());
    expect(leaf.checkIssued(root)).toBe(true);
    expect(leaf.verify(root.publicKey)).toBe(true);
    expect(leaf.subjectAltName).toBe(`URI:${ID}`);
    expect(leaf.ca).toBe(false);
    expect(Date.parse(leaf.validTo) - now).toBeLessThanOrEqual(10_000);
    expect(Date.parse(leaf.validTo) - now).toBeGreaterThan(8_000);
    expect(root.ca).toBe(true);
  });

  it("refuses a CSR that does not parse or whose signature does not verify", async () => {
    const ca = await WorkloadCa.open("cluster.local");
    await expect(ca.issue("not a csr", ID, 1000)).rejects.toThrow(CsrRefused);
    const pem = await csrFor();
    const der = Buffer.from(x509.PemConverter.decodeFirst(pem));
    der[der.length - 5]! ^= 0xff; // a byte of the signature
    const tampered = x509.PemConverter.encode(der, "CERTIFICATE REQUEST");
    await expect(ca.issue(tampered, ID, 1000)).rejects.toThrow(/signature|parse/);
  });

  it("keeps its root across restarts in its directory, the key readable by root only", async () => {
    const dir = mkdtempSync(join(tmpdir(), "nodemesh-ca-"));
    dirs.push(dir);
    const first = await WorkloadCa.open("cluster.local", dir);
    const second = await WorkloadCa.open("cluster.local", dir);
    expect(second.trustBundlePem).toBe(first.trustBundlePem);
    expect(statSync(join(dir, "ca-key.pem")).mode & 0o777).toBe(0o600);
    const leaf = new X509Certificate((await second.issue(await csrFor(), ID, 1000)).split("\n\n")[0]!);
    expect(leaf.verify(new X509Certificate(first.trustBundlePem).publicKey)).toBe(true);
  });

  it("issues the controller's server certificate: its names, serverAuth only, chained to the root", async () => {
    const ca = await WorkloadCa.open("cluster.local");
    const keys = await generateKeys();
    const now = Date.now();
    const pem = await ca.issueServer(
      keys.publicKey,
      { dnsNames: ["localhost", "controller.example"], ipAddresses: ["127.0.0.1", "10.250.0.2"] },
      3_600_000,
      now,
    );
    const leaf = new X509Certificate(pem);
    const root = new X509Certificate(ca.trustBundlePem);
    expect(leaf.verify(root.publicKey)).toBe(true);
    expect(leaf.checkIssued(root)).toBe(true);
    expect(leaf.ca).toBe(false);
    expect(leaf.subjectAltName).toBe(
      "DNS:localhost, DNS:controller.example, IP Address:127.0.0.1, IP Address:10.250.0.2",
    );
    expect(leaf.checkIP("10.250.0.2")).toBe("10.250.0.2");
    expect(leaf.checkHost("controller.example")).toBe("controller.example");
    expect(leaf.checkHost("other.example")).toBeUndefined();
    expect(leaf.keyUsage).toEqual(["1.3.6.1.5.5.7.3.1"]); // serverAuth, not a client identity
    expect(Date.parse(leaf.validTo)).toBeGreaterThan(now + 3_600_000 - 1000);
    expect(Date.parse(leaf.validTo)).toBeLessThanOrEqual(now + 3_600_000);
    await expect(ca.issueServer(keys.publicKey, { dnsNames: [], ipAddresses: [] }, 1000)).rejects.toThrow(/name/);
  });
});
