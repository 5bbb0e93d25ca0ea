// Issue 21's attacker probe, items 1, 8 and 9, across two nodes with a tunnel key: an Upgrade
// request cannot skip routing or rate limits, a tunnel handshake cannot skip the destination's
// HTTP policy, forwarded headers reach the app only as the mesh wrote them, and only agents can use
// a pod's tunnel port.

import { randomBytes } from "node:crypto";
import type net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openTunnel } from "../../agent/dataplane/tunnel.ts";
import { TUNNEL_PORT } from "../../api/dataplane.ts";
import { type Pod, World } from "../world/world.ts";
import { Mesh } from "./mesh.ts";
import { connectFrom } from "./netns-client.ts";

const ROUTED_VIP = "10.96.0.10"; // an HTTPRoute routes /public only
const LIMITED_VIP = "10.96.0.11"; // 1 request/s
const OPEN_VIP = "10.96.0.12"; // no policy
const APP_PORT = 8080;

/** The app: answers every request with what it saw, and counts what reached it. */
const APP = `
let n = 0;
const server = require("node:http").createServer((req, res) => {
  n++;
  res.end(JSON.stringify({ n, path: req.url, xff: req.headers["x-forwarded-for"] ?? null, xfcc: req.headers["x-forwarded-client-cert"] ?? null }));
});
server.listen(${APP_PORT}, () => console.log("app ready"));`;

/** Writes `bytes` on a connection from `from` and returns everything until it closes (2 s at most). */
async function rawExchange(socket: net.Socket, bytes: string): Promise<string> {
  return new Promise((resolve) => {
    let text = "";
    const timer = setTimeout(() => socket.destroy(), 2000);
    socket.setEncoding("latin1");
    socket.on("data", (c: string) => {
      text += c;
      // One answer is all these tests want: a kept-alive or upgraded connection is ended here.
      if (/\r\n\r\n/.test(text) && (/content-length: 0\r\n/i.test(text) || text.endsWith("}"))) socket.destroy();
    });
    socket.on("error", () => {});
    socket.on("close", () => {
      clearTimeout(timer);
      resolve(text);
    });
    socket.write(bytes);
  });
}

const request = (path: string, extra = "") => `GET ${path} HTTP/1.1\r\nHost: web\r\n${extra}\r\n`;
const UPGRADE = "Connection: Upgrade\r\nUpgrade: foo\r\n";

