// Replacing the workload CA's root without a failed connection: an overlap in which both roots
// are trusted, in three steps spaced one certificate lifetime (plus a margin) apart, so that every
// agent has renewed its certificates (at half-life) before the next step relies on it:
//
//   trusting   a new root is made; certificates are still signed by the old one, but every
//              certificate issued now comes with both roots as its trust bundle;
//   signing    certificates are signed by the new root; both stay trusted (peers still hold
//              certificates of the old one);
//   (done)     the old root is dropped from the bundle; the new one is the root.
//
// The new root waits in `<dir>/next/` (ca.pem, ca-key.pem) and the step in `<dir>/rotation.json`,
// so a controller restarted mid-rotation resumes it; at the end the new root replaces ca.pem.

import { X509Certificate } from "node:crypto";
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { splitPem } from "../../api/pem.ts";
import { WorkloadCa } from "./workload-ca.ts";

export type RotationPhase = "trusting" | "signing";

export interface RotationStatus {
  /** Absent: no rotation under way. */
  phase?: RotationPhase;
  /** When the next step is due (ISO time). */
  nextStepAt?: string;
  /** The roots a certificate issued now is trusted by, the signing one first. */
  roots: string[];
}

export class RotationInProgress extends Error {}

/** A rotation nodemesh cannot make: the root is not its own (a plugged CA), or not only its own. */
export class RotationRefused extends Error {}

/** Time added to a certificate lifetime before the next step: a renewal's retries, clock skew. */
const MARGIN_MS = 2_000;

interface Persisted {
  phase: RotationPhase;
  nextStepAt: number;
}

export class RotatingCa {
  readonly trustDomain: string;
  #current: WorkloadCa;
  #next: WorkloadCa | undefined;
  #phase: RotationPhase | undefined;
  #nextStepAt = 0;
  #timer: NodeJS.Timeout | undefined;
  readonly #dir: string | undefined;
  readonly #stepMs: number;
  readonly #onStep: (status: RotationStatus) => void;

  private constructor(
    current: WorkloadCa,
    dir: string | undefined,
    stepMs: number,
    onStep: (status: RotationStatus) => void,
  ) {
    this.trustDomain = current.trustDomain;
    this.#current = current;
    this.#dir = dir;
    this.#stepMs = stepMs;
    this.#onStep = onStep;
  }

  /**
   * `lifetimeMs`: of workload certificates; the steps are that far apart (plus a margin). `root`:
   * the root in place when it is not kept in `dir` (Kubernetes mode).
   */
  static async open(
    trustDomain: string,
    dir: string | undefined,
    lifetimeMs: number,
    onStep: (status: RotationStatus) => void = () => {},
    root?: WorkloadCa,
  ): Promise<RotatingCa> {
    const current = root ?? (await WorkloadCa.open(trustDomain, dir));
    const ca = new RotatingCa(current, dir, lifetimeMs + MARGIN_MS, onStep);
    const saved =
      dir && existsSync(join(dir, "rotation.json"))
        ? (JSON.parse(readFileSync(join(dir, "rotation.json"), "utf8")) as Persisted)
        : undefined;
    if (saved && dir) {
      ca.#next = await WorkloadCa.open(trustDomain, join(dir, "next"));
      ca.#phase = saved.phase;
      ca.#schedule(saved.nextStepAt);
    }
    return ca;
  }

  /**
   * The root in place before any rotation under way (ca.pem): what the controller's own serving
   * certificate is signed by, since agents were given that root as a file.
   */
  get current(): WorkloadCa {
    return this.#current;
  }

  get #signer(): WorkloadCa {
    return this.#phase === "signing" && this.#next ? this.#next : this.#current;
  }

  issue(csrPem: string, spiffeId: string, lifetimeMs: number): Promise<string> {
    return this.#signer.issue(csrPem, spiffeId, lifetimeMs);
  }
  issueNode(csrPem: string, spiffeId: string, bindingTag: string, lifetimeMs: number): Promise<string> {
    return this.#signer.issueNode(csrPem, spiffeId, bindingTag, lifetimeMs);
  }

  /** Whether a root in force (or the next one, during a rotation) issued `cert`. */
  issued(cert: X509Certificate): boolean {
    return this.#current.issued(cert) || (this.#next?.issued(cert) ?? false);
  }

  /** Every root a peer's chain may lead to now: the signing one first. */
  get trustBundlePem(): string {
    const roots = this.#next
      ? [this.#signer, this.#signer === this.#next ? this.#current : this.#next]
      : [this.#current];
    // One PEM block per line group: OpenSSL reads no further than a block glued to the next.
    return roots.map((r) => `${r.trustBundlePem.trim()}\n`).join("");
  }

  status(): RotationStatus {
    const roots = splitPem(this.trustBundlePem);
    return {
      ...(this.#phase ? { phase: this.#phase, nextStepAt: new Date(this.#nextStepAt).toISOString() } : {}),
      // SHA-256 fingerprints, as `openssl x509 -fingerprint -sha256` prints them.
      roots: roots.map((pem) => new X509Certificate(pem).fingerprint256),
    };
  }

  /** Starts a rotation: a new root, trusted at once, signing one step later. */
  async rotate(): Promise<RotationStatus> {
    if (this.#phase) throw new RotationInProgress(`a rotation is under way (${this.#phase})`);
    if (this.#current.plugged) {
      throw new RotationRefused(
        "the CA is the user's (--ca-cert-file): rotate it in your PKI, replace the files (a new root goes beside the old one in --ca-root-file for the overlap) and restart the controller",
      );
    }
    const nextDir = this.#dir && join(this.#dir, "next");
    if (nextDir) {
      rmSync(nextDir, { recursive: true, force: true });
      mkdirSync(nextDir, { recursive: true, mode: 0o700 });
    }
    this.#next = await WorkloadCa.open(this.trustDomain, nextDir);
    this.#phase = "trusting";
    this.#schedule(Date.now() + this.#stepMs);
    return this.status();
  }

  #schedule(at: number): void {
    this.#nextStepAt = at;
    if (this.#dir && this.#phase) {
      const saved: Persisted = { phase: this.#phase, nextStepAt: at };
      writeFileSync(join(this.#dir, "rotation.json"), JSON.stringify(saved));
    }
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.#step(), Math.max(0, at - Date.now()));
    this.#timer.unref();
  }

  #step(): void {
    if (this.#phase === "trusting") {
      this.#phase = "signing";
      this.#schedule(Date.now() + this.#stepMs);
    } else if (this.#phase === "signing" && this.#next) {
      // Every certificate now in use was signed by the new root: the old one can go.
      if (this.#dir) {
        for (const file of ["ca-key.pem", "ca.pem"]) copyFileSync(join(this.#dir, "next", file), join(this.#dir, file));
        rmSync(join(this.#dir, "rotation.json"), { force: true });
        rmSync(join(this.#dir, "next"), { recursive: true, force: true });
      }
      this.#current = this.#next;
      this.#next = undefined;
      this.#phase = undefined;
    }
    this.#onStep(this.status());
  }

  stop(): void {
    clearTimeout(this.#timer);
  }
}
