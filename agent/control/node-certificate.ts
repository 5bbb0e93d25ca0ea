// The agent's node certificate: once a stream is up (bootstrap token and node secret), the agent
// makes a key, asks the controller to certify it (CertificateRequest{node: true}) and keeps both in
// its state dir (node-cert.pem, node-key.pem 0600). Later streams present it as their TLS client
// certificate, and the controller needs no token from this node. Renewed at half-life; dropped
// when the controller refuses it (the node was released), so the next stream bootstraps again.

import { X509Certificate } from "node:crypto";
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import type { Logger } from "pino";
import type { CertificateReply, CertificateRequest } from "../../api/agent-service.ts";
import { writeFileAtomic } from "../sys/files.ts";

export const NODE_CERT_FILE = "node-cert.pem";
export const NODE_KEY_FILE = "node-key.pem";

export interface HeldNodeCertificate {
  /** Leaf first. */
  readonly chainPem: string;
  readonly keyPem: string;
  readonly notBefore: number;
  readonly notAfter: number;
}

export class NodeCertificate {
  private readonly certFile: string;
  private readonly keyFile: string;
  private readonly log: Logger;
  private inFlight = false;

  constructor(stateDir: string, log: Logger) {
    this.certFile = join(stateDir, NODE_CERT_FILE);
    this.keyFile = join(stateDir, NODE_KEY_FILE);
    this.log = log;
  }

  /** The certificate held, if it is in date now. */
  current(now = Date.now()): HeldNodeCertificate | undefined {
    let chainPem: string;
    let keyPem: string;
    try {
      chainPem = readFileSync(this.certFile, "utf8");
      keyPem = readFileSync(this.keyFile, "utf8");
    } catch {
      return undefined;
    }
    try {
      const leaf = new X509Certificate(chainPem);
      const held = { chainPem, keyPem, notBefore: Date.parse(leaf.validFrom), notAfter: Date.parse(leaf.validTo) };
      return now >= held.notBefore && now < held.notAfter ? held : undefined;
    } catch {
      return undefined;
    }
  }

  /** None held, or past half its life. */
  due(now = Date.now()): boolean {
    const held = this.current(now);
    return !held || now >= held.notBefore + (held.notAfter - held.notBefore) / 2;
  }

  /** Asks for one (or a renewal) when due; failures are logged and retried on a later call. */
  async refresh(request: (req: Omit<CertificateRequest, "requestId">) => Promise<CertificateReply>): Promise<void> {
    if (this.inFlight || !this.due()) return;
    this.inFlight = true;
    try {
      const { generateKeys, KEY_ALGORITHM, pkcs8Pem, x509 } = await import("../../api/x509.ts");
      const keys = await generateKeys();
      const csr = await x509.Pkcs10CertificateRequestGenerator.create({
        keys: keys as never,
        signingAlgorithm: KEY_ALGORITHM,
      });
      const reply = await request({ namespace: "", serviceAccount: "", csrPem: csr.toString("pem"), node: true });
      // The key first: a certificate without its key would be presented to no avail.
      writeFileAtomic(this.keyFile, await pkcs8Pem(keys.privateKey));
      writeFileAtomic(this.certFile, reply.certChainPem);
      this.log.info({ notAfter: new X509Certificate(reply.certChainPem).validTo }, "node certificate held");
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, "no node certificate yet");
    } finally {
      this.inFlight = false;
    }
  }

  /** The controller refused it: forget it, so the next stream bootstraps with the token. */
  discard(): void {
    rmSync(this.certFile, { force: true });
    rmSync(this.keyFile, { force: true });
  }
}
