import { randomBytes } from "node:crypto";
import net from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { classify, detectProtocol } from "./detect.ts";

const PREFACE = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];

describe("classify", () => {
  it("recognises the HTTP/2 connection preface, alone or with a frame after it", () => {
    expect(classify(Buffer.from(PREFACE))).toBe("h2");
    expect(classify(Buffer.concat([Buffer.from(PREFACE), Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0])]))).toBe("h2");
  });

  it("asks for more on every proper prefix of the preface", () => {
    for (let n = 1; n < PREFACE.length; n++)
      expect(classify(Buffer.from(PREFACE.slice(0, n))), `${n} bytes`).toBe("more");
  });

  it("recognises each method followed by a space", () => {
    for (const m of METHODS) {
      expect(classify(Buffer.from(`${m} `)), m).toBe("http1");
      expect(classify(Buffer.from(`${m} /path HTTP/1.1\r\nhost: x\r\n\r\n`)), m).toBe("http1");
    }
  });

  it("asks for more on partial methods, and on a method without its space yet", () => {
    for (const m of METHODS) {
      for (let n = 1; n <= m.length; n++) expect(classify(Buffer.from(m.slice(0, n))), m.slice(0, n)).toBe("more");
    }
  });

  it("says opaque as soon as the bytes can no longer be HTTP", () => {
    expect(classify(Buffer.from("GETX"))).toBe("opaque");
    expect(classify(Buffer.from("GET/"))).toBe("opaque");
    expect(classify(Buffer.from("get / HTTP/1.1\r\n"))).toBe("opaque"); // methods are case-sensitive
    expect(classify(Buffer.from("PRI * HTTP/1.1"))).toBe("opaque");
    expect(classify(Buffer.from("X"))).toBe("opaque");
    expect(classify(Buffer.from("SSH-2.0-OpenSSH_9.6\r\n"))).toBe("opaque");
  });

  it("says opaque for a TLS ClientHello (0x16) and for random bytes", () => {
    expect(classify(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc]))).toBe("opaque");
    expect(classify(Buffer.from([0x16]))).toBe("opaque");
    const first = new Set([..."GHPDCOT"].map((c) => c.charCodeAt(0)));
    for (let i = 0; i < 200; i++) {
      const buf = randomBytes(1 + (i % 40));
      if (first.has(buf[0]!)) buf[0] = 0;
      expect(classify(buf)).toBe("opaque");
    }
  });
});

// ---------------------------------------------------------------- over a socket

const open: net.Socket[] = [];
const servers: net.Server[] = [];
afterEach(() => {
  for (const s of open.splice(0)) s.destroy();
  for (const s of servers.splice(0)) s.close();
});

/** A connected loopback socket pair: [client, server side]. */
async function socketPair(): Promise<[net.Socket, net.Socket]> {
  const server = net.createServer({ pauseOnConnect: true });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as net.AddressInfo;
  const accepted = new Promise<net.Socket>((r) => server.once("connection", r));
  const client = net.connect(port, "127.0.0.1");
  client.on("error", () => {});
  const serverSide = await accepted;
  serverSide.on("error", () => {});
  open.push(client, serverSide);
  return [client, serverSide];
}

/** What the consumer reads once detection hands the socket over, until `n` bytes or the end. */
function readBytes(s: net.Socket, n: number): Promise<Buffer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const finish = () => resolve(Buffer.concat(chunks));
    s.on("data", (c: Buffer) => {
      chunks.push(c);
      size += c.length;
      if (size >= n) finish();
    });
    s.once("end", finish);
    s.resume();
  });
}

