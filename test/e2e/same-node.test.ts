// Traffic between two pods of one node: the agent serves it in memory, without a TLS connection to
// itself. Opaque TCP and HTTP/1.1 go through tunnels of in-memory sockets
// (agent/dataplane/local-tunnel.ts); HTTP/2 and gRPC requests are handed from the source side's
// chain to the destination side's (agent/dataplane/http/attempt-local.ts), with no tunnel at all.
// Either way the destination side still does all it does for traffic from another node: the
// caller's identity reaches the app (x-forwarded-client-cert), STRICT admits the caller,
// AuthorizationPolicy tells one caller's principal from another's, and its answer (gRPC trailers,
// errors, a deadline) reaches the caller. A tunnel or a handed-over request keeps the destination
// pod's namespace open until it ends, also after the pod left the mesh.

import { readdirSync, statSync } from "node:fs";
import type http2 from "node:http2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Node, type Pod, World } from "../world/world.ts";
import type { GrpcArgs, GrpcReport } from "./clients/grpc-call.ts";
import { grpcCallIn } from "./clients/in-pod.ts";
import { eventually } from "./eventually.ts";
import { Mesh } from "./mesh.ts";
import { connectFrom, echoFrom, http2Get, http2SessionFrom, httpFrom, metricSum } from "./netns-client.ts";

const VIP = "10.96.0.10";
const CLIENT_PRINCIPAL = "spiffe://cluster.local/ns/default/sa/client";
const FROM_CLIENT = `By=spiffe://cluster.local/ns/default/sa/web;URI=${CLIENT_PRINCIPAL}`;

const webYaml = `apiVersion: nodemesh.io/v1alpha1
kind: Service
metadata: { name: web, namespace: default }
spec:
  vip: ${VIP}
  ports:
    - { name: http, port: 80, targetPort: 8080, protocol: http }
    - { name: echo, port: 9000, targetPort: 9000, protocol: tcp }
    - { name: grpc, port: 9090, targetPort: 9090, protocol: grpc }
  selector: { app: web }
`;

const retriesYaml = `apiVersion: nodemesh.io/v1alpha1
kind: TrafficPolicy
metadata: { name: web-retries, namespace: default }
spec:
  targetRefs: [{ name: web }]
  retries: { attempts: 2, retryOn: [gateway-error] }
`;

const timeoutYaml = `apiVersion: nodemesh.io/v1alpha1
kind: TrafficPolicy
metadata: { name: web-timeout, namespace: default }
spec:
  targetRefs: [{ name: web }]
  timeouts: { request: 300ms }
`;

const strictYaml = `apiVersion: nodemesh.io/v1alpha1
kind: PeerAuthentication
metadata: { name: default, namespace: default }
spec:
  mtls: { mode: STRICT }
`;

const onlyClientYaml = JSON.stringify({
  apiVersion: "nodemesh.io/v1alpha1",
  kind: "AuthorizationPolicy",
  metadata: { name: "web-only-client", namespace: "default" },
  spec: {
    targetRefs: [{ name: "web" }],
    action: "ALLOW",
    rules: [{ from: [{ source: { principals: [CLIENT_PRINCIPAL] } }] }],
  },
});

