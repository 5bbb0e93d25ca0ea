// Fuzzing the tunnel port live over loopback: whatever a peer sends where the agent expects a
// tunnel handshake (garbage, half handshakes, a TLS record, CONNECT heads of every shape), the
// data plane answers with one well-formed head or closes, never crashes, and still reads a proper
// handshake afterwards. (Over loopback every target is refused as not a pod's address, so a
// tunnel is never opened here; tunnel.fuzz.test.ts checks what a handshake parses to.)

import net from "node:net";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fuzzParams, headBytes } from "../../test/fuzz/fuzz.ts";
import { handleTunnel } from "./inbound.ts";
import { acceptor, loopbackDataplane, loopbackPod } from "./testing/loopback.ts";

const closers: (() => Promise<void> | void)[] = [];
let port = 0;
let appPort = 0;

beforeAll(async () => {
  const app = net.createServer((s) => s.pipe(s)); // echo
  await new Promise<void>((r) => app.listen(0, "127.0.0.1", r));
  const open = new Set<net.Socket>();
  app.on("connection", (s) => {
    open.add(s);
    s.on("error", () => {});
    s.once("close", () => open.delete(s));
  });
  closers.push(() => {
    for (const s of open) s.destroy();
    return new Promise<void>((r) => app.close(() => r()));
  });
  appPort = (app.address() as net.AddressInfo).port;
  const dp = loopbackDataplane([
    {
      name: "web",
      namespace: "default",
      vip: "10.96.0.1",
      ports: [{ port: 80, targetPort: appPort, protocol: "tcp" }],
      endpoints: [{ ip: "127.0.0.1", port: appPort, node: "node-a", pod: "web-0" }],
    },
  ]);
  const pod = loopbackPod("127.0.0.1", "web-0", "web");
  const a = await acceptor((socket) => void handleTunnel(dp, pod, socket));
  closers.push(a.close);
  port = a.port;
});

afterAll(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});

/** Sends `bytes` (then half-closes when `end`), and returns what came back within `waitMs`. */
function exchange(bytes: Buffer, end: boolean, waitMs = 150): Promise<Buffer> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    const parts: Buffer[] = [];
    const done = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(Buffer.concat(parts));
    };
    const timer = setTimeout(done, waitMs);
    socket.on("data", (c) => parts.push(c));
    socket.on("error", () => {});
    socket.once("close", done);
    socket.once("connect", () => (end ? socket.end(bytes) : socket.write(bytes)));
  });
}

const connect = fc
  .record({
    target: fc.oneof(
      fc.constantFrom("127.0.0.1:APP", "127.0.0.1:15008", "127.0.0.1:0", "10.0.0.1:APP", "127.0.0.1", "x"),
      fc.string({ maxLength: 20 }),
    ),
    headers: fc.array(
      fc.constantFrom(
        "x-nodemesh-source: default/client",
        "x-nodemesh-protocol: http1",
        "x-nodemesh-protocol: tcp",
        "x-nodemesh-tunnel-auth: 1.00",
        "x-nodemesh-source-ip: 999.1.1.1",
      ),
      { maxLength: 3 },
    ),
    finished: fc.boolean(),
    payload: fc.string({ maxLength: 10 }),
  })
  .map(({ target, headers, finished, payload }) =>
    Buffer.from(
      `CONNECT ${target} HTTP/1.1\r\n${headers.map((h) => `${h}\r\n`).join("")}${finished ? "\r\n" : ""}${payload}`.replace(
        "APP",
        String(appPort),
      ),
      "latin1",
    ),
  );

describe("tunnel port (fuzz, loopback)", () => {
  it("any bytes: one well-formed refusal or a close, never a crash", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          connect,
          headBytes,
          fc.uint8Array({ minLength: 1, maxLength: 64 }).map((a) => Buffer.concat([Buffer.from([0x16, 3, 1]), a])),
        ),
        fc.boolean(),
        async (bytes, end) => {
          const answer = (await exchange(bytes, end)).toString("latin1");
          if (answer.length === 0) return;
          expect(answer).toMatch(/^HTTP\/1\.1 \d{3} /);
          expect(answer).toMatch(/^HTTP\/1\.1 [45]\d\d [^\r\n]+\r\nX-Nodemesh-Error: NM_[A-Z_]+\r\n/);
          expect(answer.indexOf("\r\n\r\n")).toBe(answer.length - 4);
        },
      ),
      fuzzParams(25, 0.002),
    );
    const answer = (
      await exchange(Buffer.from(`CONNECT 127.0.0.1:${appPort} HTTP/1.1\r\n\r\nping`), false, 1000)
    ).toString("latin1");
    expect(answer).toMatch(/^HTTP\/1\.1 503 Service Unavailable\r\nX-Nodemesh-Error: NM_TUNNEL_FORBIDDEN\r\n/);
  });
});
