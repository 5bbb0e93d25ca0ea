// Workload certificates over the real agent stream (grpc-js): an agent gets a certificate only
// for an identity one of the pods it enrolled has, never another node's.

import { X509Certificate } from "node:crypto";
import pino from "pino";
import { Registry } from "prom-client";
import { afterEach, describe, expect, it } from "vitest";
import type { CertificateReply } from "../../api/agent-service.ts";
import { generateKeys, KEY_ALGORITHM, x509 } from "../../api/x509.ts";
import { AgentServer } from "../config/agent-server.ts";
import { SimAgent } from "../config/testing/sim-agent.ts";
import { MemoryStore } from "../store/memory-store.ts";
import { WorkloadCa } from "./workload-ca.ts";

let server: AgentServer | undefined;
const agents: SimAgent[] = [];
afterEach(async () => {
  for (const a of agents.splice(0)) a.close();
  await server?.stop();
  server = undefined;
});

async function csr(): Promise<string> {
  const keys = await generateKeys();
  return (
    await x509.Pkcs10CertificateRequestGenerator.create({ keys: keys as never, signingAlgorithm: KEY_ALGORITHM })
  ).toString("pem");
}

async function ask(
  agent: SimAgent,
  namespace: string,
  serviceAccount: string,
  csrPem?: string,
): Promise<CertificateReply> {
  const requestId = `${namespace}/${serviceAccount}/${agent.certificates.length}`;
  agent.send({
    kind: "certificateRequest",
    certificateRequest: { requestId, namespace, serviceAccount, csrPem: csrPem ?? (await csr()) },
  });
  await agent.until(() => agent.certificates.some((c) => c.requestId === requestId), 5000, "a certificate answer");
  return agent.certificates.find((c) => c.requestId === requestId)!;
}

describe("workload certificates for agents", () => {
  it("certifies a node's own pods' identities and refuses any other", async () => {
    const store = new MemoryStore();
    await store.open();
    const ca = await WorkloadCa.open("mesh.test");
    const metrics = new Registry();
    server = await AgentServer.start({
      store,
      metrics,
      host: "127.0.0.1",
      port: 0,
      startupGraceMs: 0,
      identities: { ca, lifetimeMs: 60_000 },
      log: pino({ level: "silent" }),
    });
    const a = new SimAgent(server.port, "node-a");
    const b = new SimAgent(server.port, "node-b");
    agents.push(a, b);
    a.send({
      kind: "podsChanged",
      podsChanged: {
        pods: [{ name: "checkout-1", namespace: "shop", ip: "10.1.0.5", labels: {}, serviceAccount: "checkout" }],
      },
    });
    b.send({
      kind: "podsChanged",
      podsChanged: { pods: [{ name: "db-0", namespace: "shop", ip: "10.1.1.5", labels: {} }] },
    });
    await a.nextConfig();
    await b.nextConfig();

    const mine = await ask(a, "shop", "checkout");
    expect(mine.error).toBe("");
    const leaf = new X509Certificate(mine.certChainPem);
    expect(leaf.subjectAltName).toBe("URI:spiffe://mesh.test/ns/shop/sa/checkout");
    expect(leaf.verify(new X509Certificate(mine.trustBundlePem).publicKey)).toBe(true);

    // node-b's pod runs as shop/default: node-a cannot get that identity, nor a made-up one.
    expect((await ask(a, "shop", "default")).error).toMatch(
      /node node-a hosts no pod of service account shop\/default/,
    );
    expect((await ask(a, "kube-system", "admin")).error).toMatch(/hosts no pod/);
    expect((await ask(b, "shop", "default")).certChainPem).toContain("BEGIN CERTIFICATE");
    expect((await ask(b, "shop", "checkout")).error).toMatch(/node node-b hosts no pod/);
    // A CSR whose signature does not verify proves nothing.
    const bad = (await csr()).replace(/[A-Za-z](?=[^\n]*\n-----END)/, (c) => (c === "A" ? "B" : "A"));
    expect((await ask(a, "shop", "checkout", bad)).error).toMatch(/CSR/);

    const text = await metrics.metrics();
    expect(text).toMatch(/nodemesh_controller_workload_certificates_total\{result="issued"\} 2/);
    expect(text).toMatch(/nodemesh_controller_workload_certificates_total\{result="not_hosted"\} 3/);
  });
});
