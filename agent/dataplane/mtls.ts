// Mutual TLS on the tunnel between agents. Each agent holds a certificate per identity of its
// pods (control/identities.ts), handed to the workers as a keyring. The source agent opens TLS with
// the source pod's certificate and accepts only the certificate of the identity the service table
// names for the endpoint; the destination agent terminates it with the destination pod's
// certificate and requires the caller's, chained to the mesh's CA, before a single byte of a
// tunnel is read. Many tunnels then share that connection (tunnel-mux.ts). A caller without TLS is
// still accepted unless PeerAuthentication says STRICT (inbound.ts; PERMISSIVE is the default, as
// Istio's): the tunnel key (tunnel.ts) then says it is an agent.

import { X509Certificate } from "node:crypto";
import type { Socket } from "node:net";
import tls from "node:tls";
import { splitPem } from "../../api/pem.ts";
import { AgentError, AgentErrors } from "../errors.ts";
import type { Endpoint } from "./endpoint.ts";
import { ioDeadline } from "./io-deadline.ts";
import type { ConnectionSecurity } from "./metrics.ts";
import type { PeerAuthenticationIndex } from "./peer-authentication.ts";
import type { PodContext } from "./pod.ts";

/** One workload identity's certificate, as the workers receive it. */
export interface WorkerIdentity {
  readonly namespace: string;
  readonly serviceAccount: string;
  readonly spiffeId: string;
  /** Leaf first. */
  readonly certChainPem: string;
  readonly keyPem: string;
  /** The roots a peer's chain may lead to: two during a root rotation. */
  readonly trustBundlePem: string;
}

/** By "namespace/serviceAccount". */
export type Keyring = ReadonlyMap<string, WorkerIdentity>;

export function keyringOf(identities: readonly WorkerIdentity[]): Keyring {
  return new Map(identities.map((id) => [`${id.namespace}/${id.serviceAccount}`, id]));
}

/**
 * One TLS context per certificate, made on first use: parsing a key and a chain for every tunnel
 * would cost more than the handshake itself. A renewal is a new WorkerIdentity, hence a new context.
 */
const contexts = new WeakMap<WorkerIdentity, { tls: tls.SecureContext; roots: X509Certificate[] }>();

function contextOf(id: WorkerIdentity): { tls: tls.SecureContext; roots: X509Certificate[] } {
  let context = contexts.get(id);
  if (!context) {
    context = {
      tls: tls.createSecureContext({ cert: id.certChainPem, key: id.keyPem, ca: id.trustBundlePem }),
      roots: splitPem(id.trustBundlePem).map((pem) => new X509Certificate(pem)),
    };
    contexts.set(id, context);
  }
  return context;
}

/** "namespace/serviceAccount" of a pod: its identity's key in the keyring. */
export function identityKey(pod: PodContext): string {
  return `${pod.pod.namespace}/${pod.pod.serviceAccount || "default"}`;
}

/** The certificate a pod presents: that of its namespace and service account, if held. */
function podIdentity(keyring: Keyring, pod: PodContext): WorkerIdentity | undefined {
  return keyring.get(identityKey(pod));
}

/** The tunnel connection speaks HTTP/2 (each tunnel a CONNECT stream), as Istio's HBONE. */
export const MUX_ALPN = "h2";

function trustDomainOf(spiffeId: string): string {
  return /^spiffe:\/\/([^/]+)\//.exec(spiffeId)?.[1] ?? "";
}

/** The SPIFFE id an endpoint must prove, in the trust domain of `mine`. */
function expectedIdentity(mine: WorkerIdentity, ep: Endpoint): string {
  return `spiffe://${trustDomainOf(mine.spiffeId)}/ns/${ep.namespace}/sa/${ep.serviceAccount}`;
}

/** Why the caller's certificate is not one of the mesh's, else undefined. */
function callerRefusal(socket: tls.TLSSocket, mine: WorkerIdentity, now = Date.now()): string | undefined {
  const presented = socket.getPeerCertificate(true);
  if (!presented?.raw) return "no certificate";
  const leaf = new X509Certificate(presented.raw);
  if (now < Date.parse(leaf.validFrom) || now > Date.parse(leaf.validTo)) return "expired or not yet valid";
  if (!leadsToRoot(presented, contextOf(mine).roots, now)) return "not issued by the mesh's CA";
  const id = peerIdentity(socket);
  if (!/^spiffe:\/\/[^/]+\/ns\/[^/]+\/sa\/[^/]+$/.test(id)) return "no workload SPIFFE identity";
  if (trustDomainOf(id) !== trustDomainOf(mine.spiffeId)) return `${id} is not of this trust domain`;
  return undefined;
}

