import { once } from "node:events";
import type { Socket } from "node:net";
import { describe, expect, it } from "vitest";
import { AgentErrors } from "../errors.ts";
import type { Endpoint } from "./endpoint.ts";
import { localSocketPair } from "./local-tunnel.ts";
import { type Keyring, sameNodePeer, type WorkerIdentity } from "./mtls.ts";
import { pipeBoth } from "./pipe.ts";
import type { PodContext } from "./pod.ts";

const read = (s: Socket) =>
  new Promise<string>((resolve) => {
    let text = "";
    s.setEncoding("utf8");
    s.on("data", (d: string) => {
      text += d;
    });
    s.once("end", () => resolve(text));
  });

describe("the in-memory sockets of a same-node tunnel", () => {
  it("carry bytes both ways, count what each end read, and know both addresses", async () => {
    const [a, b] = localSocketPair("10.0.0.1", "10.0.0.2");
    expect([a.localAddress, a.remoteAddress, b.localAddress, b.remoteAddress]).toEqual([
      "10.0.0.1",
      "10.0.0.2",
      "10.0.0.2",
      "10.0.0.1",
    ]);
    const fromA = read(b);
    const fromB = read(a);
    a.end("hello");
    // A half-close: b still writes after a's end.
    expect(await fromA).toBe("hello");
    b.end("world!");
    expect(await fromB).toBe("world!");
    expect([a.bytesRead, b.bytesRead]).toEqual([6, 5]);
  });

  it("closing one end ends the other's input, after what was already sent; the other's writes then fail", async () => {
    const [a, b] = localSocketPair("10.0.0.1", "10.0.0.2");
    a.write("last words");
    a.destroy();
    expect(await read(b)).toBe("last words");
    b.write("anyone there?");
    const [err] = (await once(b, "error")) as [NodeJS.ErrnoException];
    expect(err.code).toBe("EPIPE");
  });

  it("an end whose writes are still held back, then a close, still ends the other's input", async () => {
    const [a, b] = localSocketPair("10.0.0.1", "10.0.0.2");
    const chunk = Buffer.alloc(64 * 1024, 1);
    for (let i = 0; i < 8 && a.write(chunk); i++);
    a.end(); // queued behind the writes b has no room for yet …
    a.destroy(); // … which the close discards
    let received = 0;
    b.on("data", (d: Buffer) => {
      received += d.length;
    });
    await once(b, "end");
    expect(received).toBeGreaterThan(0);
    expect(received).toBe(b.bytesRead);
  });

  it("a reset reaches the other end as ECONNRESET", async () => {
    const [a, b] = localSocketPair("10.0.0.1", "10.0.0.2");
    const failed = once(b, "error");
    a.resetAndDestroy();
    const [err] = (await failed) as [NodeJS.ErrnoException];
    expect(err.code).toBe("ECONNRESET");
    expect(b.destroyed).toBe(true);
  });

  it("holds a writer back while the reader does not read (backpressure), and lets it go once it does", async () => {
    const [a, b] = localSocketPair("10.0.0.1", "10.0.0.2");
    const chunk = Buffer.alloc(64 * 1024, 1);
    let accepted = 0;
    while (a.write(chunk) && accepted < 100) accepted++;
    expect(accepted).toBeLessThan(100); // write() said to stop, nothing was read
    const drained = once(a, "drain");
    b.resume();
    await drained;
    expect(b.bytesRead).toBeGreaterThan(0);
  });

  it("forwards through pipeBoth, as a tunnel's end does on the source side", async () => {
    const [client, clientSide] = localSocketPair("10.0.0.1", "10.0.0.9");
    const [upstreamSide, server] = localSocketPair("10.0.0.9", "10.0.0.2");
    const piped = pipeBoth(clientSide, upstreamSide);
    const toServer = read(server);
    const toClient = read(client);
    client.end("request");
    expect(await toServer).toBe("request");
    server.end("response");
    expect(await toClient).toBe("response");
    expect(await piped).toEqual({ bytesFromDownstream: 7, bytesFromUpstream: 8 });
  });
});

describe("sameNodePeer", () => {
  const identity = (spiffeId: string) => ({ spiffeId }) as WorkerIdentity;
  const mine = identity("spiffe://cluster.local/ns/shop/sa/client");
  const web = { pod: { namespace: "shop", serviceAccount: "web" } } as PodContext;
  const ep = { ip: "10.0.0.2", port: 8080, namespace: "shop", serviceAccount: "web" } as Endpoint;

  it("vouches for the caller when the destination pod holds the identity the table names", () => {
    const keyring: Keyring = new Map([["shop/web", identity("spiffe://cluster.local/ns/shop/sa/web")]]);
    expect(sameNodePeer(keyring, mine, web, ep)).toBe(mine.spiffeId);
  });

  it("refuses, as a TLS handshake would, a pod with another identity or none", () => {
    const other: Keyring = new Map([["shop/web", identity("spiffe://cluster.local/ns/shop/sa/admin")]]);
    expect(() => sameNodePeer(other, mine, web, ep)).toThrow(
      /holds spiffe:\/\/cluster.local\/ns\/shop\/sa\/admin, not/,
    );
    expect(() => sameNodePeer(new Map(), mine, web, ep)).toThrow(
      expect.objectContaining({ code: AgentErrors.TUNNEL_UNAUTHENTICATED.code }),
    );
  });
});
