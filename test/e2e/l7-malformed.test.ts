// Malformed HTTP never reaches an app. Raw bytes from a meshed client pod to a declared HTTP
// service: each request-smuggling shape, an oversized head and a slow client get a 4xx or a closed
// connection from the agent; the workload counts no request; and a client holding a keep-alive
// connection meanwhile is served throughout.

import type net from "node:net";
import { afterAll, beforeAll, expect, it } from "vitest";
import { type Pod, World } from "../world/world.ts";
import { Mesh } from "./mesh.ts";
import { describeModes } from "./modes.ts";
import { connectFrom, httpFrom } from "./netns-client.ts";

const VIP = "10.96.0.10";
const HEADERS_TIMEOUT_MS = 1000;

/** Sends `bytes` and collects everything until the agent closes or `ms` pass. */
async function exchange(socket: net.Socket, bytes: string, ms = 3000): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve) => {
    let text = "";
    const done = (closed: boolean) => {
      clearTimeout(timer);
      resolve({ text, closed });
    };
    const timer = setTimeout(() => done(false), ms);
    socket.setEncoding("latin1");
    socket.on("data", (c: string) => {
      text += c;
    });
    socket.on("close", () => done(true));
    socket.on("error", () => {});
    socket.write(bytes);
  });
}

const SHAPES: ReadonlyArray<{ what: string; bytes: string; status: number }> = [
  {
    what: "Content-Length with Transfer-Encoding",
    bytes:
      "POST / HTTP/1.1\r\nHost: r\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: r\r\n\r\n",
    status: 400,
  },
  {
    what: "two different Content-Length headers",
    bytes: "POST / HTTP/1.1\r\nHost: r\r\nContent-Length: 3\r\nContent-Length: 40\r\n\r\nabc",
    status: 400,
  },
  {
    what: "bad chunked encoding",
    bytes: "POST / HTTP/1.1\r\nHost: r\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    status: 400,
  },
  {
    what: "a folded header (obs-fold)",
    bytes: "GET / HTTP/1.1\r\nHost: r\r\nX-Folded: a\r\n b\r\n\r\n",
    status: 400,
  },
  { what: "two Host headers", bytes: "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", status: 400 },
  {
    what: "an oversized head",
    bytes: `GET / HTTP/1.1\r\nHost: r\r\nX-Big: ${"x".repeat(20 * 1024)}\r\n\r\n`,
    status: 431,
  },
  {
    what: "Transfer-Encoding other than chunked last",
    bytes: "POST / HTTP/1.1\r\nHost: r\r\nTransfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    status: 400,
  },
];

describeModes("malformed HTTP", (mode) => {
  let world: World;
  let mesh: Mesh;
  let client: Pod;
  let server: Pod;

  const served = async (): Promise<number> => {
    const reply = await httpFrom(server.netnsPath, `http://${server.ip}:8080/_control`);
    return JSON.parse(reply.body).served.http;
  };

  beforeAll(async () => {
    world = await World.create({ nodes: 2, cgroups: mode === "ebpf" });
    mesh = new Mesh(world, { mode, agentArgs: ["--http-headers-timeout-ms", String(HEADERS_TIMEOUT_MS)] });
    const [n1, n2] = world.nodes;
    client = await world.addPod(n1, "client");
    server = await world.addPod(n2, "server");
    mesh.writeServices({
      services: [
        {
          name: "server",
          namespace: "default",
          vip: VIP,
          ports: [{ name: "http", port: 80, targetPort: 8080, protocol: "http" }],
          endpoints: [{ ip: server.ip, node: n2.name, pod: server.name, meshed: true }],
        },
      ],
    });
    await Promise.all([mesh.startAgent(n1), mesh.startAgent(n2)]);
    await mesh.startWorkload(server, ["--http-port", "8080", "--grpc-port", "0", "--tcp-echo-port", "0"]);
    await mesh.enroll(client, ["--label", "app=client"]);
    await mesh.enroll(server, ["--label", "app=server"]);
  }, 60_000);

  afterAll(async () => {
    await mesh?.destroy();
  });

  it.each(SHAPES)("answers $what with $status, closes, and the app never sees it", async ({ bytes, status }) => {
    const before = await served();
    const socket = await connectFrom(client.netnsPath, VIP, 80);
    const { text, closed } = await exchange(socket, bytes);
    expect(text).toMatch(new RegExp(`^HTTP/1\\.1 ${status} `));
    expect(text).toMatch(/\r\nx-nodemesh-error: NM_[A-Z_]+\r\n/i);
    expect(closed).toBe(true);
    // Exactly one answer: nothing smuggled after the first request got through.
    expect(text.match(/HTTP\/1\.1 /g)).toHaveLength(1);
    expect(await served()).toBe(before);
  });

  it("cuts a slow client (slowloris) after the header timeout while serving a keep-alive client meanwhile", async () => {
    const before = await served();
    const slow = await connectFrom(client.netnsPath, VIP, 80);
    const keepAlive = await connectFrom(client.netnsPath, VIP, 80);
    const t0 = performance.now();
    const slowDone = exchange(slow, "GET / HTTP/1.1\r\nHost: r\r\n", HEADERS_TIMEOUT_MS * 4);
    // Dribble a header byte every 200 ms: each byte alone would reset an idle timer.
    const dribble = setInterval(() => slow.writable && slow.write("X-A: b\r\n"), 200);
    let answered = 0;
    let buffered = "";
    keepAlive.setEncoding("latin1");
    keepAlive.on("data", (c: string) => {
      buffered += c;
    });
    for (let i = 0; i < 10; i++) {
      const want = (buffered.match(/HTTP\/1\.1 200 /g) ?? []).length + 1;
      keepAlive.write("GET /alive HTTP/1.1\r\nHost: r\r\n\r\n");
      for (let waited = 0; (buffered.match(/HTTP\/1\.1 200 /g) ?? []).length < want && waited < 2000; waited += 10) {
        await new Promise((r) => setTimeout(r, 10));
      }
      answered = (buffered.match(/HTTP\/1\.1 200 /g) ?? []).length;
      await new Promise((r) => setTimeout(r, 100));
    }
    const { text, closed } = await slowDone;
    clearInterval(dribble);
    const elapsed = performance.now() - t0;
    expect(closed).toBe(true);
    expect(text === "" || text.startsWith("HTTP/1.1 408 ")).toBe(true);
    // Cut within the timeout plus the server's sweep interval (a quarter of it), not before.
    expect(elapsed).toBeGreaterThanOrEqual(HEADERS_TIMEOUT_MS - 50);
    expect(elapsed).toBeLessThan(HEADERS_TIMEOUT_MS * 2);
    expect(answered).toBe(10);
    keepAlive.destroy();
    // Only the keep-alive client's requests reached the app.
    expect(await served()).toBe(before + 10);
  });

  it("keeps serving other clients after all of it", async () => {
    const reply = await httpFrom(client.netnsPath, `http://${VIP}/after`);
    expect(reply.status).toBe(200);
    expect(JSON.parse(reply.body).pod).toBe("server");
  });
});
