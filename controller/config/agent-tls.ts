// TLS on the agents' gRPC port (docs/security.md, "Controller gRPC (agents)"): the controller's
// server certificate, issued by its own workload CA (the root agents are given with
// --controller-ca-file), for the names agents dial it by, and renewed at half-life. grpc-js takes
// each renewal through its certificate-provider credentials (the server swaps its TLS context;
// open streams keep theirs).
//
// Pure parts: whether the port serves TLS (`agentTlsMode`) and which names the certificate holds
// (`serverNames`); the rest is the provider.

import { isIP } from "node:net";
import { experimental, type ServerCredentials } from "@grpc/grpc-js";
import type { Logger } from "pino";
import { generateKeys, pkcs8Pem } from "../../api/x509.ts";
import { isLoopbackHost } from "../auth.ts";
import type { WorkloadCa } from "../identity/workload-ca.ts";

/** `--grpc-tls`: auto serves TLS unless the gRPC address is loopback. */
export type GrpcTlsSetting = "auto" | "on" | "off";

/** Server certificates live 30 days and are renewed at half-life. */
export const DEFAULT_SERVER_CERT_LIFETIME_MS = 30 * 24 * 3600_000;
/** After a failed renewal, the next try. */
const RETRY_MS = 60_000;
/** Node's timers hold at most 2^31-1 ms (24.8 days). */
const MAX_TIMER_MS = 2 ** 31 - 1;

export function parseGrpcTls(value: string): GrpcTlsSetting {
  if (value !== "auto" && value !== "on" && value !== "off") {
    throw new Error(`--grpc-tls must be auto, on or off, got "${value}"`);
  }
  return value;
}

/** Whether the agents' port serves TLS: `auto` keeps plaintext only on a loopback address. */
export function agentTlsEnabled(setting: GrpcTlsSetting, host: string): boolean {
  return setting === "on" || (setting === "auto" && !isLoopbackHost(host));
}

