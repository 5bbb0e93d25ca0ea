import net from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { ioDeadline } from "./io-deadline.ts";

/** A connected pair over loopback: the test writes on `server` and waits on `client`. */
async function pair(): Promise<{ client: net.Socket; server: net.Socket; close: () => void }> {
  const listener = net.createServer();
  await new Promise<void>((resolve) => listener.listen(0, "127.0.0.1", resolve));
  const accepted = new Promise<net.Socket>((resolve) => listener.once("connection", resolve));
  const { port } = listener.address() as net.AddressInfo;
  const client = net.connect(port, "127.0.0.1");
  await new Promise((resolve) => client.once("connect", resolve));
  const server = await accepted;
  return {
    client,
    server,
    close: () => {
      client.destroy();
      server.destroy();
      listener.close();
    },
  };
}

/** Blocks the event loop, as a turn full of other connections' work does. */
function busy(ms: number) {
  const until = performance.now() + ms;
  while (performance.now() < until) {}
}

/** Which comes first: the bytes already in the socket, or a deadline that expired meanwhile. */
async function race(arm: (onExpiry: () => void, ms: number) => () => void): Promise<string> {
  const { client, server, close } = await pair();
  cleanups.push(close);
  return new Promise<string>((resolve) => {
    const clear = arm(() => resolve("deadline"), 20);
    client.once("data", () => {
      clear();
      resolve("bytes");
    });
    server.write("answer"); // in the client's receive queue long before the loop turns again
    busy(150);
  });
}

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const close of cleanups.splice(0)) close();
});

describe("ioDeadline", () => {
  it("lets bytes that arrived during a long turn win over a deadline that expired in it", async () => {
    // The control: a plain timer runs before the poll phase, so it wins though the peer was on time.
    expect(
      await race((onExpiry, ms) => {
        const timer = setTimeout(onExpiry, ms);
        return () => clearTimeout(timer);
      }),
    ).toBe("deadline");
    expect(
      await race((onExpiry, ms) => {
        const deadline = ioDeadline(onExpiry, ms);
        return () => deadline.clear();
      }),
    ).toBe("bytes");
  });

  it("expires when nothing comes, and never after clear()", async () => {
    const expired = await new Promise<number>((resolve) => {
      const t0 = performance.now();
      ioDeadline(() => resolve(performance.now() - t0), 30);
    });
    expect(expired).toBeGreaterThanOrEqual(29);
    let fired = false;
    ioDeadline(() => {
      fired = true;
    }, 10).clear();
    await new Promise((resolve) => setTimeout(resolve, 40));
    expect(fired).toBe(false);
  });
});
