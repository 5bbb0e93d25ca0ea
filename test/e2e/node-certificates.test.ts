// Node certificates (issue 12, item 2: the bootstrap token "exchanged for a node certificate"):
// an agent that connected with the token gets one and, restarted without the token, still
// connects with it and takes new configuration; node-1's certificate (and node secret) cannot
// speak for node-2, a certificate of another CA lets nothing in; and once an operator releases
// node-1, its certificate no longer lets it in, not even after node-1 bootstrapped again with the
// same node secret.

import { X509Certificate } from "node:crypto";
import { cpSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateKeys, KEY_ALGORITHM, nodeSpiffeId, pkcs8Pem, x509 } from "../../api/x509.ts";
import { WorkloadCa } from "../../controller/identity/workload-ca.ts";
import { type Node, World } from "../world/world.ts";
import type { RogueArgs, RogueReport } from "./clients/rogue-agent.ts";
import { eventually } from "./eventually.ts";
import { Mesh } from "./mesh.ts";
import { httpFrom, metricSum, parseMetrics } from "./netns-client.ts";

const ROGUE_AGENT = new URL("./clients/rogue-agent.ts", import.meta.url).pathname;
const ADMIN_PORT = 15020;

interface AgentView {
  node: string;
  connected: boolean;
  connectedAt?: string;
}