describe("hardening (issue 21 items 1, 8, 9)", () => {
  let world: World;
  let mesh: Mesh;
  let client: Pod;
  let server: Pod;
  let stranger: Pod; // not meshed: reaches tunnel ports directly, as a pod that set SO_MARK would
  let key: string;

  const appCount = async (): Promise<number> =>
    JSON.parse(
      (await rawExchange(await connectFrom(client.netnsPath, OPEN_VIP, 80), request("/count"))).split("\r\n\r\n")[1]!,
    ).n;

  beforeAll(async () => {
    world = await World.create({ nodes: 2 });
    mesh = new Mesh(world, { tunnelKey: true });
    key = mesh.tunnelKey!;
    const [node1, node2] = world.nodes;
    client = await world.addPod(node1!, "client");
    stranger = await world.addPod(node1!, "stranger");
    server = await world.addPod(node2!, "server");
    const svc = (name: string, vip: string) => ({
      name,
      namespace: "default",
      vip,
      ports: [{ port: 80, targetPort: APP_PORT, protocol: "http" as const }],
      endpoints: [{ ip: server.ip, pod: server.name, node: node2!.name, meshed: true }],
    });
    const traffic = [
      {
        kind: "HTTPRoute",
        name: "public-only",
        namespace: "default",
        spec: {
          parentRefs: [{ name: "routed" }],
          rules: [{ matches: [{ path: { type: "PathPrefix", value: "/public" } }], backendRefs: [{ name: "routed" }] }],
        },
      },
      {
        kind: "TrafficPolicy",
        name: "limited",
        namespace: "default",
        spec: { targetRefs: [{ name: "limited" }], rateLimit: { requestsPerSecond: 1, burst: 1 } },
      },
    ];
    mesh.writeServices({
      services: [svc("routed", ROUTED_VIP), svc("limited", LIMITED_VIP), svc("open", OPEN_VIP)],
      traffic,
    } as never);
    await mesh.startAgent(node1!);
    await mesh.startAgent(node2!);
    const app = world.spawn(server, process.execPath, ["-e", APP], { name: "app" });
    await app.waitForLine(/app ready/, 10_000);
    await mesh.enroll(client);
    await mesh.enroll(server);
  }, 90_000);

  afterAll(async () => {
    await mesh?.destroy();
  });

  it("signs tunnels between agents: meshed traffic flows across nodes", async () => {
    const answer = await rawExchange(await connectFrom(client.netnsPath, OPEN_VIP, 80), request("/hello"));
    expect(answer).toMatch(/^HTTP\/1\.1 200 /);
  });

  it("routes an Upgrade request: 404 off the route, nothing reaches the app", async () => {
    const before = await appCount();
    const plain = await rawExchange(
      await connectFrom(client.netnsPath, ROUTED_VIP, 80),
      request("/admin", "Connection: close\r\n"),
    );
    const upgrade = await rawExchange(await connectFrom(client.netnsPath, ROUTED_VIP, 80), request("/admin", UPGRADE));
    expect(plain).toMatch(/^HTTP\/1\.1 404 /);
    expect(upgrade).toMatch(/^HTTP\/1\.1 404 .*\r\nX-Nodemesh-Error: NM_NO_ROUTE\r\n/);
    expect(await appCount()).toBe(before + 1); // the count request itself
  });

  it("rate-limits Upgrade requests: of 20 at once, at most 2 reach the app", async () => {
    const before = await appCount();
    const answers = await Promise.all(
      Array.from({ length: 20 }, async () =>
        rawExchange(await connectFrom(client.netnsPath, LIMITED_VIP, 80), request("/chat", UPGRADE)),
      ),
    );
    const passed = answers.filter((a) => a.startsWith("HTTP/1.1 200")).length;
    expect(answers.filter((a) => a.startsWith("HTTP/1.1 429")).length).toBe(20 - passed);
    expect(passed).toBeLessThanOrEqual(2);
    expect(await appCount()).toBe(before + passed + 1);
  });

  it("keeps a connection HTTP after a non-101 answer: a second request with forged headers never reaches the app raw", async () => {
    const socket = await connectFrom(client.netnsPath, OPEN_VIP, 80);
    const text = await rawExchange(
      socket,
      `${request("/first", UPGRADE)}${request("/second", "X-Nodemesh-Service: evil\r\n")}`,
    );
    expect(text).toMatch(/^HTTP\/1\.1 200 /);
    expect(text).not.toContain('"/second"');
  });

  it("applies the destination's rate limit to HTTP in a signed tunnel that announces no protocol", async () => {
    const before = await appCount();
    let passed = 0;
    for (let i = 0; i < 20; i++) {
      const socket = await connectFrom(stranger.netnsPath, server.ip, TUNNEL_PORT);
      const tunnel = { ip: server.ip, port: APP_PORT, source: "default/client", workload: "default/client" };
      await openTunnel(socket, tunnel, 2000, key);
      socket.resume(); // the handshake leaves it paused
      const answer = await rawExchange(
        socket,
        request("/limited", "X-Nodemesh-Service: limited.default\r\nConnection: close\r\n"),
      );
      if (answer.startsWith("HTTP/1.1 200")) passed++;
      else expect(answer).toMatch(/^HTTP\/1\.1 429 /);
    }
    expect(passed).toBeLessThanOrEqual(2);
    expect(await appCount()).toBe(before + passed + 1);
  });

  it("sets X-Forwarded-For from what the agent saw and drops a client's X-Forwarded-Client-Cert", async () => {
    const forged = "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Client-Cert: URI=spiffe://evil/sa/admin\r\n";
    const answer = await rawExchange(await connectFrom(client.netnsPath, OPEN_VIP, 80), request("/xff", forged));
    const seen = JSON.parse(answer.split("\r\n\r\n")[1]!);
    expect([seen.xff, seen.xfcc]).toEqual([`6.6.6.6, ${client.ip}`, null]);
  });

  it("refuses tunnel handshakes that are not an agent's: unsigned, forged, or signed with another key", async () => {
    const before = await appCount();
    const target = `${server.ip}:${APP_PORT}`;
    const attempts = [
      "",
      `X-Nodemesh-Tunnel-Auth: ${Date.now()}.${"0".repeat(64)}\r\n`,
      "X-Nodemesh-Tunnel-Auth: garbage\r\n",
    ];
    for (const auth of attempts) {
      const socket = await connectFrom(stranger.netnsPath, server.ip, TUNNEL_PORT);
      const answer = await rawExchange(
        socket,
        `CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\nX-Nodemesh-Source: default/stranger\r\n${auth}\r\n${request("/stolen")}`,
      );
      expect(answer).toMatch(/^HTTP\/1\.1 403 Forbidden\r\nX-Nodemesh-Error: NM_TUNNEL_UNAUTHENTICATED\r\n/);
    }
    const otherKey = await connectFrom(stranger.netnsPath, server.ip, TUNNEL_PORT);
    const signedElsewhere = { ip: server.ip, port: APP_PORT, source: "default/stranger" };
    await expect(openTunnel(otherKey, signedElsewhere, 2000, randomBytes(32).toString("hex"))).rejects.toThrow(
      /NM_TUNNEL_UNAUTHENTICATED/,
    );
    otherKey.destroy();
    expect(await appCount()).toBe(before + 1);
  });
});
