// The mesh's certificate authority for workload identities. Its root (ECDSA P-256, 10 years) is
// made on first start and kept in the controller's state directory (ca.pem, ca-key.pem, 0600), or
// held in memory when there is none. It certifies a key an agent made, for one SPIFFE identity,
// for a short time: the CSR proves possession of the key; the identity and the lifetime are ours,
// whatever the CSR asks. Who may ask for which identity is the agent server's decision.

import { webcrypto } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { generateKeys, importPkcs8Pem, KEY_ALGORITHM, pkcs8Pem, x509 } from "../../api/x509.ts";

const ROOT_LIFETIME_MS = 10 * 365 * 24 * 3600_000;
/** Leaves start a little in the past: nodes' clocks differ. */
const CLOCK_SKEW_MS = 60_000;

export class CsrRefused extends Error {}

export class WorkloadCa {
  readonly trustDomain: string;
  private readonly root: x509.X509Certificate;
  private readonly key: webcrypto.CryptoKey;

  private constructor(trustDomain: string, root: x509.X509Certificate, key: webcrypto.CryptoKey) {
    this.trustDomain = trustDomain;
    this.root = root;
    this.key = key;
  }

  /** Loads the root from `dir` (made there on first start), or makes one in memory. */
  static async open(trustDomain: string, dir?: string): Promise<WorkloadCa> {
    const certFile = dir && join(dir, "ca.pem");
    const keyFile = dir && join(dir, "ca-key.pem");
    if (certFile && keyFile) {
      try {
        const root = new x509.X509Certificate(readFileSync(certFile, "utf8"));
        return new WorkloadCa(trustDomain, root, await importPkcs8Pem(readFileSync(keyFile, "utf8")));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
      }
    }
    const keys = await generateKeys();
    const now = Date.now();
    const root = await x509.X509CertificateGenerator.createSelfSigned({
      // A name of its own: during a root rotation two roots are trusted, and OpenSSL finds a
      // chain's root in its store by name (two roots of one name fail as "self-signed in chain").
      name: `CN=nodemesh workload CA ${new Date(now).toISOString()} ${serial().slice(0, 8)}, O=${trustDomain}`,
      keys,
      serialNumber: serial(),
      notBefore: new Date(now - CLOCK_SKEW_MS),
      notAfter: new Date(now + ROOT_LIFETIME_MS),
      signingAlgorithm: KEY_ALGORITHM,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ],
    });
    if (certFile && keyFile) {
      writeFileSync(keyFile, await pkcs8Pem(keys.privateKey), { mode: 0o600 });
      writeFileSync(certFile, root.toString("pem"), { mode: 0o644 });
    }
    return new WorkloadCa(trustDomain, root, keys.privateKey);
  }

  /** A root kept outside a directory (Kubernetes mode: the Secret the replicas share). */
  static async fromPem(trustDomain: string, certPem: string, keyPem: string): Promise<WorkloadCa> {
    return new WorkloadCa(trustDomain, new x509.X509Certificate(certPem), await importPkcs8Pem(keyPem));
  }

  /** The root's private key as PKCS#8 PEM, to be kept where the replicas share it. */
  keyPem(): Promise<string> {
    return pkcs8Pem(this.key);
  }

  /** The roots a peer's chain must lead to. */
  get trustBundlePem(): string {
    return this.root.toString("pem");
  }

  /**
   * A certificate for `spiffeId` on the key of `csrPem`, valid `lifetimeMs` from now. Refuses a
   * CSR that does not parse or whose signature does not verify (the asker does not hold the key).
   */
  async issue(csrPem: string, spiffeId: string, lifetimeMs: number, now = Date.now()): Promise<string> {
    let csr: x509.Pkcs10CertificateRequest;
    try {
      csr = new x509.Pkcs10CertificateRequest(csrPem);
    } catch (err) {
      throw new CsrRefused(`the CSR does not parse: ${(err as Error).message}`);
    }
    if (!(await csr.verify())) throw new CsrRefused("the CSR's signature does not verify");
    const leaf = await x509.X509CertificateGenerator.create({
      subject: "",
      issuer: this.root.subject,
      publicKey: csr.publicKey,
      signingKey: this.key,
      serialNumber: serial(),
      notBefore: new Date(now - CLOCK_SKEW_MS),
      notAfter: new Date(now + lifetimeMs),
      signingAlgorithm: KEY_ALGORITHM,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyAgreement, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
        // SPIFFE X.509-SVID: exactly one URI SAN, critical when the subject is empty.
        new x509.SubjectAlternativeNameExtension([{ type: "url", value: spiffeId }], true),
        await x509.AuthorityKeyIdentifierExtension.create(await this.root.publicKey.export()),
      ],
    });
    return `${leaf.toString("pem")}\n${this.root.toString("pem")}\n`;
  }

  /**
   * A TLS server certificate for the controller itself (its agents' gRPC port) on `publicKey`,
   * naming `dnsNames` and `ipAddresses`, valid `lifetimeMs` from now: the leaf alone, PEM.
   */
  async issueServer(
    publicKey: webcrypto.CryptoKey,
    names: { dnsNames: string[]; ipAddresses: string[] },
    lifetimeMs: number,
    now = Date.now(),
  ): Promise<string> {
    const sans = [
      ...names.dnsNames.map((value) => ({ type: "dns" as const, value })),
      ...names.ipAddresses.map((value) => ({ type: "ip" as const, value })),
    ];
    if (sans.length === 0) throw new Error("a server certificate needs at least one name");
    const leaf = await x509.X509CertificateGenerator.create({
      subject: `CN=nodemesh controller, O=${this.trustDomain}`,
      issuer: this.root.subject,
      publicKey,
      signingKey: this.key,
      serialNumber: serial(),
      notBefore: new Date(now - CLOCK_SKEW_MS),
      notAfter: new Date(now + lifetimeMs),
      signingAlgorithm: KEY_ALGORITHM,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyAgreement, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
        new x509.SubjectAlternativeNameExtension(sans),
        await x509.AuthorityKeyIdentifierExtension.create(await this.root.publicKey.export()),
      ],
    });
    return leaf.toString("pem");
  }
}

/** A positive 128-bit serial number, hex. */
function serial(): string {
  const bytes = webcrypto.getRandomValues(new Uint8Array(16));
  bytes[0]! &= 0x7f;
  return Buffer.from(bytes).toString("hex");
}