describe("node certificates", () => {
  let world: World;
  let mesh: Mesh;
  let n1: Node;
  let n2: Node;

  const rest = async (path: string) => {
    const reply = await httpFrom(mesh.controller!.place.netnsPath, `http://127.0.0.1:8080${path}`);
    if (reply.status !== 200) throw new Error(`GET ${path}: ${reply.status} ${reply.body}`);
    return reply.body;
  };
  const refusals = async (reason: string) =>
    metricSum(parseMetrics(await rest("/metrics")), "nodemesh_controller_agent_streams_refused_total", { reason });
  const agent = async (node: string) =>
    (JSON.parse(await rest("/apis/nodemesh.io/v1alpha1/agents")).items as AgentView[]).find((a) => a.node === node);
  const stateFile = (node: Node, file: string) => join(mesh.dir, node.name, "state", file);
  const certFile = (node: Node) => stateFile(node, "node-cert.pem");
  const readyz = async (node: Node) =>
    JSON.parse((await httpFrom(node.netnsPath, `http://127.0.0.1:${ADMIN_PORT}/readyz`)).body) as {
      controller: { connected: boolean; credential: string | null; nodeCertificate: { spiffeId: string } | null };
    };
  /**
   * A grpc-js client in node-2's namespace, without the token, saying Hello as `node` with
   * `secret` and the certificate and key of `files`: accepted (a Config came) or its status.
   */
  const stranger = async (node: string, secret: string, files: { certFile: string; keyFile: string }) => {
    const args: RogueArgs = {
      address: `${mesh.controller!.place.ip}:15012`,
      caFile: mesh.controllerCaFile,
      secret,
      ...files,
      mode: "hello",
      node,
      pods: [],
    };
    const r = await world.exec(n2, process.execPath, [ROGUE_AGENT, JSON.stringify(args)], { timeoutMs: 30_000 });
    if (r.code !== 0) throw new Error(`stranger failed (${r.code}): ${r.stderr}`);
    return JSON.parse(r.stdout) as RogueReport;
  };

  beforeAll(async () => {
    world = await World.create({ nodes: 2 });
    mesh = new Mesh(world);
    [n1, n2] = world.nodes as [Node, Node];
    await mesh.startController();
    await Promise.all([mesh.startAgent(n1), mesh.startAgent(n2)]);
  }, 60_000);

  afterAll(async () => {
    await mesh?.destroy();
  });

  it("gets one after bootstrapping with the token, and connects with it alone after a restart", async () => {
    await eventually("node-1's node certificate", 15_000, () => (existsSync(certFile(n1)) ? true : undefined));
    const cert = new X509Certificate(readFileSync(certFile(n1)));
    expect(cert.subjectAltName).toBe("URI:spiffe://cluster.local/nodemesh/node/node-1");
    expect(cert.checkIssued(new X509Certificate(readFileSync(mesh.controllerCaFile)))).toBe(true);
    expect(readFileSync(stateFile(n1, "node-key.pem"), "utf8")).toContain("PRIVATE KEY");
    expect(statSync(stateFile(n1, "node-key.pem")).mode & 0o777).toBe(0o600);
    expect((await readyz(n1)).controller).toMatchObject({ connected: true, credential: "token" });

    const before = (await agent("node-1"))!.connectedAt;
    await mesh.stopAgent(n1, "SIGTERM");
    const restarted = await mesh.startAgent(n1, { token: false });
    await eventually("node-1 connected without the token", 20_000, async () => {
      const a = await agent("node-1");
      return a?.connected && a.connectedAt !== before ? true : undefined;
    });
    expect(restarted.proc.lines.some((l) => l.includes('"credential":"node certificate"'))).toBe(true);
    expect((await readyz(n1)).controller).toMatchObject({
      connected: true,
      credential: "node certificate",
      nodeCertificate: { spiffeId: "spiffe://cluster.local/nodemesh/node/node-1" },
    });
    // It takes configuration on that stream: a Service applied now reaches it.
    const apply = await mesh.cli(
      ["apply", "-f", "-"],
      "apiVersion: nodemesh.io/v1alpha1\nkind: Service\nmetadata: {name: after-restart, namespace: default}\n" +
        "spec: {vip: 10.96.0.77, ports: [{port: 80, targetPort: 8080}], selector: {app: none}}\n",
    );
    expect(apply.code, apply.stderr).toBe(0);
    await eventually("the Service on node-1", 15_000, async () => {
      const config = (await httpFrom(n1.netnsPath, `http://127.0.0.1:${ADMIN_PORT}/debug/config`)).body;
      return config.includes("after-restart") ? true : undefined;
    });
  }, 60_000);

  it("refuses a stranger holding node-1's certificate who says Hello as node-2, and another CA's certificate", async () => {
    const secret = readFileSync(stateFile(n1, "node-secret"), "utf8").trim();
    const node1 = { certFile: certFile(n1), keyFile: stateFile(n1, "node-key.pem") };
    const before = await refusals("node_certificate_mismatch");
    const asNode2 = await stranger("node-2", secret, node1);
    expect(asNode2).toMatchObject({ accepted: 0, refused: { "7": 1 } }); // PERMISSION_DENIED
    expect(asNode2.details["7"]).toMatch(/nodemesh\/node\/node-1, not .*nodemesh\/node\/node-2/);
    expect(await refusals("node_certificate_mismatch")).toBe(before + 1);
    const log = mesh.controller!.proc.lines.filter((l) => l.includes("node_certificate_mismatch"));
    expect(log.at(-1)).toContain('"node":"node-2"');

    // A certificate for node-1 from a CA of the stranger's own: it counts for nothing, and without the token nothing gets in.
    const own = await WorkloadCa.open("cluster.local");
    const keys = await generateKeys();
    const csr = await x509.Pkcs10CertificateRequestGenerator.create({
      keys: keys as never,
      signingAlgorithm: KEY_ALGORITHM,
    });
    const forged = join(mesh.dir, "forged");
    mkdirSync(forged, { recursive: true });
    writeFileSync(
      join(forged, "cert.pem"),
      await own.issueNode(csr.toString("pem"), nodeSpiffeId("cluster.local", "node-1"), "0".repeat(32), 600_000),
    );
    writeFileSync(join(forged, "key.pem"), await pkcs8Pem(keys.privateKey));
    const foreign = await stranger("node-1", secret, {
      certFile: join(forged, "cert.pem"),
      keyFile: join(forged, "key.pem"),
    });
    expect(foreign).toMatchObject({ accepted: 0, refused: { "16": 1 } }); // UNAUTHENTICATED
    expect((await agent("node-1"))?.connected).toBe(true); // the real node-1 was not replaced
  }, 60_000);

  it("does not let node-1's certificate and secret speak for node-2", async () => {
    // node-1's state (certificate, key, node secret) copied to a process saying it is node-2.
    const stolen = join(mesh.dir, "stolen-state");
    cpSync(join(mesh.dir, n1.name, "state"), stolen, { recursive: true });
    const before = await refusals("node_certificate_mismatch");
    const impostor = mesh.spawnAgent(n2, "impostor", {
      token: false,
      nodeName: "node-2",
      stateDir: stolen,
      args: ["--admin-port", "15030", "--enrollment-socket", join(stolen, "agent.sock")],
    });
    await eventually("the impostor refused", 15_000, async () =>
      (await refusals("node_certificate_mismatch")) > before ? true : undefined,
    ).catch((e) => {
      console.log("IMPOSTOR", impostor.proc.lines.slice(-15).join("\n"));
      throw e;
    });
    await impostor.proc.stop("SIGTERM");
    expect((await agent("node-2"))?.connected).toBe(true); // the real node-2 was not replaced
  }, 60_000);

  it("refuses node-1's certificate once an operator released node-1; the token binds it again, the old certificate stays refused", async () => {
    const old = join(mesh.dir, "released-cert");
    cpSync(join(mesh.dir, n1.name, "state"), old, { recursive: true });
    const released = await mesh.cli(["nodes", "release", "node-1"]);
    expect(released.code, released.stderr).toBe(0);
    await eventually("node-1's certificate refused", 20_000, async () =>
      (await refusals("node_certificate_revoked")) > 0 ? true : undefined,
    );
    await new Promise((r) => setTimeout(r, 1500));
    expect((await agent("node-1"))?.connected).not.toBe(true);
    expect(existsSync(certFile(n1))).toBe(false); // dropped: the next stream bootstraps
    await mesh.stopAgent(n1, "SIGTERM");
    await mesh.startAgent(n1); // with the token
    await eventually("node-1 bound again, with a new certificate", 20_000, async () =>
      (await agent("node-1"))?.connected && existsSync(certFile(n1)) ? true : undefined,
    );
    // Bound again by the same agent, with the same node secret: the certificate from before the
    // release still lets nothing in (it was issued under the binding that was released).
    expect(readFileSync(join(old, "node-secret"), "utf8")).toBe(readFileSync(stateFile(n1, "node-secret"), "utf8"));
    const revokedBefore = await refusals("node_certificate_revoked");
    const stale = await stranger("node-1", readFileSync(join(old, "node-secret"), "utf8").trim(), {
      certFile: join(old, "node-cert.pem"),
      keyFile: join(old, "node-key.pem"),
    });
    expect(stale).toMatchObject({ accepted: 0, refused: { "16": 1 } });
    expect(stale.details["16"]).toMatch(/binding that is gone/);
    expect(await refusals("node_certificate_revoked")).toBe(revokedBefore + 1);
    expect((await agent("node-1"))?.connected).toBe(true);
  }, 60_000);
});