/** The mesh's intermediates (a CA the user provides) between a leaf and its root, at most this many. */
const MAX_CHAIN_DEPTH = 4;

/**
 * Whether `cert`'s chain, as the peer presented it, leads to one of `roots`: each link signed by
 * the next, each intermediate a valid CA certificate.
 */
function leadsToRoot(cert: tls.DetailedPeerCertificate, roots: readonly X509Certificate[], now: number): boolean {
  let link = new X509Certificate(cert.raw);
  let next = cert;
  for (let depth = 0; depth <= MAX_CHAIN_DEPTH; depth++) {
    const child = link;
    if (roots.some((root) => child.checkIssued(root) && child.verify(root.publicKey))) return true;
    const issuer = next.issuerCertificate;
    if (!issuer?.raw || issuer === next) return false;
    const parent = new X509Certificate(issuer.raw);
    const current = now >= Date.parse(parent.validFrom) && now <= Date.parse(parent.validTo);
    if (!parent.ca || !current || !child.checkIssued(parent) || !child.verify(parent.publicKey)) return false;
    link = parent;
    next = issuer;
  }
  return false;
}

/** The namespace of a workload's SPIFFE id. */
export function namespaceOfIdentity(spiffeId: string): string | undefined {
  return /^spiffe:\/\/[^/]+\/ns\/([^/]+)\/sa\/[^/]+$/.exec(spiffeId)?.[1];
}

/** The peer's SPIFFE id from its verified certificate. */
function peerIdentity(socket: tls.TLSSocket): string {
  return /URI:(spiffe:\/\/[^,\s]+)/.exec(socket.getPeerCertificate().subjectaltname ?? "")?.[1] ?? "";
}

function settled(socket: tls.TLSSocket, event: "secureConnect" | "secure", timeoutMs: number, what: string) {
  return new Promise<void>((resolve, reject) => {
    const deadline = ioDeadline(() => fail(new Error(`no TLS handshake within ${timeoutMs} ms`)), timeoutMs);
    const fail = (err: Error) => {
      deadline.clear();
      socket.destroy();
      reject(new AgentError(AgentErrors.TUNNEL_UNAUTHENTICATED, `${what}: ${err.message}`));
    };
    socket.once("error", fail);
    socket.once(event, () => {
      deadline.clear();
      socket.removeListener("error", fail);
      resolve();
    });
  });
}

/** What decides how a tunnel is secured: the node's certificates, the destination's PeerAuthentication. */
type TunnelSecurityInputs = { readonly keyring: Keyring; snapshot(): { readonly mtlsMode: PeerAuthenticationIndex } };

/**
 * The certificate a tunnel from `from` to `ep` is opened with, or undefined for a plaintext
 * tunnel: mTLS when the endpoint is meshed with a known identity, `from` holds its certificate,
 * and the endpoint's PeerAuthentication does not say DISABLE.
 */
export function tunnelIdentity(via: TunnelSecurityInputs, from: PodContext, ep: Endpoint): WorkerIdentity | undefined {
  if (!ep.meshed || !ep.serviceAccount) return undefined;
  const mine = podIdentity(via.keyring, from);
  if (!mine || via.snapshot().mtlsMode(ep.ip, ep.namespace, ep.port) === "DISABLE") return undefined;
  return mine;
}

/** How a tunnel from `from` to `ep` is secured (a label of the source side's metrics). */
export function tunnelSecurity(via: TunnelSecurityInputs, from: PodContext, ep: Endpoint): ConnectionSecurity {
  return tunnelIdentity(via, from, ep) ? "mutual_tls" : "none";
}

/**
 * A tunnel to one of this agent's own pods (local-tunnel.ts) needs no handshake: this keyring holds
 * both certificates. What the handshake would have checked is checked here: the destination pod
 * holds the identity the service table names for `ep` (connectMutualTls). Returns the caller's
 * SPIFFE id, which the destination side takes as proven.
 */
export function sameNodePeer(keyring: Keyring, mine: WorkerIdentity, to: PodContext, ep: Endpoint): string {
  const expected = expectedIdentity(mine, ep);
  const held = podIdentity(keyring, to)?.spiffeId;
  if (held !== expected) {
    throw new AgentError(
      AgentErrors.TUNNEL_UNAUTHENTICATED,
      `${ep.ip}:${ep.port}: the pod holds ${held ?? "no identity"}, not ${expected}`,
    );
  }
  return mine.spiffeId;
}

