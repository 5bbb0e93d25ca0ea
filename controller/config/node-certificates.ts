// Node certificates on the agents' stream (docs/security.md): what one carries of the binding it
// was issued under, and whether a presented one lets a stream speak for a node. Pure: the agent
// server passes the CA, the stream's node secret and the node's binding as it stands.

import { createHash, X509Certificate } from "node:crypto";
import { status as GrpcStatus } from "@grpc/grpc-js";
import { nodeSpiffeId } from "../../api/x509.ts";
import { secretDigest } from "./node-bindings.ts";

/**
 * What a node certificate carries of the binding it was issued under (OU=binding <tag>): a digest
 * of the node secret's digest and the binding's time. A release ends the binding, and the next one
 * (even with the same secret) has another time: certificates issued before the release never count
 * again.
 */
export function bindingTag(secret: string, boundAt: string): string {
  return createHash("sha256")
    .update(`${secretDigest(secret)} ${boundAt}`)
    .digest("hex")
    .slice(0, 32);
}

export interface NodeCertificateRefusal {
  reason: "node_certificate" | "node_certificate_mismatch" | "node_certificate_revoked";
  code: GrpcStatus;
  details: string;
}

/**
 * Why a presented node certificate (DER) does not let a stream speak for `node`, else undefined:
 * issued by this controller's CA (`ca.issued`), in date, for that node, under the node secret the
 * stream carries and the node's current binding (`boundAt`; undefined: not bound). A released
 * node bootstraps with the token again.
 */
export function nodeCertificateRefusal(
  presented: Buffer,
  opts: {
    node: string;
    secret: string;
    boundAt: string | undefined;
    ca: { issued(cert: X509Certificate): boolean; readonly trustDomain: string } | undefined;
    now?: number;
  },
): NodeCertificateRefusal | undefined {
  const { node, ca, now = Date.now() } = opts;
  const refusal = (reason: NodeCertificateRefusal["reason"], code: GrpcStatus, details: string) => ({
    reason,
    code,
    details,
  });
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(presented);
  } catch {
    return refusal("node_certificate", GrpcStatus.UNAUTHENTICATED, "the node certificate does not parse");
  }
  if (!ca?.issued(cert))
    return refusal("node_certificate", GrpcStatus.UNAUTHENTICATED, "the node certificate is not this mesh's");
  if (now < Date.parse(cert.validFrom) || now > Date.parse(cert.validTo))
    return refusal("node_certificate", GrpcStatus.UNAUTHENTICATED, "the node certificate has expired");
  const expected = nodeSpiffeId(ca.trustDomain, node);
  if (cert.subjectAltName !== `URI:${expected}`) {
    return refusal(
      "node_certificate_mismatch",
      GrpcStatus.PERMISSION_DENIED,
      `the node certificate is ${cert.subjectAltName ?? "no node's"}, not ${expected}`,
    );
  }
  const tag = /OU=binding ([0-9a-f]+)/.exec(cert.subject)?.[1];
  if (opts.boundAt === undefined || tag !== bindingTag(opts.secret, opts.boundAt)) {
    return refusal(
      "node_certificate_revoked",
      GrpcStatus.UNAUTHENTICATED,
      `the node certificate of ${node} was issued under a binding that is gone (released, or another node secret): connect with the bootstrap token`,
    );
  }
  return undefined;
}
