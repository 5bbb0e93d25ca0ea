// The workload certificates an agent holds: one per identity (namespace, service account) of the
// pods enrolled on this node, and no other. Each key is made here and never leaves the agent; the
// controller certifies it (CertificateRequest over the stream). A certificate is renewed at half
// its lifetime, so a controller unreachable for less than that costs nothing; one no pod needs is
// dropped. mTLS between agents (docs/security.md) presents these.
//
// Given a state dir, the certificates held are kept there (workload-certificates.json, 0600, as
// the node key beside it): a restarted agent's pods get mTLS from their first connection, before
// (or without) the controller stream, and ask for fresh ones as soon as it is up.

import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import type { Logger } from "pino";
import type { CertificateReply, CertificateRequest } from "../../api/agent-service.ts";
import { writeFileAtomic } from "../sys/files.ts";
import { type BackoffPolicy, backoffDelay } from "./backoff.ts";
import { usableLeaf } from "./leaf-certificate.ts";

export const KEPT_CERTIFICATES_FILE = "workload-certificates.json";

export interface IdentityKey {
  readonly namespace: string;
  readonly serviceAccount: string;
}

export interface HeldCertificate extends IdentityKey {
  readonly spiffeId: string;
  readonly chainPem: string;
  readonly trustBundlePem: string;
  /** The private key, PKCS#8 PEM, for the workers' TLS contexts. */
  readonly keyPem: string;
  readonly notAfter: number;
  /** When to ask for the next one: half-way through this one's life. */
  readonly renewAt: number;
  readonly renewals: number;
}

export interface WorkloadIdentitiesOptions {
  request(req: Omit<CertificateRequest, "requestId">): Promise<CertificateReply>;
  /**
   * Whether `request` can be answered now (the controller stream is up). While it cannot, nothing
   * is asked: call refresh() when it comes up.
   */
  connected(): boolean;
  /** The identities the node's enrolled pods have now. */
  wanted(): IdentityKey[];
  log: Logger;
  /** How often holdings are checked (default 1 s). */
  checkIntervalMs?: number;
  /** Where the certificates held are kept across restarts; none kept without it. */
  stateDir?: string;
}

/** What is kept of a held certificate. */
type KeptCertificate = Pick<HeldCertificate, "namespace" | "serviceAccount" | "chainPem" | "keyPem" | "trustBundlePem">;

const keyOf = (id: IdentityKey) => `${id.namespace}/${id.serviceAccount}`;

/** Between failed requests for one identity: 1 s, then up to a minute more. */
const CERTIFICATE_BACKOFF: BackoffPolicy = { initialMs: 500, maxMs: 60_000 };

/**
 * How long a first certificate counts as on its way while the controller stream is not up yet.
 * A restarted agent serves its pods before its stream is up (about 50 ms later here): their
 * tunnels wait for the certificate instead of leaving in plaintext, which STRICT would refuse.
 * A controller away for longer does not hold every new connection up.
 */
export const AWAIT_CONTROLLER_MS = 10_000;

export class WorkloadIdentities {
  private readonly held = new Map<string, HeldCertificate>();
  private readonly inFlight = new Set<string>();
  /** First certificates wanted while the controller stream is down: since when (AWAIT_CONTROLLER_MS). */
  private readonly awaitingController = new Map<string, number>();
  private readonly gaveUp = new Set<string>();
  /** Identities whose last request failed: how often in a row, and not before when to ask again. */
  private readonly failing = new Map<string, { failures: number; retryAt: number }>();
  private readonly opts: WorkloadIdentitiesOptions;
  private timer: NodeJS.Timeout | undefined;
  /** Called whenever the certificates held (a new one, a renewal, a drop) or pending() changed. */
  onChange: ((held: HeldCertificate[]) => void) | undefined;

  /** Certificates a previous agent kept, not wanted (yet) by a pod: taken when one is. */
  private readonly kept = new Map<string, HeldCertificate>();

  constructor(opts: WorkloadIdentitiesOptions) {
    this.opts = opts;
    for (const cert of this.readKept()) this.kept.set(keyOf(cert), cert);
  }

