// A worker stopping with no successor beside it (stop, then start): nothing serves the node's pods
// until the next agent has started, and the connections arriving meanwhile wait for it, so the
// drain is kept short (Dataplane.stop). Over loopback with the real Dataplane; its own file
// because a stopped worker refuses every later system call of its thread (sys/linux.ts).

import http from "node:http";
import net from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import type { Service } from "../../api/services.ts";
import { AgentErrors } from "../errors.ts";
import { connectEndpoint } from "./connect.ts";
import type { Endpoint } from "./endpoint.ts";
import { handleOutbound } from "./outbound.ts";
import { acceptor, loopbackDataplane, loopbackPod } from "./testing/loopback.ts";

const VIP = "10.96.0.1";
const CLIENT = loopbackPod("127.0.0.1", "client-0", "client");
const closers: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});

describe("a worker stopping without a successor", () => {
  it("closes keep-alive connections left idle after a fifth of a second, not the second a successor's drain gives them", async () => {
    const app = http.createServer((_, res) => res.end("ok"));
    await new Promise<void>((r) => app.listen(0, "127.0.0.1", r));
    closers.push(() => new Promise<void>((r) => app.close(() => r())));
    closers.push(() => app.closeAllConnections());
    const web: Service = {
      name: "web",
      namespace: "default",
      vip: VIP,
      ports: [{ name: "http", port: 80, protocol: "http" }],
      endpoints: [{ ip: "127.0.0.1", port: (app.address() as net.AddressInfo).port, node: "node-b", pod: "web-0" }],
    };
    const dp = loopbackDataplane([web]);
    const outbound = await acceptor((socket) => void handleOutbound(dp, CLIENT, socket, { ip: VIP, port: 80 }));
    closers.push(outbound.close);

    // One keep-alive connection, just used: a successor's drain would leave it open for a second.
    const client = net.connect(outbound.port, "127.0.0.1");
    await new Promise((r) => client.once("connect", r));
    client.write("GET / HTTP/1.1\r\nHost: web\r\n\r\n");
    await new Promise((r) => client.once("data", r));
    const answeredAt = Date.now();
    const closed = new Promise<number>((resolve) => client.once("close", () => resolve(Date.now())));
    client.on("end", () => client.end());

    const stopped = dp.stop(5000, true);
    const within = await Promise.race([
      closed,
      new Promise<"still open">((r) => setTimeout(() => r("still open"), 1000)),
    ]);
    expect(within).not.toBe("still open");
    expect((within as number) - answeredAt).toBeGreaterThanOrEqual(200);
    await stopped;
  });

  it("does not dial this node's own pods: their tunnel ports wait for the next agent", async () => {
    let dialled = 0;
    const via = {
      sockets: () => {
        dialled++;
        return new net.Socket();
      },
      waitsForNextAgent: (ep: Endpoint) => ep.node === "node-a",
    } as unknown as Parameters<typeof connectEndpoint>[0];
    const own: Endpoint = {
      ip: "10.244.0.5",
      port: 8080,
      meshed: true,
      pod: "web-0",
      node: "node-a",
      workload: "web",
      namespace: "default",
      slot: 1,
    };
    const started = Date.now();
    await expect(connectEndpoint(via, CLIENT, own, 1000)).rejects.toMatchObject({
      code: AgentErrors.CONNECT_FAILED.code,
      message: expect.stringContaining("its agent (this one) is stopping"),
    });
    expect(dialled).toBe(0);
    expect(Date.now() - started).toBeLessThan(500); // not after the connect budget
  });
});
