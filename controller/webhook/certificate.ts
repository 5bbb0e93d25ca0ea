// The webhook's serving certificate: a private CA (its certificate becomes the webhook
// configuration's caBundle) and a leaf for the controller Service's DNS names. ECDSA P-256,
// Web Crypto keys, @peculiar/x509 for the X.509 encoding (Node can parse certificates, not make them).

import { webcrypto } from "node:crypto";
import { KEY_ALGORITHM as ALGORITHM, pkcs8Pem, x509 } from "../../api/x509.ts";

const DAY_MS = 24 * 3600 * 1000;

export interface WebhookCertificate {
  /** PEM of the CA certificate: what the API server trusts (caBundle). */
  caPem: string;
  /** PEM of the serving certificate, then the key (PKCS#8). */
  certPem: string;
  keyPem: string;
  notAfter: Date;
}

/** The names the API server uses to reach `service` in `namespace` (it dials <svc>.<ns>.svc). */
export function serviceDnsNames(service: string, namespace: string): string[] {
  return [`${service}.${namespace}.svc`, `${service}.${namespace}.svc.cluster.local`, `${service}.${namespace}`];
}

export async function issueWebhookCertificate(opts: {
  dnsNames: string[];
  /** Extra IP SANs (tests reach the webhook on 127.0.0.1). */
  ipAddresses?: string[];
  validityDays?: number;
  now?: Date;
}): Promise<WebhookCertificate> {
  const now = opts.now ?? new Date();
  const notBefore = new Date(now.getTime() - 5 * 60_000); // clock skew between nodes
  const notAfter = new Date(now.getTime() + (opts.validityDays ?? 365) * DAY_MS);
  const caKeys = await webcrypto.subtle.generateKey(ALGORITHM, true, ["sign", "verify"]);
  const ca = await x509.X509CertificateGenerator.createSelfSigned({
    name: "CN=nodemesh webhook CA",
    keys: caKeys,
    notBefore,
    notAfter,
    signingAlgorithm: ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(caKeys.publicKey),
    ],
  });
  const leafKeys = await webcrypto.subtle.generateKey(ALGORITHM, true, ["sign", "verify"]);
  const names = [
    ...opts.dnsNames.map((value) => ({ type: "dns" as const, value })),
    ...(opts.ipAddresses ?? []).map((value) => ({ type: "ip" as const, value })),
  ];
  const leaf = await x509.X509CertificateGenerator.create({
    subject: `CN=${opts.dnsNames[0] ?? "nodemesh-webhook"}`,
    issuer: ca.subject,
    publicKey: leafKeys.publicKey,
    signingKey: caKeys.privateKey,
    notBefore,
    notAfter,
    signingAlgorithm: ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension(names),
      await x509.AuthorityKeyIdentifierExtension.create(caKeys.publicKey),
    ],
  });
  return {
    caPem: ca.toString("pem"),
    certPem: leaf.toString("pem"),
    keyPem: await pkcs8Pem(leafKeys.privateKey),
    notAfter,
  };
}

/** When the certificate in `certPem` should be replaced: a third of its lifetime before it ends. */
export function renewalDue(certPem: string, now = new Date()): boolean {
  try {
    const cert = new x509.X509Certificate(certPem);
    const lifetime = cert.notAfter.getTime() - cert.notBefore.getTime();
    return now.getTime() > cert.notAfter.getTime() - lifetime / 3;
  } catch {
    return true; // unreadable: issue a new one
  }
}
