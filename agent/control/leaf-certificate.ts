// A certificate chain and its key as an agent keeps them on disk (node-certificate.ts,
// identities.ts): usable only when the leaf is in date and the key is its own (the two are
// written one after the other, so a crash between them leaves a pair that cannot be used).

import { createPrivateKey, X509Certificate } from "node:crypto";

export interface UsableLeaf {
  /** The leaf's URI SAN (a SPIFFE id). */
  readonly spiffeId: string;
  readonly notBefore: number;
  readonly notAfter: number;
}

/** The leaf of `chainPem`, if it is in date at `now` and `keyPem` is its key; else undefined. */
export function usableLeaf(chainPem: string, keyPem: string, now: number): UsableLeaf | undefined {
  try {
    const leaf = new X509Certificate(chainPem);
    if (!leaf.checkPrivateKey(createPrivateKey(keyPem))) return undefined;
    const notBefore = Date.parse(leaf.validFrom);
    const notAfter = Date.parse(leaf.validTo);
    if (now < notBefore || now >= notAfter) return undefined;
    return { spiffeId: leaf.subjectAltName?.replace(/^URI:/, "") ?? "", notBefore, notAfter };
  } catch {
    return undefined; // not a certificate, or not a key
  }
}
