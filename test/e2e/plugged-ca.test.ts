// A CA of the user's PKI plugged into the controller (issue 12: "its own root, or an intermediate
// the user provides as files"), with files made by the openssl CLI as an operator would: the
// agents verify the controller with the user's root only (so its serving certificate chains
// through the intermediate), pods talk in mTLS across nodes with certificates the intermediate
// signed (what the destination presents on its tunnel port verifies with `openssl verify` against
// the user's root), and a controller given a key that is not its certificate's does not start.

import { X509Certificate } from "node:crypto";
import { copyFileSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import tls from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TUNNEL_PORT } from "../../api/dataplane.ts";
import { makePki, opensslVerify, type Pki } from "../pki/openssl-pki.ts";
import { type Node, type Pod, World } from "../world/world.ts";
import { eventually } from "./eventually.ts";
import { Mesh } from "./mesh.ts";
import { connectFrom, httpFrom, metricSum } from "./netns-client.ts";

const VIP = "10.96.0.10";
const CLI = new URL("../../bin/nodemesh.ts", import.meta.url).pathname;

describe("a plugged CA", () => {
  let world: World;
  let mesh: Mesh;
  let pki: Pki;
  let n1: Node;
  let n2: Node;
  let client: Pod;
  let stranger: Pod;
  let web: Pod;

  beforeAll(async () => {
    pki = makePki("Acme");
    world = await World.create({ nodes: 2 });
    mesh = new Mesh(world);
    [n1, n2] = world.nodes as [Node, Node];
    // The agents are given the user's root as --controller-ca-file (where the harness looks for it).
    mkdirSync(join(mesh.dir, "controller-store"), { recursive: true });
    copyFileSync(pki.rootCert, join(mesh.dir, "controller-store", "ca.pem"));
    await mesh.startController([
      "--ca-cert-file",
      pki.caCert,
      "--ca-key-file",
      pki.caKey,
      "--ca-root-file",
      pki.rootCert,
    ]);
    await Promise.all([mesh.startAgent(n1), mesh.startAgent(n2)]);
    client = await world.addPod(n1, "client");
    stranger = await world.addPod(n1, "stranger");
    web = await world.addPod(n2, "web-1");
    await mesh.startWorkload(web, ["--http-port", "8080", "--grpc-port", "0"]);
    await mesh.enroll(client, ["--label", "app=client", "--service-account", "client"]);
    await mesh.enroll(web, ["--label", "app=web", "--service-account", "web"]);
    const applied = await mesh.cli(
      ["apply", "-f", "-"],
      `apiVersion: nodemesh.io/v1alpha1
kind: Service
metadata: { name: web, namespace: default }
spec:
  vip: ${VIP}
  ports: [{ name: http, port: 80, targetPort: 8080, protocol: http }]
  selector: { app: web }
`,
    );
    expect(applied.code, applied.stderr).toBe(0);
  }, 90_000);

  afterAll(async () => {
    await mesh?.destroy();
    pki?.remove();
  });

  it("carries cross-node traffic in mTLS with certificates the user's intermediate signed", async () => {
    // The check throws what went wrong, so that a timeout names the last failure (waitFor's error).
    const reply = await eventually("served through the mesh in mTLS", 20_000, async () => {
      const r = await httpFrom(client.netnsPath, `http://${VIP}/plugged`);
      if (r.status !== 200)
        throw new Error(`answered ${r.status} ${JSON.stringify(r.headers)} ${r.body.slice(0, 300)}`);
      if (!JSON.parse(r.body).clientCert)
        throw new Error(`served without a client certificate: ${r.body.slice(0, 300)}`);
      return r;
    });
    expect(JSON.parse(reply.body).clientCert).toBe(
      "By=spiffe://cluster.local/ns/default/sa/web;URI=spiffe://cluster.local/ns/default/sa/client",
    );
    const metrics = await mesh.metrics(n2);
    expect(metricSum(metrics, "nodemesh_tunnel_connections_total", { security: "mutual_tls" })).toBeGreaterThan(0);

    // What web's tunnel port presents: the leaf for its identity and the user's intermediate.
    const socket = await connectFrom(stranger.netnsPath, web.ip, TUNNEL_PORT);
    const presented = await new Promise<tls.DetailedPeerCertificate>((resolve, reject) => {
      const secure = tls.connect({ socket, rejectUnauthorized: false, ALPNProtocols: ["h2"] });
      secure.once("secureConnect", () => {
        resolve(secure.getPeerCertificate(true));
        secure.destroy();
      });
      secure.once("error", reject);
    });
    const leaf = new X509Certificate(presented.raw);
    const issuer = new X509Certificate(presented.issuerCertificate.raw);
    expect(leaf.subjectAltName).toBe("URI:spiffe://cluster.local/ns/default/sa/web");
    expect(issuer.subject).toContain("CN=Acme nodemesh intermediate");
    writeFileSync(join(pki.dir, "presented-leaf.pem"), leaf.toString());
    expect(opensslVerify(pki.rootCert, pki.caCert, join(pki.dir, "presented-leaf.pem"))).toContain(": OK");
  });

  it("refuses to rotate the user's root, and to start with a key that is not the certificate's", async () => {
    const rotate = await mesh.cli(["ca", "rotate"]);
    expect(rotate.code).not.toBe(0);
    expect(`${rotate.stdout}${rotate.stderr}`).toMatch(/rotate it in your PKI/);
    const wrongKey = await world.exec(
      mesh.controller!.place,
      process.execPath,
      [
        CLI,
        "controller",
        "--store-dir",
        join(mesh.dir, "other-store"),
        "--grpc-address",
        "127.0.0.1",
        "--grpc-port",
        "0",
        "--port",
        "0",
        "--ca-cert-file",
        pki.caCert,
        "--ca-key-file",
        pki.rootKey,
        "--ca-root-file",
        pki.rootCert,
      ],
      { timeoutMs: 20_000 },
    );
    expect(wrongKey.code).not.toBe(0);
    expect(wrongKey.stderr).toContain(`--ca-key-file ${pki.rootKey} is not the key of --ca-cert-file ${pki.caCert}`);
  });
});
