// Tunnels over shared mTLS connections, over loopback with certificates of a real CA: many
// tunnels, one handshake; answers and refusals; resets passed on; a renewed certificate and a
// destination that stops taking streams each get a new connection.

import type http2 from "node:http2";
import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateKeys, KEY_ALGORITHM, pkcs8Pem, x509 } from "../../api/x509.ts";
import { WorkloadCa } from "../../controller/identity/workload-ca.ts";
import { AgentError, AgentErrors } from "../errors.ts";
import { plainSockets } from "./dial.ts";
import type { Endpoint } from "./endpoint.ts";
import { acceptSecureTunnel, keyringOf, type WorkerIdentity } from "./mtls.ts";
import type { PodContext } from "./pod.ts";
import type { TunnelRequest } from "./tunnel.ts";
import { acceptTunnels, type TunnelAnswer, TunnelConnections } from "./tunnel-mux.ts";

let ca: WorkloadCa;
async function identity(namespace: string, serviceAccount: string): Promise<WorkerIdentity> {
  const keys = await generateKeys();
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    keys: keys as never,
    signingAlgorithm: KEY_ALGORITHM,
  });
  const spiffeId = `spiffe://cluster.local/ns/${namespace}/sa/${serviceAccount}`;
  return {
    namespace,
    serviceAccount,
    spiffeId,
    certChainPem: await ca.issue(csr.toString("pem"), spiffeId, 60_000),
    keyPem: await pkcs8Pem(keys.privateKey),
    trustBundlePem: ca.trustBundlePem,
  };
}

function pod(name: string, serviceAccount: string): PodContext {
  return {
    key: `default/${name}`,
    pod: { name, namespace: "default", ip: "127.0.0.1", serviceAccount } as PodContext["pod"],
    netns: undefined,
    workload: { name, namespace: "default" },
  } as unknown as PodContext;
}

/** A destination agent on loopback: `port` is where tunnels go; `serve` decides each one. */
async function destination(
  serverId: WorkerIdentity,
  serve: (tunnel: net.Socket, req: TunnelRequest, answer: TunnelAnswer) => void,
) {
  const accepted: net.Socket[] = [];
  const sessions: http2.ServerHttp2Session[] = [];
  const server = net.createServer({ pauseOnConnect: true }, async (socket) => {
    accepted.push(socket);
    const to = pod("web", serverId.serviceAccount);
    const secured = await acceptSecureTunnel(keyringOf([serverId]), to, socket, 2000).catch(() => undefined);
    if (secured?.peer === undefined) return;
    sessions.push(acceptTunnels(secured.socket, serve));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { server, accepted, sessions, port: (server.address() as net.AddressInfo).port };
}

const echo = (tunnel: net.Socket, _req: TunnelRequest, answer: TunnelAnswer) => {
  answer(undefined);
  tunnel.pipe(tunnel);
  tunnel.resume();
};

function roundTrip(socket: net.Socket, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    socket.once("data", (d: Buffer) => resolve(d.toString()));
    socket.once("error", reject);
    socket.resume();
    socket.write(text);
  });
}

