// The mesh's certificate authority for workload identities. Its root (ECDSA P-256, 10 years) is
// made on first start and kept in the controller's state directory (ca.pem, ca-key.pem, 0600), or
// held in memory when there is none; or the user plugs in an intermediate CA of their own PKI as
// files (Istio's "plug-in CA certificates": WorkloadCa.plugged), which then signs, with the
// user's root as the trust bundle. It certifies a key an agent made, for one SPIFFE identity,
// for a short time: the CSR proves possession of the key; the identity and the lifetime are ours,
// whatever the CSR asks. Who may ask for which identity is the agent server's decision.

import { webcrypto, X509Certificate } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { splitPem } from "../../api/pem.ts";
import { generateKeys, importPkcs8Pem, KEY_ALGORITHM, pkcs8Pem, x509 } from "../../api/x509.ts";

const ROOT_LIFETIME_MS = 10 * 365 * 24 * 3600_000;
/** Leaves start a little in the past: nodes' clocks differ. */
const CLOCK_SKEW_MS = 60_000;

export class CsrRefused extends Error {}

/** A plugged CA's files (controller flags --ca-cert-file, --ca-key-file, --ca-chain-file, --ca-root-file). */
export interface PluggedCaFiles {
  /** The intermediate that signs workload certificates. */
  certFile: string;
  /** Its private key, PKCS#8 PEM, ECDSA P-256. */
  keyFile: string;
  /** The certificates between it and the root, if any. */
  chainFile?: string;
  /** The root(s) the mesh trusts. */
  rootFile: string;
}

/** Why a plugged CA cannot be used: the message names the flag and file. */
export class PluggedCaInvalid extends Error {}

export class WorkloadCa {
  readonly trustDomain: string;
  /** The certificate that signs: the root itself, or the user's intermediate. */
  private readonly signer: x509.X509Certificate;
  private readonly key: webcrypto.CryptoKey;
  /** Between the signer and the root (a plugged CA's chain file); empty for a root of our own. */
  private readonly chain: readonly string[];
  private readonly roots: string;
  /** True when the user's PKI provides it: nodemesh then never replaces it (no rotation). */
  readonly plugged: boolean;
  private signerX509: X509Certificate | undefined;

