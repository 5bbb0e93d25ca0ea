// Node certificates over the real agents' stream (grpc-js, TLS on loopback): an agent that says
// Hello with the bootstrap token gets a node certificate; presented as the TLS client certificate
// it stands in for the token, for its own node only; an expired one or another CA's counts for
// nothing, and one issued before `nodemesh nodes release` (even once the same agent bound the node
// again) is refused: no Config.

import { X509Certificate } from "node:crypto";
import { status as GrpcStatus } from "@grpc/grpc-js";
import pino from "pino";
import { Registry } from "prom-client";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { splitPem } from "../../api/pem.ts";
import { generateKeys, KEY_ALGORITHM, nodeSpiffeId, pkcs8Pem, x509 } from "../../api/x509.ts";
import { makePki } from "../../test/pki/openssl-pki.ts";
import { RotatingCa } from "../identity/root-rotation.ts";
import { WorkloadCa } from "../identity/workload-ca.ts";
import { MemoryStore } from "../store/memory-store.ts";
import { AgentServer, type AgentServerOptions } from "./agent-server.ts";
import { bindingTag } from "./node-certificates.ts";
import { SimAgent } from "./testing/sim-agent.ts";

const TOKEN = "bootstrap-token-for-the-test";
const SECRET_1 = "1".repeat(43);
const SECRET_2 = "2".repeat(43);

interface Held {
  keyPem: string;
  chainPem: string;
}

let server: AgentServer;
let ca: WorkloadCa;
let root: Buffer;
let log: string[];
const agents: SimAgent[] = [];

async function startServer(identities: NonNullable<AgentServerOptions["identities"]>["ca"], tlsCa: () => WorkloadCa) {
  const store = new MemoryStore();
  await store.open();
  log = [];
  server = await AgentServer.start({
    store,
    metrics: new Registry(),
    host: "127.0.0.1",
    port: 0,
    startupGraceMs: 0,
    token: TOKEN,
    tls: { ca: tlsCa, names: { dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"] } },
    identities: { ca: identities, lifetimeMs: 60_000 },
    log: pino({ level: "info" }, { write: (line: string) => log.push(line) }),
  });
}

beforeEach(async () => {
  ca = await WorkloadCa.open("mesh.test");
  root = Buffer.from(ca.trustBundlePem);
  await startServer(ca, () => ca);
});

afterEach(async () => {
  for (const a of agents.splice(0)) a.close();
  await server.stop();
});

function open(node: string, opts: { token?: boolean; secret: string; cert?: Held }): SimAgent {
  const agent = new SimAgent(server.port, node, {
    host: "127.0.0.1",
    ca: root,
    secret: opts.secret,
    ...(opts.token ? { token: TOKEN } : {}),
    ...(opts.cert ? { clientCert: opts.cert } : {}),
  });
  agents.push(agent);
  return agent;
}

/** Accepted (a Config came) or the status the stream was refused with. */
async function outcome(agent: SimAgent): Promise<"accepted" | { code: number; details: string }> {
  await agent.until(() => agent.configs.length > 0 || agent.status !== undefined, 5000, "a Config or a status");
  return agent.configs.length > 0 ? "accepted" : agent.status!;
}

async function csrAndKey(): Promise<{ csrPem: string; keyPem: string }> {
  const keys = await generateKeys();
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    keys: keys as never,
    signingAlgorithm: KEY_ALGORITHM,
  });
  return { csrPem: csr.toString("pem"), keyPem: await pkcs8Pem(keys.privateKey) };
}

/** Bootstraps `node` with the token and asks for its node certificate over the stream. */
async function bootstrap(node: string, secret: string): Promise<Held> {
  const agent = open(node, { token: true, secret });
  expect(await outcome(agent)).toBe("accepted");
  const { csrPem, keyPem } = await csrAndKey();
  agent.send({
    kind: "certificateRequest",
    certificateRequest: { requestId: "n", namespace: "", serviceAccount: "", csrPem, node: true },
  });
  await agent.until(() => agent.certificates.length > 0, 5000, "the node certificate");
  const reply = agent.certificates[0]!;
  expect(reply.error).toBe("");
  agent.close();
  return { keyPem, chainPem: reply.certChainPem };
}

const refusals = (reason: string) =>
  log.filter((l) => l.includes('"msg":"agent refused"') && l.includes(`"reason":"${reason}"`));

