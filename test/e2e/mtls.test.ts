// mTLS between agents (issue 12, item 3 in part), proven on the wire: a capture on node-1's
// underlay interface during cross-node HTTP and opaque TCP through the mesh finds no byte of a
// payload marker, while the same capture finds the marker of a plaintext request that bypasses the
// mesh (so the check can fail). A tunnel peer without a certificate of the mesh is refused before
// anything reaches the workload.

import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import http2 from "node:http2";
import { join } from "node:path";
import tls from "node:tls";
import { afterAll, beforeAll, expect, it } from "vitest";
import { ADMIN_PORT, TUNNEL_PORT } from "../../api/dataplane.ts";
import { generateKeys, KEY_ALGORITHM, pkcs8Pem, x509 } from "../../api/x509.ts";
import { WorkloadCa } from "../../controller/identity/workload-ca.ts";
import { type Node, type Pod, World } from "../world/world.ts";
import { eventually } from "./eventually.ts";
import { Mesh } from "./mesh.ts";
import { describeModes } from "./modes.ts";
import { connectFrom, echoFrom, http2Get, http2SessionFrom, httpFrom, metricSum } from "./netns-client.ts";

const VIP = "10.96.0.10";
const MARKER = "NODEMESH-SECRET-MARKER-7f3a";
const PLAIN_MARKER = "NODEMESH-PLAINTEXT-MARKER-91c2";

const webYaml = `apiVersion: nodemesh.io/v1alpha1
kind: Service
metadata: { name: web, namespace: default }
spec:
  vip: ${VIP}
  ports:
    - { name: http, port: 80, targetPort: 8080, protocol: http }
    - { name: echo, port: 9000, targetPort: 9000, protocol: tcp }
  selector: { app: web }
`;

