// What a client sees on a TCP port, for the control-plane TLS tests: run inside a namespace,
//
//   world.exec(node, process.execPath, [TLS_PROBE, JSON.stringify({ host, port, caFile })])
//
// plaintext: sends what a plaintext gRPC client sends first (the HTTP/2 preface and an empty
//            SETTINGS frame) and records the first bytes answered (a plaintext HTTP/2 server
//            answers with its SETTINGS frame: 00 00 xx 04 …) and whether the server closed.
// tls:       a TLS handshake verified against `caFile` (ALPN h2), recording the server's first raw
//            bytes on the wire (a TLS record: 16 03 …), whether the certificate was accepted, and
//            its names.
// Prints one JSON line (ProbeReport). Every wait is bounded.

import { readFileSync } from "node:fs";
import { connect as tcpConnect } from "node:net";
import { Duplex } from "node:stream";
import { connect as tlsConnect } from "node:tls";

export interface ProbeArgs {
  host: string;
  port: number;
  caFile: string;
}

export interface ProbeReport {
  plaintext: { firstBytesHex: string; closed: boolean };
  tls: {
    firstServerBytesHex: string;
    authorized: boolean;
    authorizationError: string | null;
    alpn: string | false | null;
    subjectAltName: string | null;
    error: string | null;
  };
}

const WAIT_MS = 3000;
const PREFACE = Buffer.concat([
  Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
  Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]), // SETTINGS, empty
]);

function plaintext(args: ProbeArgs): Promise<ProbeReport["plaintext"]> {
  return new Promise((resolve) => {
    const socket = tcpConnect(args.port, args.host);
    let first = Buffer.alloc(0);
    const done = (closed: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ firstBytesHex: first.subarray(0, 16).toString("hex"), closed });
    };
    const timer = setTimeout(() => done(false), WAIT_MS);
    socket.on("connect", () => socket.write(PREFACE));
    socket.on("data", (chunk: Buffer) => {
      first = Buffer.concat([first, chunk]);
    });
    socket.on("close", () => done(true));
    socket.on("error", () => {});
  });
}

/** A TLS client over a stream we hold, so the server's raw bytes can be seen before TLS reads them. */
function tls(args: ProbeArgs): Promise<ProbeReport["tls"]> {
  return new Promise((resolve) => {
    const raw = tcpConnect(args.port, args.host);
    let firstServerBytes = Buffer.alloc(0);
    const tap = new Duplex({
      read() {},
      write(chunk, _encoding, callback) {
        raw.write(chunk, callback);
      },
      final(callback) {
        raw.end(callback);
      },
    });
    raw.on("data", (chunk: Buffer) => {
      if (firstServerBytes.length < 16) firstServerBytes = Buffer.concat([firstServerBytes, chunk]);
      tap.push(chunk);
    });
    raw.on("end", () => tap.push(null));
    raw.on("error", (err) => tap.destroy(err));
    const secure = tlsConnect({
      socket: tap,
      ca: readFileSync(args.caFile),
      ALPNProtocols: ["h2"],
      rejectUnauthorized: false, // reported below instead
      ...(/^[\d.]+$/.test(args.host) ? {} : { servername: args.host }),
    });
    const report = (error: string | null) => {
      clearTimeout(timer);
      const cert = secure.getPeerCertificate?.();
      resolve({
        firstServerBytesHex: firstServerBytes.subarray(0, 16).toString("hex"),
        authorized: secure.authorized,
        authorizationError: secure.authorizationError ? String(secure.authorizationError) : null,
        alpn: secure.alpnProtocol ?? null,
        subjectAltName: cert?.subjectaltname ?? null,
        error,
      });
      secure.destroy();
      raw.destroy();
    };
    const timer = setTimeout(() => report("no handshake within the wait"), WAIT_MS);
    secure.on("secureConnect", () => report(null));
    secure.on("error", (err) => report(err.message));
  });
}

async function main(): Promise<void> {
  const args = JSON.parse(process.argv[2] ?? "{}") as ProbeArgs;
  const report: ProbeReport = { plaintext: await plaintext(args), tls: await tls(args) };
  process.stdout.write(`${JSON.stringify(report)}\n`);
}

await main();
