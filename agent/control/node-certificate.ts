// The agent's node certificate: once a stream is up (bootstrap token and node secret), the agent
// makes a key, asks the controller to certify it (CertificateRequest{node: true}) and keeps both in
// its state dir (node-cert.pem, node-key.pem 0600). Later streams present it as their TLS client
// certificate, and the controller needs no token from this node. Renewed at half-life; dropped
// when the controller refuses it (the node was released) or lets the stream in on the token
// instead (not of its CA any more), so the next stream bootstraps again.

import { createPrivateKey, X509Certificate } from "node:crypto";
import { readFileSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import type { Logger } from "pino";
import type { CertificateReply, CertificateRequest } from "../../api/agent-service.ts";
import { writeFileAtomic } from "../sys/files.ts";
import { usableLeaf } from "./leaf-certificate.ts";

export const NODE_CERT_FILE = "node-cert.pem";
export const NODE_KEY_FILE = "node-key.pem";

export interface HeldNodeCertificate {
  /** Leaf first. */
  readonly chainPem: string;
  readonly keyPem: string;
  /** The leaf's URI SAN: spiffe://<trust domain>/nodemesh/node/<node>. */
  readonly spiffeId: string;
  readonly notBefore: number;
  readonly notAfter: number;
  /** Half-way through its life, counted from when it came. */
  readonly renewAt: number;
}

/** After a failed request, the next one waits this long (a controller that refuses is not asked at every report). */
const RETRY_AFTER_FAILURE_MS = 30_000;

export class NodeCertificate {
  private readonly certFile: string;
  private readonly keyFile: string;
  private readonly log: Logger;
  private inFlight = false;
  private failedAt = Number.NEGATIVE_INFINITY;

  constructor(stateDir: string, log: Logger) {
    this.certFile = join(stateDir, NODE_CERT_FILE);
    this.keyFile = join(stateDir, NODE_KEY_FILE);
    this.log = log;
  }

  /** The certificate held, if it is in date now and the key beside it is its own. */
  current(now = Date.now()): HeldNodeCertificate | undefined {
    let chainPem: string;
    let keyPem: string;
    let receivedAt: number;
    try {
      chainPem = readFileSync(this.certFile, "utf8");
      keyPem = readFileSync(this.keyFile, "utf8");
      receivedAt = statSync(this.certFile).mtimeMs;
    } catch {
      return undefined;
    }
    const leaf = usableLeaf(chainPem, keyPem, now);
    if (!leaf) return undefined;
    const { spiffeId, notBefore, notAfter } = leaf;
    // The controller dates certificates back for clock skew: half-life counts from when it came.
    const issued = Math.min(Math.max(notBefore, receivedAt), notAfter);
    return { chainPem, keyPem, spiffeId, notBefore, notAfter, renewAt: issued + (notAfter - issued) / 2 };
  }

  /** None held, or past half its life. */
  due(now = Date.now()): boolean {
    const held = this.current(now);
    return !held || now >= held.renewAt;
  }

  /**
   * Asks for one (or a renewal) when due; failures are logged and retried on a later call (not
   * before RETRY_AFTER_FAILURE_MS). What is held is replaced only by a certificate for the new key.
   */
  async refresh(request: (req: Omit<CertificateRequest, "requestId">) => Promise<CertificateReply>): Promise<void> {
    const now = Date.now();
    if (this.inFlight || now - this.failedAt < RETRY_AFTER_FAILURE_MS || !this.due(now)) return;
    this.inFlight = true;
    try {
      const { generateKeys, KEY_ALGORITHM, pkcs8Pem, x509 } = await import("../../api/x509.ts");
      const keys = await generateKeys();
      const csr = await x509.Pkcs10CertificateRequestGenerator.create({
        keys: keys as never,
        signingAlgorithm: KEY_ALGORITHM,
      });
      const reply = await request({ namespace: "", serviceAccount: "", csrPem: csr.toString("pem"), node: true });
      if (reply.error) throw new Error(reply.error);
      const keyPem = await pkcs8Pem(keys.privateKey);
      const leaf = new X509Certificate(reply.certChainPem);
      if (!leaf.checkPrivateKey(createPrivateKey(keyPem))) throw new Error("the certificate is not for the key sent");
      // The key first: a certificate without its key would be presented to no avail.
      writeFileAtomic(this.keyFile, keyPem);
      writeFileAtomic(this.certFile, reply.certChainPem);
      this.failedAt = Number.NEGATIVE_INFINITY;
      this.log.info({ spiffeId: leaf.subjectAltName, notAfter: leaf.validTo }, "node certificate held");
    } catch (err) {
      this.failedAt = Date.now();
      this.log.warn({ err: (err as Error).message }, "no node certificate yet");
    } finally {
      this.inFlight = false;
    }
  }

  /** The controller refused it, or did not take it: forget it, so the next stream bootstraps with the token. */
  discard(): void {
    rmSync(this.certFile, { force: true });
    rmSync(this.keyFile, { force: true });
  }
}