describeModes("mTLS between agents", (mode) => {
  let world: World;
  let mesh: Mesh;
  let n1: Node;
  let n2: Node;
  let client: Pod;
  let stranger: Pod; // not meshed, on node-1
  let web: Pod; // meshed, on node-2
  let plain: Pod; // not meshed, on node-2

  const certificates = async (node: Node): Promise<unknown[]> =>
    JSON.parse((await httpFrom(node.netnsPath, `http://127.0.0.1:${ADMIN_PORT}/readyz`)).body).controller.certificates;

  beforeAll(async () => {
    world = await World.create({ nodes: 2, cgroups: mode === "ebpf" });
    mesh = new Mesh(world, { mode });
    [n1, n2] = world.nodes as [Node, Node];
    await mesh.startController();
    await Promise.all([mesh.startAgent(n1), mesh.startAgent(n2)]);
    client = await world.addPod(n1, "client");
    stranger = await world.addPod(n1, "stranger");
    web = await world.addPod(n2, "web-1");
    plain = await world.addPod(n2, "plain-1");
    for (const pod of [web, plain]) {
      await mesh.startWorkload(pod, ["--http-port", "8080", "--grpc-port", "0", "--tcp-echo-port", "9000"]);
    }
    await mesh.enroll(client, ["--label", "app=client", "--service-account", "client"]);
    await mesh.enroll(web, ["--label", "app=web", "--service-account", "web"]);
    const applied = await mesh.cli(["apply", "-f", "-"], webYaml);
    expect(applied.code, applied.stderr).toBe(0);
    await eventually("the Service applied on both nodes", 15_000, async () => {
      const get = await mesh.cli(["get", "services"]);
      return /web\s+10\.96\.0\.10\s+.*2\/2/.test(get.stdout) ? true : undefined;
    });
    await eventually("both agents hold their pods' certificates", 15_000, async () =>
      (await certificates(n1)).length > 0 && (await certificates(n2)).length > 0 ? true : undefined,
    );
  }, 90_000);

  afterAll(async () => {
    await mesh?.destroy();
  });

  it("carries cross-node HTTP/1.1, HTTP/2 and opaque TCP with no cleartext on the underlay", async () => {
    const pcap = join(mesh.dir, "underlay.pcap");
    const capture = world.spawn(
      n1,
      "tcpdump",
      ["-i", "ul0", "--immediate-mode", "-U", "-n", "-Z", "root", "-w", pcap, "tcp"],
      { name: "tcpdump" },
    );
    await capture.waitForLine(/listening on ul0/, 10_000);
    for (let i = 0; i < 10; i++) {
      const r = await httpFrom(client.netnsPath, `http://${VIP}/${MARKER}?q=${MARKER}`, {
        method: "POST",
        body: JSON.stringify({ marker: MARKER }),
      });
      expect(`${r.status} ${r.body} ${JSON.stringify(r.headers)}`).toMatch(/^200 /);
      expect(r.body).toContain(MARKER); // the workload echoes the path: the app saw it in the clear
      // The app learns who called, as the certificates proved it (x-forwarded-client-cert).
      expect(JSON.parse(r.body).clientCert).toBe(
        "By=spiffe://cluster.local/ns/default/sa/web;URI=spiffe://cluster.local/ns/default/sa/client",
      );
      const echoed = await echoFrom(client.netnsPath, VIP, 9000, Buffer.from(`${MARKER}-tcp-${i}`));
      expect(echoed.toString()).toBe(`${MARKER}-tcp-${i}`);
    }
    // HTTP/2 (prior knowledge, as gRPC): the tunnel is served as HTTP/2 at the destination, in TLS,
    // and the destination side proves the caller of each request.
    const proven = async () =>
      metricSum(await mesh.metrics(n2), "nodemesh_requests_total", {
        reporter: "destination",
        destination_workload: "web",
        connection_security_policy: "mutual_tls",
      });
    // The HTTP/1.1 requests above, all counted first.
    await eventually("node-2's agent counted the HTTP/1.1 requests", 5000, async () =>
      (await proven()) >= 10 ? true : undefined,
    );
    const provenBeforeH2 = await proven();
    const session = http2SessionFrom(client.netnsPath, VIP, 80);
    try {
      for (let i = 0; i < 5; i++) {
        const r = await http2Get(session, `/${MARKER}/h2/${i}`);
        expect(r.status).toBe(200);
        expect(r.body).toContain(MARKER);
        expect(JSON.parse(r.body).clientCert).toBe(
          "By=spiffe://cluster.local/ns/default/sa/web;URI=spiffe://cluster.local/ns/default/sa/client",
        );
      }
    } finally {
      session.close();
    }
    await eventually("node-2's agent counted the HTTP/2 requests as proven", 5000, async () =>
      (await proven()) === provenBeforeH2 + 5 ? true : undefined,
    );
    // A request that bypasses the mesh: straight to an unmeshed pod on node-2, in plaintext.
    const bypass = await httpFrom(client.netnsPath, `http://${plain.ip}:8080/${PLAIN_MARKER}`);
    expect(bypass.status).toBe(200);
    await new Promise((r) => setTimeout(r, 300));
    await capture.stop("SIGINT");
    const bytes = readFileSync(pcap);
    const count = (needle: string) => bytes.toString("latin1").split(needle).length - 1;
    expect(count(PLAIN_MARKER)).toBeGreaterThan(0); // the capture sees plaintext when there is any
    expect(count(MARKER)).toBe(0);
    // And the mesh's traffic was there: packets to and from the web pod's tunnel port.
    const tunnel = execFileSync("tcpdump", ["-nr", pcap, `host ${web.ip} and tcp port ${TUNNEL_PORT}`], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "ignore"],
    });
    expect(tunnel.trim().split("\n").length).toBeGreaterThan(40);
    // node-2's agent says how its tunnels came: every one of the client's in mutual TLS.
    const metrics = await mesh.metrics(n2);
    expect(metrics.get('nodemesh_tunnel_connections_total{security="mutual_tls"}')).toBeGreaterThanOrEqual(10);
    expect(metrics.get('nodemesh_tunnel_connections_total{security="plaintext"}') ?? 0).toBe(0);
    // … and they shared a TLS connection: the 10 opaque TCP connections did not each pay a handshake.
    expect(metrics.get('nodemesh_tunnel_tls_connections_total{direction="inbound"}')).toBeGreaterThanOrEqual(1);
    expect(metrics.get('nodemesh_tunnel_tls_connections_total{direction="inbound"}')).toBeLessThanOrEqual(2);
  });

  it("refuses a tunnel peer without a valid certificate for what it claims, before anything reaches the workload", async () => {
    const real = await WorkloadCa.open("cluster.local", mesh.controller!.storeDir);
    const rogue = await WorkloadCa.open("cluster.local");
    const certified = async (ca: WorkloadCa, id: string, issuedAgoMs = 0) => {
      const keys = await generateKeys();
      const csr = await x509.Pkcs10CertificateRequestGenerator.create({
        keys: keys as never,
        signingAlgorithm: KEY_ALGORITHM,
      });
      const cert = await ca.issue(csr.toString("pem"), id, 60_000, Date.now() - issuedAgoMs);
      return { cert, key: await pkcs8Pem(keys.privateKey) };
    };
    const client = "spiffe://cluster.local/ns/default/sa/client";
    const served = async () =>
      JSON.parse((await httpFrom(web.netnsPath, `http://${web.ip}:8080/_control`)).body).served.http as number;
    // What a rogue tunnel client gets: TLS with `credentials`, then an HTTP/2 CONNECT to the web
    // workload (the tunnel's framing in mTLS) and, once answered 200, a request through it.
    const attempt = async (credentials: object, claimedNamespace = "default") => {
      const socket = await connectFrom(stranger.netnsPath, web.ip, TUNNEL_PORT);
      const secure = tls.connect({ socket, rejectUnauthorized: false, ALPNProtocols: ["h2"], ...credentials });
      const source = `${claimedNamespace}/client`;
      return new Promise<string>((resolve) => {
        let text = "";
        const done = (why: string) => {
          clearTimeout(timer);
          secure.destroy();
          resolve(text || why);
        };
        const timer = setTimeout(() => done("no answer"), 5000);
        secure.once("error", (e) => done(`error: ${e.message}`));
        secure.once("close", () => done("closed"));
        secure.once("secureConnect", () => {
          const session = http2.connect(`https://${web.ip}`, { createConnection: () => secure });
          session.on("error", (e) => done(`session error: ${e.message}`));
          const stream = session.request({
            ":method": "CONNECT",
            ":authority": `${web.ip}:8080`,
            "x-nodemesh-source": source,
            "x-nodemesh-source-workload": source,
          });
          stream.on("error", (e) => done(`stream error: ${e.message}`));
          stream.once("response", (headers) => {
            text = `tunnel ${headers[":status"]}\n`;
            if (headers[":status"] !== 200) return done("");
            stream.write("GET /stolen HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
          });
          stream.on("data", (d) => {
            text += d;
          });
          stream.once("end", () => done(""));
        });
      });
    };
    const refusals: [string, object, string?][] = [
      ["no certificate", {}],
      ["another CA's certificate for a real identity", await certified(rogue, client)],
      ["an expired certificate of the mesh's CA", await certified(real, client, 2 * 60_000)],
      ["a certificate of another trust domain", await certified(real, "spiffe://evil.example/ns/default/sa/client")],
      ["a valid certificate, claiming another namespace", await certified(real, client), "shop"],
    ];
    const before = await served();
    for (const [name, credentials, claimed] of refusals) {
      expect(await attempt(credentials, claimed), name).not.toMatch(/^tunnel 200/);
    }
    expect(await served()).toBe(before);
    // The same tool with a valid certificate and honest claims gets through (the check can fail).
    expect(await attempt(await certified(real, client))).toMatch(/^tunnel 200\nHTTP\/1\.1 200/);
    expect(await served()).toBe(before + 1);
  });

  it("PeerAuthentication STRICT: only callers proven by mTLS reach the pods; PERMISSIVE also admits plaintext", async () => {
    const direct = () => httpFrom(stranger.netnsPath, `http://${web.ip}:8080/direct`, { timeoutMs: 2000 });
    const refused = () =>
      direct().then(
        () => undefined,
        () => true,
      );
    expect((await direct()).status).toBe(200); // PERMISSIVE (the default): a caller outside the mesh
    // … labelled as what it is, beside the mesh's callers in mTLS.
    const security = async (policy: string) =>
      metricSum(await mesh.metrics(n2), "nodemesh_requests_total", {
        reporter: "destination",
        destination_workload: "web",
        connection_security_policy: policy,
      });
    await eventually("the plaintext request counted as such", 5000, async () =>
      (await security("none")) >= 1 ? true : undefined,
    );
    expect(await security("mutual_tls")).toBeGreaterThan(0);
    // The whole namespace STRICT.
    const strict = `apiVersion: nodemesh.io/v1alpha1
kind: PeerAuthentication
metadata: { name: default, namespace: default }
spec:
  mtls: { mode: STRICT }
`;
    const applied = await mesh.cli(["apply", "-f", "-"], strict);
    expect(applied.code, applied.stderr).toBe(0);
    await eventually("the plaintext caller refused", 10_000, refused);
    // A plaintext tunnel handshake is refused too, naming why.
    const socket = await connectFrom(stranger.netnsPath, web.ip, TUNNEL_PORT);
    const answer = await new Promise<string>((resolve) => {
      let text = "";
      socket.setEncoding("latin1");
      socket.on("data", (c: string) => {
        text += c;
      });
      socket.on("close", () => resolve(text));
      socket.on("error", () => resolve(text));
      socket.write(`CONNECT ${web.ip}:8080 HTTP/1.1\r\nHost: x\r\n\r\n`);
    });
    expect(answer).toMatch(/^HTTP\/1\.1 403 Forbidden\r\nX-Nodemesh-Error: NM_MTLS_REQUIRED\r\n/);
    // The mesh's own callers prove who they are: still served.
    const viaMesh = await httpFrom(client.netnsPath, `http://${VIP}/strict`);
    expect(viaMesh.status).toBe(200);
    expect(JSON.parse(viaMesh.body).clientCert).toMatch(/URI=spiffe:\/\/cluster\.local\/ns\/default\/sa\/client$/);
    // A pod enrolled just now, with an identity no pod had: its first request, sent the moment
    // enrollment returns, waits for the pod's certificate rather than go out in plaintext.
    const late = await world.addPod(n1, "late");
    await mesh.enroll(late, ["--label", "app=late", "--service-account", "late"]);
    const first = await httpFrom(late.netnsPath, `http://${VIP}/first`);
    expect(`${first.status} ${first.body}`).toMatch(/^200 /);
    expect(JSON.parse(first.body).clientCert).toMatch(/URI=spiffe:\/\/cluster\.local\/ns\/default\/sa\/late$/);

    // The pod's own PeerAuthentication wins over its namespace's: port 8080 PERMISSIVE again,
    // while its other ports keep the namespace's STRICT (the object sets no mode of its own).
    const portLevel = `apiVersion: nodemesh.io/v1alpha1
kind: PeerAuthentication
metadata: { name: web-http-open, namespace: default }
spec:
  targetRefs: [{ name: web }]
  portLevelMtls: { "8080": { mode: PERMISSIVE } }
`;
    expect((await mesh.cli(["apply", "-f", "-"], portLevel)).code).toBe(0);
    await eventually("the plaintext caller served on 8080", 10_000, async () =>
      (await direct().catch(() => undefined))?.status === 200 ? true : undefined,
    );
    const echo = await echoFrom(stranger.netnsPath, web.ip, 9000, Buffer.from("x\n")).catch(() => Buffer.alloc(0));
    expect(echo.length).toBe(0);
    for (const name of ["default", "web-http-open"]) {
      expect((await mesh.cli(["delete", "peerauthentications", name])).code).toBe(0);
    }
    await eventually("PERMISSIVE again", 10_000, async () =>
      (await echoFrom(stranger.netnsPath, web.ip, 9000, Buffer.from("x\n")).catch(() => Buffer.alloc(0))).length > 0
        ? true
        : undefined,
    );
  });
});
