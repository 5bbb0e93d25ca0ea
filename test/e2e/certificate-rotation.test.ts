// Certificate rotation under load (issue 12): workload certificates that live 10 s are renewed at
// half-life on both agents while a client sends a steady 300 requests/s across nodes in mTLS,
// half HTTP on keep-alive connections (pooled tunnels that outlive the certificate they were
// opened with), half on a new TCP connection per request to a port forwarded as bytes (every one
// a new tunnel, a new handshake with whatever certificate is current). At least 5 renewals on each side, and not one failed request.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_PORT } from "../../api/dataplane.ts";
import { type Node, type Pod, World } from "../world/world.ts";
import type { LoadArgs, LoadReport } from "./clients/http-load.ts";
import { httpLoadIn } from "./clients/in-pod.ts";
import { eventually } from "./eventually.ts";
import { Mesh } from "./mesh.ts";
import { httpFrom, metricSum } from "./netns-client.ts";

const VIP = "10.96.0.10";
const SECONDS = 32;
const RATE_EACH = 150;

const webYaml = `apiVersion: nodemesh.io/v1alpha1
kind: Service
metadata: { name: web, namespace: default }
spec:
  vip: ${VIP}
  ports:
    - { name: http, port: 80, targetPort: 8080, protocol: http }
    # The same app as opaque TCP: each client connection is a tunnel of its own.
    - { name: raw, port: 81, targetPort: 8080, protocol: tcp }
  selector: { app: web }
`;

interface Held {
  spiffeId: string;
  notAfter: string;
  renewals: number;
}

describe("certificate rotation under load", () => {
  let world: World;
  let mesh: Mesh;
  let n1: Node;
  let n2: Node;
  let client: Pod;

  const held = async (node: Node): Promise<Held[]> =>
    JSON.parse((await httpFrom(node.netnsPath, `http://127.0.0.1:${ADMIN_PORT}/readyz`)).body).controller.certificates;
  const load = (args: LoadArgs): Promise<LoadReport> => httpLoadIn(world, client, args);

  /** Half the load HTTP on keep-alive connections, half a new TCP connection (a new tunnel) per request. */
  const bothLoads = (requests: number) =>
    Promise.all([
      load({ url: `http://${VIP}/kept`, requests, rate: RATE_EACH, timeoutMs: 5000 }),
      load({
        url: `http://${VIP}:81/fresh`,
        requests,
        rate: RATE_EACH,
        timeoutMs: 5000,
        headers: { connection: "close" },
      }),
    ]);
  const expectAllServed = (requests: number, keepAlive: LoadReport, newConnections: LoadReport) => {
    for (const [name, r] of [
      ["keep-alive", keepAlive],
      ["new connections", newConnections],
    ] as const) {
      const outcome = { statuses: r.statuses, errors: r.errors, nmErrors: r.nmErrors };
      expect(outcome, name).toEqual({ statuses: { "200": requests }, errors: {}, nmErrors: {} });
    }
  };

  beforeAll(async () => {
    world = await World.create({ nodes: 2 });
    // A connect budget of 5 s (Istio's default is 10 s; the harness runs the product's 1 s): two
    // cores are shared by both agents, the controller, the app and two load generators, and with every new connection a TLS handshake on each side, a few handshakes
    // wait past 1 s at this load (multiplexed tunnels, one handshake per node pair, will end that).
    mesh = new Mesh(world, { agentArgs: ["--connect-timeout-ms", "5000"] });
    [n1, n2] = world.nodes as [Node, Node];
    await mesh.startController(["--workload-cert-ttl", "10s"]);
    await Promise.all([mesh.startAgent(n1), mesh.startAgent(n2)]);
    client = await world.addPod(n1, "client");
    const web = await world.addPod(n2, "web-1");
    await mesh.startWorkload(web, ["--http-port", "8080", "--grpc-port", "0"]);
    await mesh.enroll(client, ["--label", "app=client", "--service-account", "client"]);
    await mesh.enroll(web, ["--label", "app=web", "--service-account", "web"]);
    expect((await mesh.cli(["apply", "-f", "-"], webYaml)).code).toBe(0);
    await eventually("requests in mTLS", 20_000, async () =>
      (await httpFrom(client.netnsPath, `http://${VIP}/ready`).catch(() => undefined))?.body.includes("sa/client")
        ? true
        : undefined,
    );
  }, 90_000);

  afterAll(async () => {
    await mesh?.destroy();
  });

  it("renews at least 5 times on each side with zero failed requests at 300 requests/s", async () => {
    const renewals = async () =>
      Object.fromEntries(await Promise.all([n1, n2].map(async (n) => [n.name, (await held(n))[0]?.renewals ?? 0])));
    const before = await renewals();
    const tunnelsBefore = metricSum(await mesh.metrics(n2), "nodemesh_tunnel_connections_total", {
      security: "mutual_tls",
    });
    const requests = SECONDS * RATE_EACH;
    const [keepAlive, fresh] = await bothLoads(requests);
    const after = await renewals();
    expectAllServed(requests, keepAlive, fresh);
    for (const node of [n1, n2]) {
      expect(after[node.name]! - before[node.name]!, `renewals on ${node.name}`).toBeGreaterThanOrEqual(5);
    }
    // The new-connection half really opened new tunnels, every one in mTLS.
    const m = await mesh.metrics(n2);
    expect(
      metricSum(m, "nodemesh_tunnel_connections_total", { security: "mutual_tls" }) - tunnelsBefore,
    ).toBeGreaterThanOrEqual(requests * 0.9);
    expect(metricSum(m, "nodemesh_tunnel_connections_total", { security: "plaintext" })).toBe(0);
  }, 120_000);

  it("replaces the CA's root with an overlap, with zero failed requests at 300 requests/s", async () => {
    const ca = async () =>
      JSON.parse((await mesh.cli(["ca", "-o", "json"])).stdout) as { phase?: string; roots: string[] };
    const [old] = (await ca()).roots;
    const requests = SECONDS * RATE_EACH;
    const loads = bothLoads(requests);
    await new Promise((resolve) => setTimeout(resolve, 2000));
    const rotate = await mesh.cli(["ca", "rotate", "-o", "json"]);
    expect(rotate.code, rotate.stderr).toBe(0);
    const started = JSON.parse(rotate.stdout) as { phase: string; roots: string[] };
    expect(started.phase).toBe("trusting");
    expect(started.roots).toHaveLength(2);
    expect(started.roots[0]).toBe(old); // the old root still signs
    const fresh = started.roots[1]!;
    // Two steps of one certificate lifetime (10 s) and a margin each, while the load runs.
    const done = await eventually("the rotation done", 40_000, async () => {
      const now = await ca();
      return now.phase === undefined ? now : undefined;
    });
    expect(done.roots).toEqual([fresh]);
    const [keepAlive, newConnections] = await loads;
    expectAllServed(requests, keepAlive, newConnections);
    // An agent that starts now is given the new root (ca.pem) and must reach the controller, whose
    // own serving certificate was issued again from it.
    await mesh.stopAgent(n1, "SIGTERM");
    await mesh.startAgent(n1);
    await eventually("node-1's agent holds its certificate again", 20_000, async () =>
      (await held(n1)).length > 0 ? true : undefined,
    );
    // Still mutual TLS after the old root is gone.
    const after = await httpFrom(client.netnsPath, `http://${VIP}/after`);
    expect(JSON.parse(after.body).clientCert).toMatch(/URI=spiffe:\/\/cluster\.local\/ns\/default\/sa\/client$/);
  }, 120_000);
});