describe("node certificates on the agents' stream", () => {
  it("are issued for the stream's own node, clientAuth only, and stand in for the token", async () => {
    const held = await bootstrap("node-1", SECRET_1);
    const leaf = new X509Certificate(held.chainPem);
    expect(leaf.subjectAltName).toBe(`URI:${nodeSpiffeId("mesh.test", "node-1")}`);
    expect(leaf.checkIssued(new X509Certificate(root))).toBe(true);
    expect(leaf.toLegacyObject().ext_key_usage).toEqual(["1.3.6.1.5.5.7.3.2"]);

    // Without the token: refused; with the certificate instead: accepted.
    expect(await outcome(open("node-1", { secret: SECRET_1 }))).toMatchObject({ code: GrpcStatus.UNAUTHENTICATED });
    expect(await outcome(open("node-1", { secret: SECRET_1, cert: held }))).toBe("accepted");
  });

  it("let no stream speak for another node (PERMISSION_DENIED, logged)", async () => {
    const held = await bootstrap("node-1", SECRET_1);
    await bootstrap("node-2", SECRET_2);
    // node-1's certificate, with node-1's secret or node-2's, saying Hello as node-2.
    for (const secret of [SECRET_1, SECRET_2]) {
      const impostor = open("node-2", { secret, cert: held });
      expect(await outcome(impostor)).toMatchObject({ code: GrpcStatus.PERMISSION_DENIED });
      expect(impostor.configs).toEqual([]);
    }
    expect(refusals("node_certificate_mismatch")).toHaveLength(2);
    expect(refusals("node_certificate_mismatch")[0]).toContain('"node":"node-2"');
    // ... nor as a node not bound yet (it would have bound it).
    expect(await outcome(open("node-3", { secret: SECRET_1, cert: held }))).toMatchObject({
      code: GrpcStatus.PERMISSION_DENIED,
    });
    expect(server.bindings.list().map((b) => b.node)).toEqual(["node-1", "node-2"]);
  });

  it("take an expired certificate or another CA's for none: without the token, UNAUTHENTICATED", async () => {
    await bootstrap("node-1", SECRET_1);
    const boundAt = server.bindings.list()[0]!.boundAt;
    const { csrPem, keyPem } = await csrAndKey();
    const spiffe = nodeSpiffeId("mesh.test", "node-1");
    const expired = await ca.issueNode(csrPem, spiffe, bindingTag(SECRET_1, boundAt), 60_000, Date.now() - 3_600_000);
    const other = await WorkloadCa.open("mesh.test");
    const foreign = await other.issueNode(csrPem, spiffe, bindingTag(SECRET_1, boundAt), 60_000);
    for (const chainPem of [expired, foreign]) {
      // grpc-js shows the handler only a client certificate its TLS layer verified against the
      // mesh's roots (in date): these count for nothing, and the token decides.
      const agent = open("node-1", { secret: SECRET_1, cert: { keyPem, chainPem } });
      expect(await outcome(agent)).toMatchObject({ code: GrpcStatus.UNAUTHENTICATED });
      expect(agent.configs).toEqual([]);
    }
    expect(refusals("token")).toHaveLength(2);
    // With the token the stream gets in on the token, as a bootstrap does.
    expect(await outcome(open("node-1", { secret: SECRET_1, token: true, cert: { keyPem, chainPem: expired } }))).toBe(
      "accepted",
    );
  });

  it("are accepted from the new root during a root rotation, and from the old one until it is dropped", async () => {
    await server.stop();
    const rotating = await RotatingCa.open("mesh.test", undefined, 100);
    root = Buffer.from(rotating.trustBundlePem);
    await startServer(rotating, () => rotating.current);
    const before = await bootstrap("node-1", SECRET_1);
    await rotating.rotate();
    await new Promise((r) => setTimeout(r, 2_300)); // the step to "signing": the new root signs
    expect(rotating.status().phase).toBe("signing");
    const after = await bootstrap("node-1", SECRET_1);
    expect(new X509Certificate(after.chainPem).issuer).not.toBe(new X509Certificate(before.chainPem).issuer);
    expect(await outcome(open("node-1", { secret: SECRET_1, cert: after }))).toBe("accepted");
    expect(await outcome(open("node-1", { secret: SECRET_1, cert: before }))).toBe("accepted");
    rotating.stop();
  }, 10_000);

  it("chain through a plugged CA's intermediate to the user's root", async () => {
    await server.stop();
    const pki = makePki("NodeCerts");
    try {
      ca = await WorkloadCa.plugged("mesh.test", { certFile: pki.caCert, keyFile: pki.caKey, rootFile: pki.rootCert });
      root = Buffer.from(ca.trustBundlePem);
      await startServer(ca, () => ca);
      const held = await bootstrap("node-1", SECRET_1);
      expect(splitPem(held.chainPem)).toHaveLength(2); // the leaf, then the intermediate
      expect(await outcome(open("node-1", { secret: SECRET_1, cert: held }))).toBe("accepted");
      expect(await outcome(open("node-2", { secret: SECRET_1, cert: held }))).toMatchObject({
        code: GrpcStatus.PERMISSION_DENIED,
      });
    } finally {
      pki.remove();
    }
  });

  it("stop counting once the node is released, even after the same agent bound it again", async () => {
    const old = await bootstrap("node-1", SECRET_1);
    expect(await server.releaseNode("node-1")).toBe(true);
    const released = open("node-1", { secret: SECRET_1, cert: old });
    expect(await outcome(released)).toMatchObject({ code: GrpcStatus.UNAUTHENTICATED });
    expect(server.bindings.list()).toEqual([]); // the refused stream bound nothing

    await new Promise((r) => setTimeout(r, 5)); // a later binding time than the first
    const renewed = await bootstrap("node-1", SECRET_1); // the same agent, its same node secret
    const stale = open("node-1", { secret: SECRET_1, cert: old });
    expect(await outcome(stale)).toMatchObject({
      code: GrpcStatus.UNAUTHENTICATED,
      details: expect.stringContaining("binding that is gone"),
    });
    expect(stale.configs).toEqual([]);
    // A certificate that fails the checks is refused even beside the token.
    expect(await outcome(open("node-1", { secret: SECRET_1, token: true, cert: old }))).toMatchObject({
      code: GrpcStatus.UNAUTHENTICATED,
    });
    expect(refusals("node_certificate_revoked")).toHaveLength(3);
    expect(await outcome(open("node-1", { secret: SECRET_1, cert: renewed }))).toBe("accepted");
  });
});