/**
 * The caller's proven SPIFFE id for a same-node tunnel or handed-over request from `from` to `ep`,
 * the agent's own pod `to`. As for a tunnel across nodes: an identity when both ends have one (and
 * PeerAuthentication does not DISABLE it), else undefined, the plaintext tunnel's standing.
 */
export function sameNodeCaller(
  via: TunnelSecurityInputs,
  from: PodContext,
  to: PodContext,
  ep: Endpoint,
): string | undefined {
  const mine = tunnelIdentity(via, from, ep);
  return mine ? sameNodePeer(via.keyring, mine, to, ep) : undefined;
}

/**
 * Source side: `socket` (connected to the endpoint's tunnel port) in TLS with `mine`, once the
 * endpoint proved the identity the service table names for it.
 */
export async function connectMutualTls(
  mine: WorkerIdentity,
  ep: Endpoint,
  socket: Socket,
  timeoutMs: number,
): Promise<tls.TLSSocket> {
  const expected = expectedIdentity(mine, ep);
  const secure = tls.connect({
    socket,
    secureContext: contextOf(mine).tls,
    ALPNProtocols: [MUX_ALPN],
    checkServerIdentity: (_host, cert) =>
      cert.subjectaltname === `URI:${expected}`
        ? undefined
        : new Error(`the endpoint proved ${cert.subjectaltname ?? "no identity"}, not ${expected}`),
  });
  await settled(secure, "secureConnect", timeoutMs, `${ep.ip}:${ep.port}`);
  return secure;
}

/** The first byte a client sends, pushed back: 0x16 opens a TLS handshake. */
function firstByte(socket: Socket, timeoutMs: number): Promise<number | undefined> {
  return new Promise((resolve) => {
    const done = (byte: number | undefined) => {
      clearTimeout(timer);
      socket.removeListener("data", onData);
      socket.removeListener("end", onEnd);
      resolve(byte);
    };
    const onData = (chunk: Buffer) => {
      socket.pause();
      socket.unshift(chunk);
      done(chunk[0]);
    };
    const onEnd = () => done(undefined);
    const timer = setTimeout(() => done(undefined), timeoutMs);
    socket.on("data", onData);
    socket.once("end", onEnd);
    socket.resume();
  });
}

const TLS_HANDSHAKE = 0x16;

/**
 * Destination side: a tunnel connection in TLS is terminated with the pod's certificate and
 * must present a certificate of the mesh (else it ends here, before anything is read from it);
 * the caller's verified identity comes back. A plaintext one is returned as it is.
 */
export async function acceptSecureTunnel(
  keyring: Keyring,
  to: PodContext,
  socket: Socket,
  timeoutMs: number,
): Promise<{ socket: Socket; peer?: undefined } | { socket: tls.TLSSocket; peer: string }> {
  if ((await firstByte(socket, timeoutMs)) !== TLS_HANDSHAKE) return { socket };
  const mine = podIdentity(keyring, to);
  if (!mine)
    throw new AgentError(AgentErrors.TUNNEL_UNAUTHENTICATED, "TLS to a pod whose certificate this agent lacks");
  const secure = new tls.TLSSocket(socket, {
    isServer: true,
    requestCert: true,
    rejectUnauthorized: true,
    secureContext: contextOf(mine).tls,
    ALPNProtocols: [MUX_ALPN],
  });
  await settled(secure, "secure", timeoutMs, "caller");
  if (secure.alpnProtocol !== MUX_ALPN) {
    secure.destroy();
    throw new AgentError(AgentErrors.TUNNEL_PROTOCOL, `caller: TLS without ALPN ${MUX_ALPN}`);
  }
  // What a tls.Server does once a handshake is done; without it Node's HTTP/2 session would wait
  // for a "secureConnect" that a server-side socket never emits.
  (secure as tls.TLSSocket & { secureConnecting: boolean }).secureConnecting = false;
  // OpenSSL required and verified the caller's chain (rejectUnauthorized); a standalone server
  // socket does not record that (only a tls.Server's sockets do), so the leaf is checked here.
  const refusal = callerRefusal(secure, mine);
  if (refusal) {
    secure.destroy();
    throw new AgentError(AgentErrors.TUNNEL_UNAUTHENTICATED, `caller: ${refusal}`);
  }
  return { socket: secure, peer: peerIdentity(secure) };
}
