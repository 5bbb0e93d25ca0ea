// A user's PKI made with the openssl CLI, as an operator would make the files for a plugged CA
// (Istio's "plug-in CA certificates"): a root, an intermediate that may sign, their keys (ECDSA
// P-256, PKCS#8 PEM, openssl genpkey's default). Tests use it against WorkloadCa.plugged.

import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface Pki {
  dir: string;
  rootCert: string;
  rootKey: string;
  /** An intermediate (CA:TRUE, keyCertSign) signed by the root. */
  caCert: string;
  caKey: string;
  /** A deeper chain: root → midCert → deepCaCert, the latter signing (its key deepCaKey). */
  midCert: string;
  deepCaCert: string;
  deepCaKey: string;
  /** A leaf (CA:FALSE) signed by the intermediate: not a CA. */
  leafCert: string;
  leafKey: string;
  remove(): void;
}

const openssl = (args: string[]) => execFileSync("openssl", args, { stdio: ["ignore", "pipe", "pipe"] });

export function ecKey(file: string): string {
  openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", file]);
  return file;
}

/** A PKI in a new temporary directory; `name` tells two apart. */
export function makePki(name = "Example"): Pki {
  const dir = mkdtempSync(join(tmpdir(), "nodemesh-pki-"));
  const f = (n: string) => join(dir, n);
  const ext = f("ext.cnf");
  writeFileSync(
    ext,
    "[ca]\nbasicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n" +
      "[mid]\nbasicConstraints=critical,CA:TRUE,pathlen:1\nkeyUsage=critical,keyCertSign,cRLSign\n" +
      "[leaf]\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n",
  );
  ecKey(f("root.key"));
  openssl([
    "req",
    "-x509",
    "-new",
    "-key",
    f("root.key"),
    "-subj",
    `/O=${name}/CN=${name} Root CA`,
    "-days",
    "30",
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
    "-out",
    f("root.pem"),
  ]);
  const signed = (key: string, subject: string, issuer: string, issuerKey: string, section: string, out: string) => {
    openssl(["req", "-new", "-key", key, "-subj", subject, "-out", f("req.csr")]);
    openssl([
      "x509",
      "-req",
      "-in",
      f("req.csr"),
      "-CA",
      issuer,
      "-CAkey",
      issuerKey,
      "-set_serial",
      String(Date.now()),
      "-days",
      "10",
      "-extfile",
      ext,
      "-extensions",
      section,
      "-out",
      out,
    ]);
  };
  ecKey(f("ca.key"));
  signed(f("ca.key"), `/O=${name}/CN=${name} nodemesh intermediate`, f("root.pem"), f("root.key"), "ca", f("ca.pem"));
  ecKey(f("mid.key"));
  signed(f("mid.key"), `/O=${name}/CN=${name} issuing CA`, f("root.pem"), f("root.key"), "mid", f("mid.pem"));
  ecKey(f("deep.key"));
  signed(
    f("deep.key"),
    `/O=${name}/CN=${name} nodemesh deep intermediate`,
    f("mid.pem"),
    f("mid.key"),
    "ca",
    f("deep.pem"),
  );
  ecKey(f("leaf.key"));
  signed(f("leaf.key"), `/O=${name}/CN=not a CA`, f("ca.pem"), f("ca.key"), "leaf", f("leaf.pem"));
  return {
    dir,
    rootCert: f("root.pem"),
    rootKey: f("root.key"),
    caCert: f("ca.pem"),
    caKey: f("ca.key"),
    midCert: f("mid.pem"),
    deepCaCert: f("deep.pem"),
    deepCaKey: f("deep.key"),
    leafCert: f("leaf.pem"),
    leafKey: f("leaf.key"),
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** `openssl verify` of a certificate against a root, with intermediates: its output, or throws. */
export function opensslVerify(rootFile: string, untrusted: string, certFile: string): string {
  return openssl(["verify", "-CAfile", rootFile, "-untrusted", untrusted, certFile]).toString();
}