const tick = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("detectProtocol", () => {
  it("detects HTTP/1 and pushes back exactly the bytes sent", async () => {
    const [client, server] = await socketPair();
    const request = Buffer.from("GET /reviews/1 HTTP/1.1\r\nhost: reviews\r\n\r\n");
    const detected = detectProtocol(server, 1000);
    client.write(request);
    expect((await detected).protocol).toBe("http1");
    expect(server.isPaused()).toBe(true);
    expect((await readBytes(server, request.length)).toString()).toBe(request.toString());
  });

  it("waits for more bytes across writes, and the consumer still reads them all in order", async () => {
    const [client, server] = await socketPair();
    const detected = detectProtocol(server, 1000);
    client.write("PRI * HT");
    await tick(30);
    client.write("TP/2.0\r\n\r\nS");
    await tick(30);
    client.write("M\r\n\r\n");
    expect((await detected).protocol).toBe("h2");
    client.write("after");
    expect((await readBytes(server, PREFACE.length + 5)).toString()).toBe(`${PREFACE}after`);
  });

  it("detects opaque bytes at once and pushes them back", async () => {
    const [client, server] = await socketPair();
    const hello = Buffer.from([0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5]);
    const started = Date.now();
    const detected = detectProtocol(server, 5000);
    client.write(hello);
    expect((await detected).protocol).toBe("opaque");
    expect(Date.now() - started).toBeLessThan(1000);
    expect(await readBytes(server, hello.length)).toEqual(hello);
  });

  it("says opaque after the timeout when the client sends nothing (server speaks first)", async () => {
    const [client, server] = await socketPair();
    const started = Date.now();
    expect((await detectProtocol(server, 80)).protocol).toBe("opaque");
    expect(Date.now() - started).toBeGreaterThanOrEqual(70);
    // The connection is still usable both ways.
    server.write("220 ready\r\n");
    client.write("EHLO x\r\n");
    expect((await readBytes(server, 8)).toString()).toBe("EHLO x\r\n");
  });

  it("says opaque after the timeout with a partial prefix, and pushes the partial bytes back", async () => {
    const [client, server] = await socketPair();
    const detected = detectProtocol(server, 80);
    client.write("GE");
    expect((await detected).protocol).toBe("opaque");
    client.write("T!");
    expect((await readBytes(server, 4)).toString()).toBe("GET!");
  });

  it("says opaque, with the bytes as leftover, when the client half-closes after a partial prefix", async () => {
    const [client, server] = await socketPair();
    const started = Date.now();
    const detected = detectProtocol(server, 5000);
    client.end("GE");
    const result = await detected;
    expect(result.protocol).toBe("opaque");
    expect(result.leftover.toString()).toBe("GE");
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it("says opaque, nothing left over, when the client half-closes without sending anything", async () => {
    const [client, server] = await socketPair();
    const detected = detectProtocol(server, 5000);
    client.end();
    const result = await detected;
    expect(result.protocol).toBe("opaque");
    expect(result.leftover.length).toBe(0);
    expect(server.readableEnded).toBe(true);
  });

  it("says gone when the client half-closes without sending anything on a port declared HTTP", async () => {
    const [client, server] = await socketPair();
    const detected = detectProtocol(server, 5000, true);
    client.end();
    expect((await detected).protocol).toBe("gone");
  });

  it("says gone when the client half-closes before its bytes decide on a port declared HTTP", async () => {
    const [client, server] = await socketPair();
    const detected = detectProtocol(server, 5000, true);
    client.end("GE");
    expect((await detected).protocol).toBe("gone");
  });

  it("says gone when the client resets during detection", async () => {
    const [client, server] = await socketPair();
    const detected = detectProtocol(server, 150);
    client.write("GE");
    await tick(20);
    client.resetAndDestroy();
    expect((await detected).protocol).toBe("gone");
  });

  it("still decides on the bytes when the client sends a whole request and half-closes at once", async () => {
    const [client, server] = await socketPair();
    const detected = detectProtocol(server, 5000);
    client.end("GET / HTTP/1.0\r\n\r\n");
    expect((await detected).protocol).toBe("http1");
    expect((await readBytes(server, 1000)).toString()).toBe("GET / HTTP/1.0\r\n\r\n");
  });

  it("does not wait forever with an infinite timeout once bytes decide", async () => {
    const [client, server] = await socketPair();
    const detected = detectProtocol(server, Number.POSITIVE_INFINITY);
    client.write("DELETE /x HTTP/1.1\r\n\r\n");
    expect((await detected).protocol).toBe("http1");
  });
});
