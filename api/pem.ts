// PEM bundles (trust bundles, certificate chains) split into their certificates. Kept apart from
// api/x509.ts, which loads @peculiar/x509: the agent's data-plane workers need only this.

const CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** Every certificate of `pem`, in order, each as its own PEM block ending in a newline. */
export function splitPem(pem: string): string[] {
  return (pem.match(CERTIFICATE) ?? []).map((block) => `${block}\n`);
}