  start(): void {
    this.timer = setInterval(() => void this.refresh(), this.opts.checkIntervalMs ?? 1000);
    this.timer.unref();
    void this.refresh();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  list(): HeldCertificate[] {
    return [...this.held.values()];
  }

  /**
   * Identities wanted whose first certificate is being asked for, or waits for the controller
   * stream (for AWAIT_CONTROLLER_MS at most): the workers hold their tunnels for it.
   */
  pending(): string[] {
    const awaiting = [...this.awaitingController.keys()].filter((key) => !this.gaveUp.has(key));
    return [...new Set([...this.inFlight, ...awaiting])].filter((key) => !this.held.has(key));
  }

  get(namespace: string, serviceAccount: string): HeldCertificate | undefined {
    return this.held.get(keyOf({ namespace, serviceAccount }));
  }

  /** Asks for what is missing or due, drops what no pod needs. Call on every enrollment change too. */
  async refresh(now = Date.now()): Promise<void> {
    const wanted = new Map(this.opts.wanted().map((id) => [keyOf(id), id]));
    let dropped = false;
    for (const key of this.held.keys()) {
      if (!wanted.has(key)) dropped = this.held.delete(key);
    }
    let taken = false;
    for (const [key, cert] of this.kept) {
      if (now >= cert.notAfter) this.kept.delete(key);
      else if (wanted.has(key) && !this.held.has(key)) {
        // Served at once, and renewed as soon as the controller answers (its CA may have changed).
        this.held.set(key, { ...cert, renewAt: now });
        this.kept.delete(key);
        taken = true;
      }
    }
    if (dropped) this.writeKept();
    if (dropped || taken) this.onChange?.(this.list());
    for (const key of this.failing.keys()) if (!wanted.has(key)) this.failing.delete(key);
    const due = [...wanted].filter(([key]) => {
      const cert = this.held.get(key);
      const waiting = (this.failing.get(key)?.retryAt ?? 0) > now;
      return !this.inFlight.has(key) && !waiting && (!cert || now >= cert.renewAt);
    });
    if (!this.opts.connected()) {
      this.awaitController(new Set(due.filter(([key]) => !this.held.has(key)).map(([key]) => key)), now);
      return;
    }
    const before = this.pending().join();
    this.awaitingController.clear();
    this.gaveUp.clear();
    const obtained = due.map(([key, id]) => this.obtain(key, id));
    // A first certificate asked for is announced by obtain(); otherwise say that the wait ended.
    const announced = due.some(([key]) => !this.held.has(key));
    if (!announced && this.pending().join() !== before) this.onChange?.(this.list());
    await Promise.all(obtained);
  }

  /** Marks `firsts` as waiting for the controller, until it is up or AWAIT_CONTROLLER_MS passed. */
  private awaitController(firsts: Set<string>, now: number): void {
    const before = this.pending().join();
    for (const key of this.awaitingController.keys()) if (!firsts.has(key)) this.awaitingController.delete(key);
    for (const key of firsts) {
      const since = this.awaitingController.get(key);
      if (since === undefined) this.awaitingController.set(key, now);
      else if (now - since >= AWAIT_CONTROLLER_MS && !this.gaveUp.has(key)) {
        // The workers stop waiting: the pod's tunnels go on without it until the stream is up.
        this.gaveUp.add(key);
        this.opts.log.warn(
          { identity: key, waitedMs: now - since },
          "no workload certificate: the controller is not connected",
        );
      }
    }
    if (this.pending().join() !== before) this.onChange?.(this.list());
  }

  private async obtain(key: string, id: IdentityKey): Promise<void> {
    this.inFlight.add(key);
    // A first certificate on its way: said at once, before the pod's enrollment is answered.
    if (!this.held.has(key)) this.onChange?.(this.list());
    try {
      // Loaded on first use: an agent without a controller never pays for the X.509 library.
      const { generateKeys, KEY_ALGORITHM, pkcs8Pem, x509 } = await import("../../api/x509.ts");
      const keys = await generateKeys();
      const csr = await x509.Pkcs10CertificateRequestGenerator.create({
        keys: keys as never,
        signingAlgorithm: KEY_ALGORITHM,
      });
      const reply = await this.opts.request({ ...id, csrPem: csr.toString("pem") });
      const leaf = new x509.X509Certificate(reply.certChainPem);
      const issued = Date.now();
      const notAfter = leaf.notAfter.getTime();
      const previous = this.held.get(key);
      this.held.set(key, {
        ...id,
        spiffeId: leaf.getExtension(x509.SubjectAlternativeNameExtension)?.names.items[0]?.value ?? "",
        chainPem: reply.certChainPem,
        trustBundlePem: reply.trustBundlePem,
        keyPem: await pkcs8Pem(keys.privateKey),
        notAfter,
        renewAt: issued + (notAfter - issued) / 2,
        renewals: previous ? previous.renewals + 1 : 0,
      });
      this.failing.delete(key);
      this.writeKept();
      this.opts.log.debug({ identity: key, notAfter: new Date(notAfter).toISOString() }, "workload certificate");
      this.onChange?.(this.list());
    } catch (err) {
      // Asked again after a backoff (a controller that refuses, or is away, is not asked every second).
      const failures = (this.failing.get(key)?.failures ?? 0) + 1;
      const retryInMs = backoffDelay(failures - 1, CERTIFICATE_BACKOFF) + 1000;
      this.failing.set(key, { failures, retryAt: Date.now() + retryInMs });
      this.opts.log.warn({ identity: key, err: (err as Error).message, retryInMs }, "no workload certificate");
    } finally {
      this.inFlight.delete(key);
    }
    // Not pending any more, whichever way it went: tunnels waiting for it go on.
    if (!this.held.has(key)) this.onChange?.(this.list());
  }

  /** The held certificates, for the next agent (nothing without a state dir). */
  private writeKept(): void {
    if (!this.opts.stateDir) return;
    const file = join(this.opts.stateDir, KEPT_CERTIFICATES_FILE);
    const kept: KeptCertificate[] = this.list().map(
      ({ namespace, serviceAccount, chainPem, keyPem, trustBundlePem }) => ({
        namespace,
        serviceAccount,
        chainPem,
        keyPem,
        trustBundlePem,
      }),
    );
    try {
      if (kept.length === 0) rmSync(file, { force: true });
      else writeFileAtomic(file, `${JSON.stringify({ certificates: kept })}\n`);
    } catch (err) {
      this.opts.log.warn({ file, err: (err as Error).message }, "could not keep the workload certificates");
    }
  }

  /** What a previous agent kept: each in date, its key its own, else left out. */
  private readKept(now = Date.now()): HeldCertificate[] {
    if (!this.opts.stateDir) return [];
    const file = join(this.opts.stateDir, KEPT_CERTIFICATES_FILE);
    let certificates: KeptCertificate[];
    try {
      certificates = (JSON.parse(readFileSync(file, "utf8")) as { certificates: KeptCertificate[] }).certificates;
      if (!Array.isArray(certificates)) return [];
    } catch {
      return []; // none kept, or unreadable: asked for as usual
    }
    const out: HeldCertificate[] = [];
    for (const c of certificates) {
      if (typeof c?.namespace !== "string" || typeof c.serviceAccount !== "string") continue;
      if (typeof c.chainPem !== "string" || typeof c.keyPem !== "string" || typeof c.trustBundlePem !== "string")
        continue;
      const leaf = usableLeaf(c.chainPem, c.keyPem, now);
      if (!leaf) continue;
      const { namespace, serviceAccount, chainPem, keyPem, trustBundlePem } = c;
      out.push({
        namespace,
        serviceAccount,
        chainPem,
        keyPem,
        trustBundlePem,
        spiffeId: leaf.spiffeId,
        notAfter: leaf.notAfter,
        renewAt: now,
        renewals: 0,
      });
    }
    return out;
  }
}