  private constructor(
    trustDomain: string,
    signer: x509.X509Certificate,
    key: webcrypto.CryptoKey,
    plugged?: { chain: readonly string[]; roots: string },
  ) {
    this.trustDomain = trustDomain;
    this.signer = signer;
    this.key = key;
    this.chain = plugged?.chain ?? [];
    this.roots = plugged?.roots ?? signer.toString("pem");
    this.plugged = plugged !== undefined;
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

  /**
   * The user's intermediate CA, checked before it is used: a CA certificate that may sign
   * certificates, in date, whose key is the one given, and whose chain leads to the root file.
   */
  static async plugged(trustDomain: string, files: PluggedCaFiles, now = Date.now()): Promise<WorkloadCa> {
    const read = (flag: string, file: string) => {
      try {
        return readFileSync(file, "utf8");
      } catch (err) {
        throw new PluggedCaInvalid(`${flag} ${file}: ${(err as Error).message}`);
      }
    };
    const certificates = (flag: string, file: string) => {
      const pems = splitPem(read(flag, file));
      if (pems.length === 0) throw new PluggedCaInvalid(`${flag} ${file}: no PEM certificate in it`);
      try {
        return pems.map((pem) => ({ pem, cert: new X509Certificate(pem) }));
      } catch (err) {
        throw new PluggedCaInvalid(`${flag} ${file}: ${(err as Error).message}`);
      }
    };
    const [signer] = certificates("--ca-cert-file", files.certFile);
    const chain = files.chainFile ? certificates("--ca-chain-file", files.chainFile) : [];
    const roots = certificates("--ca-root-file", files.rootFile);
    const signing = `--ca-cert-file ${files.certFile}`;
    if (!signer!.cert.ca) throw new PluggedCaInvalid(`${signing}: not a CA certificate (basicConstraints CA:FALSE)`);
    const usage = new x509.X509Certificate(signer!.pem).getExtension(x509.KeyUsagesExtension);
    if (usage && !(usage.usages & x509.KeyUsageFlags.keyCertSign))
      throw new PluggedCaInvalid(`${signing}: its key usage does not allow signing certificates (keyCertSign)`);
    for (const { cert } of [signer!, ...chain]) {
      if (now < Date.parse(cert.validFrom) || now > Date.parse(cert.validTo))
        throw new PluggedCaInvalid(
          `${cert.subject.replaceAll("\n", ", ")} is not valid now (${cert.validFrom} – ${cert.validTo})`,
        );
    }
    // Each link signed by the next, the last by a root of the root file.
    const links = [signer!, ...chain];
    for (const [i, { cert }] of links.entries()) {
      const parent = links[i + 1]?.cert;
      if (parent) {
        if (!cert.checkIssued(parent) || !cert.verify(parent.publicKey))
          throw new PluggedCaInvalid(
            `--ca-chain-file ${files.chainFile}: ${cert.subject.replaceAll("\n", ", ")} is not signed by the next certificate`,
          );
      } else if (!roots.some((r) => cert.checkIssued(r.cert) && cert.verify(r.cert.publicKey))) {
        throw new PluggedCaInvalid(
          `the chain from --ca-cert-file does not lead to --ca-root-file ${files.rootFile}` +
            (files.chainFile ? "" : " (an intermediate between them goes in --ca-chain-file)"),
        );
      }
    }
    let key: webcrypto.CryptoKey;
    try {
      key = await importPkcs8Pem(read("--ca-key-file", files.keyFile));
    } catch (err) {
      if (err instanceof PluggedCaInvalid) throw err;
      throw new PluggedCaInvalid(
        `--ca-key-file ${files.keyFile}: not an ECDSA P-256 private key in PKCS#8 PEM (${(err as Error).message})`,
      );
    }
    // The key must be the certificate's: a signature made with it verifies with the certificate.
    const probe = webcrypto.getRandomValues(new Uint8Array(32));
    const signature = await webcrypto.subtle.sign(KEY_ALGORITHM, key, probe);
    const publicKey = await new x509.X509Certificate(signer!.pem).publicKey.export(KEY_ALGORITHM, ["verify"]);
    if (!(await webcrypto.subtle.verify(KEY_ALGORITHM, publicKey, signature, probe)))
      throw new PluggedCaInvalid(`--ca-key-file ${files.keyFile} is not the key of ${signing}`);
    return new WorkloadCa(trustDomain, new x509.X509Certificate(signer!.pem), key, {
      chain: chain.map((c) => c.pem),
      roots: roots.map((r) => r.pem).join(""),
    });
  }

  /** The root's private key as PKCS#8 PEM, to be kept where the replicas share it. */
  keyPem(): Promise<string> {
    return pkcs8Pem(this.key);
  }

  /** The roots a peer's chain must lead to. */
  get trustBundlePem(): string {
    return this.roots;
  }

  /** When the signer expires: no certificate it issues may outlive it. */
  get notAfter(): number {
    return this.signer.notAfter.getTime();
  }

  /**
   * A certificate for `spiffeId` on the key of `csrPem`, valid `lifetimeMs` from now (at most
   * until the signer expires), with the chain up to the root. Refuses a CSR that does not parse
   * or whose signature does not verify (the asker does not hold the key).
   */
  async issue(csrPem: string, spiffeId: string, lifetimeMs: number, now = Date.now()): Promise<string> {
    const csr = await verifiedCsr(csrPem);
    const leaf = await this.sign(csr.publicKey, lifetimeMs, now, "", [
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      // SPIFFE X.509-SVID: exactly one URI SAN, critical when the subject is empty.
      new x509.SubjectAlternativeNameExtension([{ type: "url", value: spiffeId }], true),
    ]);
    return [leaf, this.signer.toString("pem"), ...this.chain].map((pem) => `${pem.trim()}\n`).join("");
  }

  /**
   * A node certificate (the agent's TLS client certificate on the controller's stream) for the
   * CSR's key: `spiffeId` (nodeSpiffeId) as its URI, and in its subject the tag of the node
   * binding it was issued under (OU), so that it stops counting once that binding is released.
   */
  async issueNode(csrPem: string, spiffeId: string, bindingTag: string, lifetimeMs: number, now = Date.now()) {
    const csr = await verifiedCsr(csrPem);
    const node = spiffeId.slice(spiffeId.lastIndexOf("/") + 1);
    const leaf = await this.sign(csr.publicKey, lifetimeMs, now, `CN=${node}, OU=binding ${bindingTag}`, [
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth]),
      new x509.SubjectAlternativeNameExtension([{ type: "url", value: spiffeId }]),
    ]);
    return [leaf, ...this.intermediates()].map((pem) => `${pem.trim()}\n`).join("");
  }

  /** Whether this CA's signer issued `cert` (its signature, its issuer's name). */
  issued(cert: X509Certificate): boolean {
    this.signerX509 ??= new X509Certificate(this.signer.toString("pem"));
    return cert.checkIssued(this.signerX509) && cert.verify(this.signerX509.publicKey);
  }

  /**
   * A TLS server certificate for the controller itself (its agents' gRPC port) on `publicKey`,
   * naming `dnsNames` and `ipAddresses`, valid `lifetimeMs` from now: the leaf, then the
   * intermediates of a plugged CA (clients hold the root), PEM.
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
    const leaf = await this.sign(publicKey, lifetimeMs, now, `CN=nodemesh controller, O=${this.trustDomain}`, [
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension(sans),
    ]);
    return [leaf, ...this.intermediates()].map((pem) => `${pem.trim()}\n`).join("");
  }

  /**
   * What a TLS peer presents after its leaf: a plugged CA's intermediates; none for a root of our
   * own (the peer holds it, and a root in a presented chain only confuses its verification).
   */
  private intermediates(): string[] {
    return this.plugged ? [this.signer.toString("pem"), ...this.chain] : [];
  }

  /** A leaf on `publicKey` signed by the signer: the parts every certificate we issue shares. */
  private async sign(
    publicKey: x509.PublicKey | webcrypto.CryptoKey,
    lifetimeMs: number,
    now: number,
    subject: string,
    extensions: x509.Extension[],
  ): Promise<string> {
    const leaf = await x509.X509CertificateGenerator.create({
      subject,
      issuer: this.signer.subject,
      publicKey,
      signingKey: this.key,
      serialNumber: serial(),
      notBefore: new Date(now - CLOCK_SKEW_MS),
      notAfter: new Date(Math.min(now + lifetimeMs, this.notAfter)),
      signingAlgorithm: KEY_ALGORITHM,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyAgreement, true),
        ...extensions,
        await x509.AuthorityKeyIdentifierExtension.create(await this.signer.publicKey.export()),
      ],
    });
    return leaf.toString("pem");
  }
}

/** A CSR that parses and whose signature verifies (the asker holds the key), else CsrRefused. */
async function verifiedCsr(csrPem: string): Promise<x509.Pkcs10CertificateRequest> {
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(csrPem);
  } catch (err) {
    throw new CsrRefused(`the CSR does not parse: ${(err as Error).message}`);
  }
  if (!(await csr.verify())) throw new CsrRefused("the CSR's signature does not verify");
  return csr;
}

/** A positive 128-bit serial number, hex. */
function serial(): string {
  const bytes = webcrypto.getRandomValues(new Uint8Array(16));
  bytes[0]! &= 0x7f;
  return Buffer.from(bytes).toString("hex");
}
