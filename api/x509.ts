// X.509 for nodemesh (the webhook's serving certificate, workload identities): @peculiar/x509 over
// Node's Web Crypto, ECDSA P-256 keys. Imported from here only, so the library's set-up (its
// reflect polyfill and crypto provider) happens once.

import "reflect-metadata";
import { webcrypto } from "node:crypto";
import * as x509 from "@peculiar/x509";

// Node's Web Crypto is the standard one; the library types it with the DOM's `Crypto`, absent from our libs.
x509.cryptoProvider.set(webcrypto as never);

export { x509 };

export const KEY_ALGORITHM = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };

export function generateKeys(): Promise<webcrypto.CryptoKeyPair> {
  return webcrypto.subtle.generateKey(KEY_ALGORITHM, true, ["sign", "verify"]) as Promise<webcrypto.CryptoKeyPair>;
}

export async function pkcs8Pem(key: webcrypto.CryptoKey): Promise<string> {
  return x509.PemConverter.encode(await webcrypto.subtle.exportKey("pkcs8", key), "PRIVATE KEY");
}

export function importPkcs8Pem(pem: string): Promise<webcrypto.CryptoKey> {
  const der = x509.PemConverter.decodeFirst(pem);
  return webcrypto.subtle.importKey("pkcs8", der, KEY_ALGORITHM, true, ["sign"]);
}

/** A workload identity as SPIFFE names it. */
export function spiffeId(trustDomain: string, namespace: string, serviceAccount: string): string {
  return `spiffe://${trustDomain}/ns/${namespace}/sa/${serviceAccount}`;
}

/**
 * A node's identity (its agent's client certificate on the controller's stream). Not of the
 * workload form (ns/…/sa/…): a node certificate can never pass for a workload on a tunnel.
 */
export function nodeSpiffeId(trustDomain: string, node: string): string {
  return `spiffe://${trustDomain}/nodemesh/node/${node}`;
}