describe("tunnels over shared mTLS connections", () => {
  let client: WorkerIdentity;
  let web: WorkerIdentity;
  beforeAll(async () => {
    ca = await WorkloadCa.open("cluster.local");
    [client, web] = await Promise.all([identity("default", "client"), identity("default", "web")]);
  });

  const endpoint = (port: number): Endpoint =>
    ({
      ip: "127.0.0.1",
      port: 8080,
      meshed: true,
      namespace: "default",
      serviceAccount: "web",
      tunnelPort: port,
    }) as never;

  // The tunnel port is fixed (15008) in the product; the tests' destinations listen elsewhere.
  const connections = (port: number, onConnection: () => void, pingMs?: number) =>
    new TunnelConnections(
      (netns) => {
        const socket = plainSockets(netns);
        const connect = socket.connect.bind(socket);
        socket.connect = ((_port: number, host: string) => connect(port, host)) as never;
        return socket;
      },
      onConnection,
      pingMs,
    );

  const servers: net.Server[] = [];
  afterAll(() => {
    for (const s of servers) s.close();
  });

  it("carries many tunnels over one handshake, each with its own bytes and counts", async () => {
    const seen: TunnelRequest[] = [];
    const dest = await destination(web, (tunnel, req, answer) => {
      seen.push(req);
      echo(tunnel, req, answer);
    });
    servers.push(dest.server);
    let handshakes = 0;
    const tunnels = connections(dest.port, () => handshakes++);
    const from = pod("client", "client");
    const opened = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        tunnels.open(() => client, from, endpoint(dest.port), { "x-nodemesh-source": `default/client-${i}` }, 2000),
      ),
    );
    const replies = await Promise.all(opened.map((s, i) => roundTrip(s, `hello ${i}`)));
    expect(replies).toEqual(opened.map((_, i) => `hello ${i}`));
    expect(handshakes).toBe(1);
    expect(dest.accepted.length).toBe(1);
    expect(seen.map((r) => r.source).sort()).toEqual(opened.map((_, i) => `default/client-${i}`).sort());
    expect(seen[0]).toMatchObject({ ip: "127.0.0.1", port: 8080 });
    expect(opened[3]!.bytesRead).toBe("hello 3".length);
    for (const s of opened) s.destroy();
  });

  it("passes a refusal on with its code, and a reset as an error at the other end", async () => {
    const resets: string[] = [];
    const dest = await destination(web, (tunnel, req, answer) => {
      if (req.source === "refuse") return answer(new AgentError(AgentErrors.CONNECT_FAILED, "no workload"));
      answer(undefined);
      tunnel.on("error", (err) => resets.push(err.message));
      tunnel.resume();
    });
    servers.push(dest.server);
    let handshakes = 0;
    const tunnels = connections(dest.port, () => handshakes++);
    const from = pod("client", "client");
    await expect(
      tunnels.open(() => client, from, endpoint(dest.port), { "x-nodemesh-source": "refuse" }, 2000),
    ).rejects.toThrow(/NM_CONNECT_FAILED/);
    const open = await tunnels.open(() => client, from, endpoint(dest.port), { "x-nodemesh-source": "ok" }, 2000);
    // A refusal the destination answered leaves the shared connection as it was: no new handshake.
    expect(handshakes).toBe(1);
    open.resetAndDestroy();
    for (let i = 0; i < 100 && resets.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(resets.join()).toMatch(/NGHTTP2_CONNECT_ERROR|code 10/);
  });

  it("refuses a destination that proves another identity than the endpoint's", async () => {
    const other = await identity("default", "other");
    const dest = await destination(other, echo);
    servers.push(dest.server);
    const tunnels = connections(dest.port, () => {});
    await expect(tunnels.open(() => client, pod("client", "client"), endpoint(dest.port), {}, 2000)).rejects.toThrow(
      /proved URI:spiffe:\/\/cluster\.local\/ns\/default\/sa\/other, not spiffe:\/\/cluster\.local\/ns\/default\/sa\/web/,
    );
  });

  it("opens a new connection for a renewed certificate, and when the destination closes its own", async () => {
    const dest = await destination(web, echo);
    servers.push(dest.server);
    let handshakes = 0;
    const tunnels = connections(dest.port, () => handshakes++);
    const from = pod("client", "client");
    const first = await tunnels.open(() => client, from, endpoint(dest.port), {}, 2000);
    const renewed = await identity("default", "client");
    const second = await tunnels.open(() => renewed, from, endpoint(dest.port), {}, 2000);
    expect(handshakes).toBe(2);
    // The tunnel on the old connection goes on.
    expect(await roundTrip(first, "old")).toBe("old");
    expect(await roundTrip(second, "new")).toBe("new");
    // The destination stops taking streams (GOAWAY, as a draining agent): open tunnels finish,
    // the next one gets a new connection.
    for (const session of dest.sessions) session.close();
    await new Promise((r) => setTimeout(r, 50));
    expect(await roundTrip(second, "still")).toBe("still");
    const third = await tunnels.open(() => renewed, from, endpoint(dest.port), {}, 2000);
    expect(await roundTrip(third, "again")).toBe("again");
    expect(handshakes).toBe(3);
    // The destination goes away (its TLS connections end): the next tunnel connects again.
    for (const session of dest.sessions) session.destroy();
    for (const s of dest.accepted) s.destroy();
    await new Promise((r) => setTimeout(r, 50));
    const fourth = await tunnels.open(() => renewed, from, endpoint(dest.port), {}, 2000);
    expect(await roundTrip(fourth, "back")).toBe("back");
    expect(handshakes).toBe(4);
    for (const s of [first, second, third, fourth]) s.destroy();
  });

  it("ends a connection whose peer stops answering PINGs, and its tunnels with it", async () => {
    const dest = await destination(web, echo);
    servers.push(dest.server);
    // Between the two, a relay that can go silent: the destination's machine hangs.
    const relayed: net.Socket[] = [];
    const relay = net.createServer((inbound) => {
      const outbound = net.connect(dest.port, "127.0.0.1");
      relayed.push(inbound, outbound);
      inbound.pipe(outbound).pipe(inbound);
    });
    servers.push(relay);
    await new Promise<void>((r) => relay.listen(0, "127.0.0.1", r));
    const tunnels = connections((relay.address() as net.AddressInfo).port, () => {}, 100);
    const open = await tunnels.open(() => client, pod("client", "client"), endpoint(dest.port), {}, 2000);
    expect(await roundTrip(open, "alive")).toBe("alive");
    for (const s of relayed) {
      s.unpipe();
      s.pause();
    }
    const closed = await new Promise<number>((resolve) => {
      const started = Date.now();
      open.once("close", () => resolve(Date.now() - started));
      setTimeout(() => resolve(-1), 2000);
    });
    expect(closed).toBeGreaterThan(0);
    expect(closed).toBeLessThan(1000);
    for (const s of relayed) s.destroy();
  });
});