const DNS_NAME = /^(\*\.)?[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$/i;

/** `--tls-san` values (repeatable, each a comma-separated list): DNS names or IP addresses. */
export function parseTlsSans(values: string[]): string[] {
  const names = values.flatMap((v) => v.split(",")).map((n) => n.trim());
  for (const name of names) {
    if (!isIP(name) && !(DNS_NAME.test(name) && name.length <= 253)) {
      throw new Error(`--tls-san must list DNS names or IP addresses separated by commas, got "${name}"`);
    }
  }
  return names;
}

export interface ServerNames {
  dnsNames: string[];
  ipAddresses: string[];
}

/**
 * The names of the controller's server certificate: localhost and 127.0.0.1, the listen address
 * (on a wildcard address 0.0.0.0 or ::, every address of the host's interfaces of that family,
 * and the host name), and the operator's `--tls-san` names. Each name once, in that order.
 */
export function serverNames(opts: {
  listenHost: string;
  extra: string[];
  /** The host's interface addresses (os.networkInterfaces()), used for a wildcard listen address. */
  interfaceAddresses: string[];
  hostname: string;
}): ServerNames {
  const all: string[] = ["localhost", "127.0.0.1"];
  const wildcard = opts.listenHost === "0.0.0.0" || opts.listenHost === "::" || opts.listenHost === "";
  if (wildcard) {
    const family = opts.listenHost === "0.0.0.0" ? 4 : undefined; // :: also accepts IPv4
    all.push(...opts.interfaceAddresses.filter((a) => isIP(a) !== 0 && (family === undefined || isIP(a) === family)));
    if (DNS_NAME.test(opts.hostname)) all.push(opts.hostname);
  } else {
    all.push(opts.listenHost);
  }
  all.push(...opts.extra);
  const unique = [...new Set(all.map((n) => (isIP(n) ? n : n.toLowerCase())))];
  return {
    dnsNames: unique.filter((n) => isIP(n) === 0),
    ipAddresses: unique.filter((n) => isIP(n) !== 0),
  };
}

/** When to renew a certificate valid from `notBefore` to `notAfter`: at half of its life. */
export function renewalDelayMs(notBefore: number, notAfter: number, now: number): number {
  return Math.min(MAX_TIMER_MS, Math.max(0, notBefore + (notAfter - notBefore) / 2 - now));
}

type IdentityListener = experimental.IdentityCertificateUpdateListener;

/**
 * The controller's server certificate as a grpc-js certificate provider: a fresh key and
 * certificate at start and at each half-life. The key never leaves the process.
 */
export class ServerCertificate implements experimental.CertificateProvider {
  private readonly listeners = new Set<IdentityListener>();
  private latest: experimental.IdentityCertificateUpdate | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  /** The certificate in force, PEM (for logs and tests). */
  certificatePem = "";
  /** Certificates issued so far, the first included. */
  issued = 0;
  /** What client certificates (node certificates) are verified against: grpc-js's listeners, the roots. */
  private readonly clientRootListeners = new Set<experimental.CaCertificateUpdateListener>();
  private clientRoots: (() => string) | undefined;
  private clientRootsGiven = "";

  /** Asked at each renewal: a root rotation changes the root that signs. */
  private readonly ca: () => WorkloadCa;
  private readonly names: ServerNames;
  private readonly lifetimeMs: number;
  private readonly log: Logger;

  private constructor(ca: () => WorkloadCa, names: ServerNames, lifetimeMs: number, log: Logger) {
    this.ca = ca;
    this.names = names;
    this.lifetimeMs = lifetimeMs;
    this.log = log;
  }

  /** Issues the first certificate; renewals follow on their own until `stop`. */
  static async start(opts: {
    ca: WorkloadCa | (() => WorkloadCa);
    names: ServerNames;
    lifetimeMs?: number;
    log: Logger;
  }): Promise<ServerCertificate> {
    const ca = opts.ca;
    const provider = new ServerCertificate(
      typeof ca === "function" ? ca : () => ca,
      opts.names,
      opts.lifetimeMs ?? DEFAULT_SERVER_CERT_LIFETIME_MS,
      opts.log,
    );
    await provider.renew();
    return provider;
  }

  /**
   * Server credentials that follow this provider's renewals. Client certificates are asked for
   * (an agent's node certificate) but not required (a bootstrapping agent has a token instead).
   * grpc-js verifies a presented one against `rootsPem` (chain and dates; its handlers see only a
   * certificate that passed, call.getAuthContext()), and the agent server checks the rest itself.
   * `clientRootsChanged()` gives grpc-js the roots again when they change (a root rotation).
   */
  credentials(rootsPem: () => string): ServerCredentials {
    this.clientRoots = rootsPem;
    const clientRoots: experimental.CertificateProvider = {
      addCaCertificateListener: (listener) => {
        this.clientRootListeners.add(listener);
        this.clientRootsGiven = rootsPem();
        const caCertificate = Buffer.from(this.clientRootsGiven);
        process.nextTick(() => listener({ caCertificate }));
      },
      removeCaCertificateListener: (listener) => {
        this.clientRootListeners.delete(listener);
      },
      addIdentityCertificateListener: () => {},
      removeIdentityCertificateListener: () => {},
    };
    // grpc-js's first parameter is the identity provider (despite its name), the second the CA
    // to check client certificates with; false: a client without one is let through.
    return experimental.createCertificateProviderServerCredentials(this, clientRoots, false);
  }

  /** New connections verify client certificates against the roots of now, if they changed. */
  clientRootsChanged(): void {
    const roots = this.clientRoots?.();
    if (roots === undefined || roots === this.clientRootsGiven) return;
    this.clientRootsGiven = roots;
    for (const listener of this.clientRootListeners) listener({ caCertificate: Buffer.from(roots) });
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  /** A certificate from the CA's root of now (a root rotation ended): agents re-read their CA file. */
  renewNow(): void {
    clearTimeout(this.timer);
    if (!this.stopped) void this.renew();
  }

  private async renew(): Promise<void> {
    const now = Date.now();
    let delay: number;
    try {
      const keys = await generateKeys();
      const cert = await this.ca().issueServer(keys.publicKey, this.names, this.lifetimeMs, now);
      this.certificatePem = cert;
      this.issued++;
      this.latest = { certificate: Buffer.from(cert), privateKey: Buffer.from(await pkcs8Pem(keys.privateKey)) };
      for (const listener of this.listeners) listener(this.latest);
      delay = renewalDelayMs(now, now + this.lifetimeMs, now);
      this.log.info(
        { names: [...this.names.dnsNames, ...this.names.ipAddresses], notAfter: new Date(now + this.lifetimeMs) },
        "agent service certificate issued",
      );
    } catch (err) {
      // The certificate in force stays until it expires; agents see expiry as a TLS failure.
      if (!this.latest) throw err;
      this.log.error({ err: (err as Error).message }, "agent service certificate not renewed; retrying");
      delay = RETRY_MS;
    }
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.renew(), delay);
    this.timer.unref();
  }

  addIdentityCertificateListener(listener: IdentityListener): void {
    this.listeners.add(listener);
    if (this.latest) {
      const latest = this.latest;
      process.nextTick(() => listener(latest));
    }
  }

  removeIdentityCertificateListener(listener: IdentityListener): void {
    this.listeners.delete(listener);
  }

  // No CA certificates: this provider gives the server's own certificate only.
  addCaCertificateListener(): void {}
  removeCaCertificateListener(): void {}
}
