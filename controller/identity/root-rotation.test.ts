import { X509Certificate } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { generateKeys, KEY_ALGORITHM, x509 } from "../../api/x509.ts";
import { RotatingCa, RotationInProgress } from "./root-rotation.ts";

const LIFETIME_MS = 10_000;
const STEP_MS = LIFETIME_MS + 2_000;
const ID = "spiffe://cluster.local/ns/shop/sa/web";

let dir: string;
let open: RotatingCa[] = [];
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "nodemesh-ca-"));
  vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "Date"] });
});
afterEach(() => {
  for (const ca of open) ca.stop();
  open = [];
  vi.useRealTimers();
  rmSync(dir, { recursive: true, force: true });
});

async function openCa(): Promise<RotatingCa> {
  const ca = await RotatingCa.open("cluster.local", dir, LIFETIME_MS);
  open.push(ca);
  return ca;
}

async function csr(): Promise<string> {
  const keys = await generateKeys();
  return (
    await x509.Pkcs10CertificateRequestGenerator.create({ keys: keys as never, signingAlgorithm: KEY_ALGORITHM })
  ).toString("pem");
}

const roots = (bundle: string) =>
  bundle
    .split(/(?<=-----END CERTIFICATE-----)/)
    .filter((p) => p.includes("BEGIN"))
    .map((p) => new X509Certificate(p));

/** Which root of `bundle` signed a certificate issued now. */
async function signer(ca: RotatingCa): Promise<string> {
  const leaf = new X509Certificate(await ca.issue(await csr(), ID, LIFETIME_MS));
  const by = roots(ca.trustBundlePem).find((r) => leaf.verify(r.publicKey));
  return by?.fingerprint256 ?? "none";
}

describe("RotatingCa", () => {
  it("trusts the new root first, signs with it one step later, and drops the old one a step after", async () => {
    const ca = await openCa();
    const [old] = ca.status().roots;
    expect(ca.status()).toEqual({ roots: [old] });

    const started = await ca.rotate();
    expect(started.phase).toBe("trusting");
    expect(started.roots).toHaveLength(2);
    expect(started.roots[0]).toBe(old); // still signing with the old root
    const fresh = started.roots[1]!;
    expect(await signer(ca)).toBe(old);
    await expect(ca.rotate()).rejects.toBeInstanceOf(RotationInProgress);

    vi.advanceTimersByTime(STEP_MS);
    expect(ca.status()).toMatchObject({ phase: "signing", roots: [fresh, old] });
    expect(await signer(ca)).toBe(fresh);

    vi.advanceTimersByTime(STEP_MS);
    expect(ca.status()).toEqual({ roots: [fresh] });
    expect(new X509Certificate(readFileSync(join(dir, "ca.pem"))).fingerprint256).toBe(fresh);
    expect(existsSync(join(dir, "rotation.json"))).toBe(false);
    expect(existsSync(join(dir, "next"))).toBe(false);
  });

  it("resumes a rotation after a restart, with the same new root", async () => {
    const first = await openCa();
    const { roots } = await first.rotate();
    first.stop();
    const again = await openCa();
    expect(again.status()).toMatchObject({ phase: "trusting", roots });
    vi.advanceTimersByTime(STEP_MS);
    expect(again.status().phase).toBe("signing");
  });
});
