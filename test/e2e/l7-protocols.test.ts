// HTTP/1.1 shapes through both agents that the other L7 tests do not send: a chunked request body
// followed by a second request on the same keep-alive connection, and an Upgrade (WebSocket-style)
// that becomes a byte stream both ways after the server's 101.

import type net from "node:net";
import { afterAll, beforeAll, expect, it } from "vitest";
import { type Pod, World } from "../world/world.ts";
import { Mesh } from "./mesh.ts";
import { describeModes } from "./modes.ts";
import { connectFrom } from "./netns-client.ts";

const VIP = "10.96.0.10";

/** A server that answers an Upgrade with 101 and then echoes bytes, uppercased. */
const UPGRADE_SERVER = `
const http = require("node:http");
const server = http.createServer((req, res) => res.end("no upgrade"));
server.on("upgrade", (req, socket) => {
  socket.write("HTTP/1.1 101 Switching Protocols\\r\\nConnection: Upgrade\\r\\nUpgrade: " + req.headers.upgrade + "\\r\\n\\r\\n");
  socket.on("data", (d) => socket.write(d.toString().toUpperCase()));
});
server.listen(9000, () => console.log("upgrade server ready"));
`;

function readUntil(socket: net.Socket, pattern: RegExp, ms = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = "";
    const timer = setTimeout(
      () => reject(new Error(`timed out waiting for ${pattern}; got ${JSON.stringify(text)}`)),
      ms,
    );
    socket.setEncoding("latin1");
    socket.on("data", (c: string) => {
      text += c;
      if (pattern.test(text)) {
        clearTimeout(timer);
        resolve(text);
      }
    });
  });
}

describeModes("HTTP/1.1 shapes through two agents", (mode) => {
  let world: World;
  let mesh: Mesh;
  let client: Pod;

  beforeAll(async () => {
    world = await World.create({ nodes: 2, cgroups: mode === "ebpf" });
    mesh = new Mesh(world, { mode });
    const [n1, n2] = world.nodes;
    client = await world.addPod(n1, "client");
    const server = await world.addPod(n2, "server");
    mesh.writeServices({
      services: [
        {
          name: "server",
          namespace: "default",
          vip: VIP,
          ports: [
            { name: "http", port: 80, targetPort: 8080, protocol: "http" },
            { name: "ws", port: 90, targetPort: 9000, protocol: "http" },
          ],
          endpoints: [{ ip: server.ip, node: n2.name, pod: server.name, meshed: true }],
        },
      ],
    });
    await Promise.all([mesh.startAgent(n1), mesh.startAgent(n2)]);
    await mesh.startWorkload(server, ["--http-port", "8080", "--grpc-port", "0", "--tcp-echo-port", "0"]);
    const upgrade = world.spawn(server, process.execPath, ["-e", UPGRADE_SERVER], { name: "upgrade server" });
    await upgrade.waitForLine(/upgrade server ready/);
    await mesh.enroll(client, ["--label", "app=client"]);
    await mesh.enroll(server, ["--label", "app=server"]);
  }, 60_000);

  afterAll(async () => {
    await mesh?.destroy();
  });

  it("carries a chunked request body whole, then the next request on the same connection", async () => {
    const socket = await connectFrom(client.netnsPath, VIP, 80);
    const replies = readUntil(socket, /"path":"\/second"[\s\S]*$/);
    const chunks = ["a".repeat(1000), "b".repeat(2345), "c".repeat(7)];
    const body = chunks.map((c) => `${c.length.toString(16)}\r\n${c}\r\n`).join("");
    socket.write(`POST /first HTTP/1.1\r\nHost: server\r\nTransfer-Encoding: chunked\r\n\r\n${body}0\r\n\r\n`);
    socket.write("GET /second HTTP/1.1\r\nHost: server\r\n\r\n");
    const text = await replies;
    socket.destroy();
    expect(text.match(/HTTP\/1\.1 200 /g)).toHaveLength(2);
    expect(text).toContain('"path":"/first","requestId"');
    expect(text).toMatch(/"bodyBytes":3352/);
  });

  it("passes an Upgrade through: the server's 101, then bytes both ways", async () => {
    const socket = await connectFrom(client.netnsPath, VIP, 90);
    const switched = readUntil(socket, /\r\n\r\n/);
    socket.write("GET /chat HTTP/1.1\r\nHost: server\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    expect(await switched).toMatch(/^HTTP\/1\.1 101 Switching Protocols\r\n[\s\S]*upgrade: websocket/i);
    socket.removeAllListeners("data");
    const echoed = readUntil(socket, /HELLO THROUGH THE MESH/);
    socket.write("hello through the mesh");
    expect(await echoed).toContain("HELLO THROUGH THE MESH");
    socket.destroy();
  });
});