describe("traffic between pods of one node", () => {
  let world: World;
  let mesh: Mesh;
  let node: Node;
  let client: Pod; // sa client
  let other: Pod; // sa other
  let stranger: Pod; // not meshed
  let web: Pod; // sa web

  const grpcCall = (from: Pod, args: GrpcArgs): Promise<GrpcReport> => grpcCallIn(world, from, args);
  /** web's fault settings (test/workload): asked of the app directly, from its own namespace. */
  const control = async (patch: Record<string, number>) => {
    const r = await httpFrom(web.netnsPath, `http://${web.ip}:8080/_control`, {
      method: "POST",
      body: JSON.stringify(patch),
    });
    expect(r.status, r.body).toBe(200);
  };
  const tunnelsOpened = async () => {
    const metrics = await mesh.metrics(node);
    return {
      sameNode: metricSum(metrics, "nodemesh_tunnel_connections_total", { security: "same_node" }),
      tls: metricSum(metrics, "nodemesh_tunnel_tls_connections_total"),
    };
  };

  const clientCertSeenBy = async (from: Pod) => {
    const r = await httpFrom(from.netnsPath, `http://${VIP}/who`, { timeoutMs: 3000 });
    return { status: r.status, clientCert: r.status === 200 ? JSON.parse(r.body).clientCert : undefined };
  };
  /** Until web answers the client through the mesh, with the client's proven identity. */
  const webServesTheClient = (what: string) =>
    eventually(what, 15_000, async () => {
      const seen = await clientCertSeenBy(client).catch(() => undefined);
      return seen?.clientCert === FROM_CLIENT ? true : undefined;
    });

  beforeAll(async () => {
    world = await World.create({ nodes: 1 });
    mesh = new Mesh(world);
    [node] = world.nodes as [Node];
    await mesh.startController();
    await mesh.startAgent(node);
    client = await world.addPod(node, "client");
    other = await world.addPod(node, "other");
    stranger = await world.addPod(node, "stranger");
    web = await world.addPod(node, "web-1");
    await mesh.startWorkload(web, ["--http-port", "8080", "--grpc-port", "9090", "--tcp-echo-port", "9000"]);
    await mesh.enroll(client, ["--label", "app=client", "--service-account", "client"]);
    await mesh.enroll(other, ["--label", "app=other", "--service-account", "other"]);
    await mesh.enroll(web, ["--label", "app=web", "--service-account", "web"]);
    const applied = await mesh.cli(["apply", "-f", "-"], webYaml);
    expect(applied.code, applied.stderr).toBe(0);
    await webServesTheClient("the caller's identity served to the app");
  }, 90_000);

  afterAll(async () => {
    await mesh?.destroy();
  });

  it("carries HTTP/1.1, HTTP/2 and opaque TCP with the caller's proven identity, and no TLS connection to itself", async () => {
    for (let i = 0; i < 10; i++) {
      // Bodies of up to 1 MiB, streamed through the same-node tunnel to the app.
      const body = "a".repeat(i * 100_000 + 16);
      const r = await httpFrom(client.netnsPath, `http://${VIP}/same-node/${i}`, { method: "POST", body });
      expect(`${r.status} ${r.body}`).toMatch(/^200 /);
      expect(JSON.parse(r.body)).toMatchObject({ clientCert: FROM_CLIENT, bodyBytes: body.length });
      const echoed = await echoFrom(client.netnsPath, VIP, 9000, Buffer.from(`same-node-${i}`));
      expect(echoed.toString()).toBe(`same-node-${i}`);
    }
    // HTTP/2 requests are handed over: no tunnel.
    const beforeH2 = await tunnelsOpened();
    const session: http2.ClientHttp2Session = http2SessionFrom(client.netnsPath, VIP, 80);
    try {
      for (let i = 0; i < 5; i++) {
        const r = await http2Get(session, `/same-node/h2/${i}`);
        expect(r.status).toBe(200);
        expect(JSON.parse(r.body).clientCert).toBe(FROM_CLIENT);
      }
    } finally {
      session.close();
    }
    expect(await tunnelsOpened()).toEqual(beforeH2);
    const metrics = await mesh.metrics(node);
    // Every opaque TCP connection is a tunnel of its own; the HTTP/1.1 ones are pooled.
    expect(metricSum(metrics, "nodemesh_tunnel_connections_total", { security: "same_node" })).toBeGreaterThanOrEqual(
      11,
    );
    expect(metricSum(metrics, "nodemesh_tunnel_connections_total", { security: "mutual_tls" })).toBe(0);
    expect(metricSum(metrics, "nodemesh_tunnel_connections_total", { security: "plaintext" })).toBe(0);
    expect(metricSum(metrics, "nodemesh_tunnel_tls_connections_total")).toBe(0);
    // The destination side's own report: the caller's identity was proven.
    await eventually("the destination side's requests counted", 5000, async () => {
      const proven = metricSum(await mesh.metrics(node), "nodemesh_requests_total", {
        reporter: "destination",
        destination_workload: "web",
        connection_security_policy: "mutual_tls",
      });
      return proven >= 15 ? true : undefined;
    });
  });

  it("hands gRPC calls over with their streams, trailers and error statuses", async () => {
    const before = await tunnelsOpened();
    const unary = await grpcCall(client, { target: `${VIP}:9090`, mode: "unary", calls: 5, concurrency: 2 });
    expect(unary.codes).toEqual({ OK: 5 });
    expect(unary.pods).toEqual({ "web-1": 5 });
    const bidi = await grpcCall(client, { target: `${VIP}:9090`, mode: "bidi", calls: 2, messages: 4 });
    expect(bidi.codes).toEqual({ OK: 2 });
    for (const stream of bidi.streams!) expect(stream.received.map((r) => r.message)).toEqual(stream.sent);
    // The app's own status, in the trailers of its answer.
    await control({ failRate: 1, failStatus: 503 });
    try {
      const failing = await grpcCall(client, { target: `${VIP}:9090`, mode: "unary", calls: 2 });
      expect(failing.codes).toEqual({ UNAVAILABLE: 2 });
      expect(failing.details).toEqual({ "injected failure (HTTP 503)": 2 });
    } finally {
      await control({ failRate: 0 });
    }
    expect(await tunnelsOpened()).toEqual(before);
    await eventually("the destination side's gRPC requests counted", 5000, async () => {
      const metrics = await mesh.metrics(node);
      const proven = (grpcCode: string) =>
        metricSum(metrics, "nodemesh_requests_total", {
          reporter: "destination",
          destination_workload: "web",
          grpc_status: grpcCode,
          connection_security_policy: "mutual_tls",
        });
      return proven("0") >= 7 && proven("14") >= 2 ? true : undefined;
    });
  });

  it("ends the app's HTTP/2 request when the caller's deadline passes, with 504 NM_TIMEOUT", async () => {
    const applied = await mesh.cli(["apply", "-f", "-"], timeoutYaml);
    expect(applied.code, applied.stderr).toBe(0);
    await control({ latencyMs: 1500 });
    const session = http2SessionFrom(client.netnsPath, VIP, 80);
    try {
      await eventually("the deadline in force", 10_000, async () => {
        const r = await http2Get(session, "/slow", 3000);
        return r.status === 504 ? r : undefined;
      });
      const started = performance.now();
      const r = await http2Get(session, "/slow", 3000);
      expect(r.status).toBe(504);
      expect(r.headers["x-nodemesh-error"]).toBe("NM_TIMEOUT");
      expect(performance.now() - started).toBeLessThan(1000);
      // The destination side saw its caller leave: it reports the request unanswered.
      await eventually("the destination side's request ended unanswered", 5000, async () => {
        const unanswered = metricSum(await mesh.metrics(node), "nodemesh_requests_total", {
          reporter: "destination",
          destination_workload: "web",
          response_code: "0",
        });
        return unanswered >= 2 ? true : undefined;
      });
    } finally {
      session.close();
      await control({ latencyMs: 0 });
      const deleted = await mesh.cli(["delete", "trafficpolicies", "web-timeout"]);
      expect(deleted.code, deleted.stderr).toBe(0);
    }
  });

  // A retry throws the answer it retries away unread: the hand-off must let it go quietly (an
  // unheard stream error there would end the agent's worker, and its counters with it).
  it("retries the app's HTTP/2 503 through the hand-off, dropping each unread answer", async () => {
    const applied = await mesh.cli(["apply", "-f", "-"], retriesYaml);
    expect(applied.code, applied.stderr).toBe(0);
    const count = async () => {
      const metrics = await mesh.metrics(node);
      return {
        retries: metricSum(metrics, "nodemesh_retries_total"),
        requests: metricSum(metrics, "nodemesh_requests_total", { reporter: "source" }),
      };
    };
    await control({ failRate: 1, failStatus: 503 });
    const session = http2SessionFrom(client.netnsPath, VIP, 80);
    try {
      await eventually("the retry policy in force", 10_000, async () => {
        const before = await count();
        await http2Get(session, "/retried");
        return (await count()).retries > before.retries ? true : undefined;
      });
      const before = await count();
      for (let i = 0; i < 5; i++) {
        const r = await http2Get(session, `/retried/${i}`);
        // The app's own answer, the last attempt's, delivered as it was.
        expect(r.status).toBe(503);
        expect(JSON.parse(r.body)).toMatchObject({ pod: "web-1", error: true });
      }
      await eventually("every request and retry counted", 5000, async () => {
        const after = await count();
        return after.requests >= before.requests + 5 ? after : undefined;
      });
      const after = await count();
      expect(after.retries - before.retries).toBe(10);
    } finally {
      session.close();
      await control({ failRate: 0 });
      const deleted = await mesh.cli(["delete", "trafficpolicies", "web-retries"]);
      expect(deleted.code, deleted.stderr).toBe(0);
    }
  });

  it("applies the destination's policies to a caller on the same node: STRICT admits it, AuthorizationPolicy knows its principal", async () => {
    for (const yaml of [strictYaml, onlyClientYaml]) {
      const applied = await mesh.cli(["apply", "-f", "-"], yaml);
      expect(applied.code, applied.stderr).toBe(0);
    }
    // STRICT is in force (a caller outside the mesh is refused) …
    await eventually("the caller outside the mesh refused", 10_000, async () =>
      httpFrom(stranger.netnsPath, `http://${web.ip}:8080/direct`, { timeoutMs: 2000 }).then(
        () => undefined,
        () => true,
      ),
    );
    // … and the policy: the other workload of the same namespace is not the principal it allows.
    await eventually("the other caller denied", 10_000, async () =>
      (await clientCertSeenBy(other)).status === 403 ? true : undefined,
    );
    const allowed = await clientCertSeenBy(client);
    expect(allowed).toEqual({ status: 200, clientCert: FROM_CLIENT });
    // The same over HTTP/2, handed over without a tunnel.
    for (const [from, status] of [
      [other, 403],
      [client, 200],
    ] as const) {
      const session = http2SessionFrom(from.netnsPath, VIP, 80);
      try {
        const r = await http2Get(session, "/who");
        expect(r.status).toBe(status);
        if (status === 200) expect(JSON.parse(r.body).clientCert).toBe(FROM_CLIENT);
      } finally {
        session.close();
      }
    }
  });

  /** The agent's descriptors open on web's namespace file (stat follows each to what it opened). */
  const webNamespaceHeld = () => {
    const pid = mesh.agents.get(node)!.proc.pid!;
    const webNetns = statSync(web.netnsPath);
    return readdirSync(`/proc/${pid}/fd`).filter((fd) => {
      try {
        const opened = statSync(`/proc/${pid}/fd/${fd}`);
        return opened.dev === webNetns.dev && opened.ino === webNetns.ino;
      } catch {
        return false; // closed meanwhile
      }
    }).length;
  };
  const leaveMesh = async (pod: Pod) => {
    const left = await mesh.enrollmentCall(node, node, "DELETE", `/v1/pods/default/${pod.name}`);
    expect(left.status).toBe(200);
  };

  // Next to last: web leaves the mesh while a request handed over to it waits for the app. The
  // request is no connection of the pod's listeners, so it holds the pod's namespace open itself
  // until it ends, as a tunnel does (below). Then web enrolls again.
  it("keeps the destination pod's namespace open while a request handed over to it runs, after the pod left the mesh", async () => {
    await control({ latencyMs: 1500 });
    const session = http2SessionFrom(client.netnsPath, VIP, 80);
    try {
      const slow = http2Get(session, "/slow", 5000);
      await new Promise((r) => setTimeout(r, 300));
      expect(webNamespaceHeld()).toBeGreaterThan(0); // the check can see them
      await leaveMesh(web);
      await new Promise((r) => setTimeout(r, 300));
      expect(webNamespaceHeld()).toBeGreaterThan(0);
      const r = await slow;
      expect(r.status).toBe(200);
      await eventually("the namespace released once the request ended", 5000, async () =>
        webNamespaceHeld() === 0 ? true : undefined,
      );
    } finally {
      session.close();
      await control({ latencyMs: 0 });
    }
    await mesh.enroll(web, ["--label", "app=web", "--service-account", "web"]);
    await webServesTheClient("web served through the mesh again");
  });

  // Last: web leaves the mesh. A tunnel in memory is no listener's connection, so it holds the pod's
  // namespace open itself: closed under it, its descriptor's number could be reused for another
  // pod's namespace while the tunnel may still dial from it.
  it("keeps the destination pod's namespace open while a tunnel to it is, after the pod left the mesh", async () => {
    const tunnel = await connectFrom(client.netnsPath, VIP, 9000);
    const echo = (text: string) =>
      new Promise<string>((resolve) => {
        tunnel.once("data", (d: Buffer) => resolve(d.toString()));
        tunnel.write(text);
      });
    expect(await echo("before")).toBe("before");
    expect(webNamespaceHeld()).toBeGreaterThan(0); // the check can see them
    await leaveMesh(web);
    await new Promise((r) => setTimeout(r, 300));
    expect(webNamespaceHeld()).toBeGreaterThan(0);
    expect(await echo("after")).toBe("after"); // and the tunnel still serves
    tunnel.destroy();
    await eventually("the namespace released once the tunnel closed", 5000, async () =>
      webNamespaceHeld() === 0 ? true : undefined,
    );
  });
});
