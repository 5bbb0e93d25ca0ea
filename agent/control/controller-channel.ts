// How the agent's stream to the controller is secured (docs/security.md, "Controller gRPC
// (agents)"): TLS verified against the root of --controller-ca-file; plaintext only to a loopback
// controller, or off loopback when the operator said --insecure-controller. Pure, but for reading
// the root.

import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import { splitPem } from "../../api/pem.ts";

export type ChannelSecurity = { tls: true; caFile: string } | { tls: false };

function isLoopbackHost(host: string): boolean {
  if (host === "localhost") return true;
  if (isIP(host) === 4) return host.startsWith("127.");
  return host === "::1" || host === "[::1]";
}

/** The host of HOST:PORT (a bracketed IPv6 literal keeps its brackets). */
export function controllerHost(address: string): string {
  return address.slice(0, address.lastIndexOf(":"));
}

/**
 * TLS with `caFile`; without it plaintext, which is refused off loopback unless `insecure`
 * (the stream carries the bootstrap token and the node secret, and its configuration decides
 * where the node sends traffic).
 */
export function channelSecurity(address: string, caFile: string | undefined, insecure: boolean): ChannelSecurity {
  if (caFile !== undefined && insecure) {
    throw new Error("--controller-ca-file and --insecure-controller exclude each other");
  }
  if (caFile !== undefined) return { tls: true, caFile };
  const host = controllerHost(address);
  if (!insecure && !isLoopbackHost(host)) {
    throw new Error(
      `refusing to connect to the controller at ${address} in plaintext: anyone on the way could read the ` +
        "bootstrap token and the node secret, and feed this node a configuration. Give the controller's CA " +
        "root with --controller-ca-file FILE (the controller's store dir ca.pem), or pass " +
        "--insecure-controller to connect in plaintext on purpose",
    );
  }
  return { tls: false };
}

/** The CA file's certificates, PEM; throws naming the file when it holds none that parses. */
export function readCaFile(file: string): Buffer {
  let pem: Buffer;
  try {
    pem = readFileSync(file);
  } catch (err) {
    throw new Error(`cannot read the controller's CA file ${file}: ${(err as Error).message}`);
  }
  const blocks = splitPem(pem.toString("utf8"));
  try {
    if (blocks.length === 0) throw new Error("no PEM certificate in it");
    for (const block of blocks) new X509Certificate(block);
  } catch (err) {
    throw new Error(`the controller's CA file ${file} is not a PEM certificate: ${(err as Error).message}`);
  }
  return pem;
}

/**
 * For a stream that failed before it was up: a hint when the cause is the controller's
 * certificate (or a TLS/plaintext mismatch), which retrying alone will not fix.
 */
export function tlsFailureHint(details: string, tls: boolean): string | undefined {
  if (
    /certificate|self[- ]signed|unable to verify|altnames|Hostname\/IP does not match|CERT_|SSL|TLS|wrong version number|handshake/i.test(
      details,
    )
  ) {
    return tls
      ? "the controller's TLS certificate was not accepted: check --controller-ca-file (the controller's CA root) " +
          "and that the --controller address is a name in the certificate (controller --tls-san)"
      : "the controller seems to speak TLS: give its CA root with --controller-ca-file";
  }
  return undefined;
}
