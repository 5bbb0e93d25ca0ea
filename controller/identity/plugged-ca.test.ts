// A plugged CA (the user's intermediate, made here with the openssl CLI as an operator would):
// workload and server certificates chain through it to the user's root (openssl verify agrees),
// each bad input is refused naming the flag and the file, and root rotation is left to the PKI.
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { splitPem } from "../../api/pem.ts";
import { generateKeys, KEY_ALGORITHM, spiffeId, x509 } from "../../api/x509.ts";
import { makePki, opensslVerify, type Pki } from "../../test/pki/openssl-pki.ts";
import { RotatingCa, RotationRefused } from "./root-rotation.ts";
import { PluggedCaInvalid, WorkloadCa } from "./workload-ca.ts";

let pki: Pki;
let other: Pki;
beforeAll(() => {
  pki = makePki("Example");
  other = makePki("Other");
});
afterAll(() => {
  pki.remove();
  other.remove();
});

const files = () => ({ certFile: pki.caCert, keyFile: pki.caKey, rootFile: pki.rootCert });

async function csr(): Promise<string> {
  const keys = await generateKeys();
  const req = await x509.Pkcs10CertificateRequestGenerator.create({
    keys: keys as never,
    signingAlgorithm: KEY_ALGORITHM,
  });
  return req.toString("pem");
}

describe("a plugged CA", () => {
  it("signs workload certificates that chain through the intermediate to the user's root", async () => {
    const ca = await WorkloadCa.plugged("cluster.local", files());
    expect(ca.plugged).toBe(true);
    expect(ca.trustBundlePem.trim()).toBe(readFileSync(pki.rootCert, "utf8").trim());
    const chain = splitPem(await ca.issue(await csr(), spiffeId("cluster.local", "shop", "web"), 60_000));
    expect(chain).toHaveLength(2); // the leaf, then the intermediate
    const leaf = join(pki.dir, "issued-leaf.pem");
    writeFileSync(leaf, chain[0]!);
    expect(opensslVerify(pki.rootCert, pki.caCert, leaf)).toContain(": OK");
    // The controller's serving certificate too: the leaf and the intermediate (agents hold the root).
    const keys = await generateKeys();
    const server = splitPem(
      await ca.issueServer(keys.publicKey, { dnsNames: ["controller"], ipAddresses: [] }, 60_000),
    );
    expect(server).toHaveLength(2);
    writeFileSync(leaf, server[0]!);
    expect(opensslVerify(pki.rootCert, pki.caCert, leaf)).toContain(": OK");
  });

  it("refuses each bad input, naming the flag and the file", async () => {
    const bad = async (f: Parameters<typeof WorkloadCa.plugged>[1]) =>
      WorkloadCa.plugged("cluster.local", f).then(
        () => "accepted",
        (err: Error) => (err instanceof PluggedCaInvalid ? err.message : `unexpected: ${err.message}`),
      );
    // Under the test's own directory: a fixed path such as /nonexistent may exist (nobody's home).
    const missing = join(pki.dir, "missing", "ca.pem");
    expect(await bad({ ...files(), certFile: missing })).toMatch(new RegExp(`^--ca-cert-file ${missing}: ENOENT`));
    expect(await bad({ ...files(), certFile: pki.caKey })).toMatch(
      /^--ca-cert-file .*ca.key: no PEM certificate in it$/,
    );
    expect(await bad({ ...files(), certFile: pki.leafCert, keyFile: pki.leafKey })).toMatch(
      /^--ca-cert-file .*leaf.pem: not a CA certificate/,
    );
    expect(await bad({ ...files(), keyFile: pki.rootKey })).toMatch(
      /^--ca-key-file .*root.key is not the key of --ca-cert-file/,
    );
    expect(await bad({ ...files(), keyFile: pki.caCert })).toMatch(
      /^--ca-key-file .*: not an ECDSA P-256 private key in PKCS#8 PEM/,
    );
    expect(await bad({ ...files(), rootFile: other.rootCert })).toMatch(
      /the chain from --ca-cert-file does not lead to --ca-root-file .*\(an intermediate between them goes in --ca-chain-file\)/,
    );
    // An RSA key is not one nodemesh signs with.
    const rsa = join(pki.dir, "rsa.key");
    execFileSync("openssl", ["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", rsa]);
    expect(await bad({ ...files(), keyFile: rsa })).toMatch(/^--ca-key-file .*rsa.key: not an ECDSA P-256 private key/);
  });

  it("takes the certificates between the intermediate and the root from --ca-chain-file", async () => {
    const deep = { certFile: pki.deepCaCert, keyFile: pki.deepCaKey, rootFile: pki.rootCert };
    await expect(WorkloadCa.plugged("cluster.local", deep)).rejects.toThrow(/goes in --ca-chain-file/);
    await expect(WorkloadCa.plugged("cluster.local", { ...deep, chainFile: other.rootCert })).rejects.toThrow(
      /--ca-chain-file .*: O=Example, CN=Example nodemesh deep intermediate is not signed by the next certificate/,
    );
    const ca = await WorkloadCa.plugged("cluster.local", { ...deep, chainFile: pki.midCert });
    const chain = splitPem(await ca.issue(await csr(), spiffeId("cluster.local", "shop", "web"), 60_000));
    expect(chain).toHaveLength(3); // the leaf, the intermediate, the chain file's
    const leaf = join(pki.dir, "deep-leaf.pem");
    const untrusted = join(pki.dir, "deep-untrusted.pem");
    writeFileSync(leaf, chain[0]!);
    writeFileSync(untrusted, chain.slice(1).join(""));
    expect(opensslVerify(pki.rootCert, untrusted, leaf)).toContain(": OK");
  });

  it("is never rotated by nodemesh: the user rotates it in the PKI", async () => {
    const ca = await RotatingCa.open(
      "cluster.local",
      undefined,
      60_000,
      () => {},
      await WorkloadCa.plugged("cluster.local", files()),
    );
    await expect(ca.rotate()).rejects.toThrow(RotationRefused);
    await expect(ca.rotate()).rejects.toThrow(/rotate it in your PKI, replace the files/);
    ca.stop();
  });
});
