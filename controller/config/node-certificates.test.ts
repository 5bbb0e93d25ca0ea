// A presented node certificate, judged: the right one passes; one of another CA, expired, of
// another node, issued under another node secret, for a node no longer bound, or under a binding
// released since (even if the same secret bound the node again) is refused with the reason and
// status the agent server answers with.
import { X509Certificate } from "node:crypto";
import { status as GrpcStatus } from "@grpc/grpc-js";
import { beforeAll, describe, expect, it } from "vitest";
import { generateKeys, KEY_ALGORITHM, nodeSpiffeId, x509 } from "../../api/x509.ts";
import { WorkloadCa } from "../identity/workload-ca.ts";
import { bindingTag, nodeCertificateRefusal } from "./node-certificates.ts";

const SECRET = "s".repeat(43);
const BOUND_AT = "2026-12-04T00:00:00.000Z";
let ca: WorkloadCa;
let other: WorkloadCa;

async function nodeCert(
  issuer: WorkloadCa,
  node: string,
  secret = SECRET,
  issuedAt = Date.now(),
  boundAt = BOUND_AT,
): Promise<Buffer> {
  const keys = await generateKeys();
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    keys: keys as never,
    signingAlgorithm: KEY_ALGORITHM,
  });
  const pem = await issuer.issueNode(
    csr.toString("pem"),
    nodeSpiffeId("cluster.local", node),
    bindingTag(secret, boundAt),
    60_000,
    issuedAt,
  );
  return new X509Certificate(pem).raw;
}

beforeAll(async () => {
  ca = await WorkloadCa.open("cluster.local");
  other = await WorkloadCa.open("cluster.local");
});

describe("node certificates", () => {
  const judge = (cert: Buffer, over: Partial<Parameters<typeof nodeCertificateRefusal>[1]> = {}) =>
    nodeCertificateRefusal(cert, { node: "node-1", secret: SECRET, boundAt: BOUND_AT, ca, ...over });

  it("let a stream speak for its node, under its binding", async () => {
    const cert = new X509Certificate(await nodeCert(ca, "node-1"));
    expect(cert.subjectAltName).toBe("URI:spiffe://cluster.local/nodemesh/node/node-1");
    expect(cert.subject).toContain(`OU=binding ${bindingTag(SECRET, BOUND_AT)}`);
    expect(judge(cert.raw)).toBeUndefined();
  });

  it("refuse another CA's, an expired one, another node's, another secret's, and a released node's", async () => {
    const mine = await nodeCert(ca, "node-1");
    expect(judge(await nodeCert(other, "node-1"))).toMatchObject({
      reason: "node_certificate",
      code: GrpcStatus.UNAUTHENTICATED,
      details: "the node certificate is not this mesh's",
    });
    expect(judge(await nodeCert(ca, "node-1", SECRET, Date.now() - 3_600_000))).toMatchObject({
      reason: "node_certificate",
      details: "the node certificate has expired",
    });
    expect(judge(await nodeCert(ca, "node-2"))).toMatchObject({
      reason: "node_certificate_mismatch",
      code: GrpcStatus.PERMISSION_DENIED,
    });
    expect(judge(await nodeCert(ca, "node-1", "t".repeat(43)))).toMatchObject({
      reason: "node_certificate_revoked",
      code: GrpcStatus.UNAUTHENTICATED,
    });
    expect(judge(mine, { boundAt: undefined })).toMatchObject({ reason: "node_certificate_revoked" });
    // Released, then bound again by the same agent (same secret): a new binding, the old certificates stay dead.
    expect(judge(mine, { boundAt: "2026-12-04T00:05:00.000Z" })).toMatchObject({
      reason: "node_certificate_revoked",
      code: GrpcStatus.UNAUTHENTICATED,
    });
    expect(judge(await nodeCert(ca, "node-1", SECRET, Date.now(), "2026-12-04T00:05:00.000Z"))).toMatchObject({
      reason: "node_certificate_revoked",
    });
    expect(judge(Buffer.from("not a certificate"))).toMatchObject({ details: "the node certificate does not parse" });
    expect(judge(mine, { ca: undefined })).toMatchObject({ reason: "node_certificate" });
  });
});
