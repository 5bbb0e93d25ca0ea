// Shared settings of the property-based fuzz tests (`*.fuzz.test.ts`, fast-check). By default
// each property runs a few dozen to a few hundred cases: a smoke run that keeps the unit project
// fast. `make fuzz` runs the same files with FUZZ_RUNS set (many more cases per property) and
// optionally FUZZ_SECONDS (a time budget per property); FUZZ_SEED replays a failing run.

import { Duplex, type Readable } from "node:stream";
import fc from "fast-check";

const envRuns = Number(process.env.FUZZ_RUNS);
const envSeconds = Number(process.env.FUZZ_SECONDS);
const envSeed = process.env.FUZZ_SEED;

/** True under `make fuzz` (FUZZ_RUNS or FUZZ_SECONDS set). */
export const LONG_RUN = envRuns > 0 || envSeconds > 0;

/**
 * fast-check parameters for one property. `smoke`: the cases of the default (CI) run. `scale`: the
 * share of FUZZ_RUNS this property takes in a long run (below 1 for a property that costs a
 * socket round trip per case).
 */
export function fuzzParams<T>(smoke: number, scale = 1): fc.Parameters<T> {
  const numRuns = envRuns > 0 ? Math.max(smoke, Math.round(envRuns * scale)) : LONG_RUN ? 1_000_000_000 : smoke;
  return {
    numRuns,
    ...(envSeconds > 0 ? { interruptAfterTimeLimit: envSeconds * 1000, markInterruptAsFailure: false } : {}),
    ...(envSeed !== undefined && envSeed !== "" ? { seed: Number(envSeed) } : {}),
  };
}

/** Bytes that are mostly printable with the usual HTTP delimiters in them: what heads are made of. */
export const headBytes: fc.Arbitrary<Buffer> = fc
  .array(
    fc.oneof(
      { weight: 6, arbitrary: fc.string({ maxLength: 12 }) },
      { weight: 3, arbitrary: fc.constantFrom("\r\n", "\n", "\r", ":", " ", "\t", "\0", "\r\n\r\n", "%", "/") },
      { weight: 1, arbitrary: fc.uint8Array({ maxLength: 8 }).map((a) => Buffer.from(a).toString("latin1")) },
    ),
    { maxLength: 40 },
  )
  .map((parts) => Buffer.from(parts.join(""), "latin1"));

/** Splits `bytes` into chunks at the given cut points (how a socket may deliver them). */
export function chunked(bytes: Buffer, cuts: readonly number[]): Buffer[] {
  const at = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let from = 0;
  for (const c of at) {
    if (c > from) out.push(bytes.subarray(from, c));
    from = Math.max(from, c);
  }
  if (from < bytes.length) out.push(bytes.subarray(from));
  return out;
}

/**
 * A stand-in for an accepted net.Socket: delivers `chunks` (then its end, if `end`), records what
 * is written to it. Reading, pausing and unshift behave as a socket's readable side does.
 */
export function fakeSocket(chunks: readonly Buffer[], end = true): Duplex & { written: Buffer[] } {
  const written: Buffer[] = [];
  const socket = new Duplex({
    allowHalfOpen: true,
    read() {},
    write(chunk: Buffer, _encoding, callback) {
      written.push(Buffer.from(chunk));
      callback();
    },
  }) as Duplex & { written: Buffer[] };
  socket.written = written;
  socket.pause();
  for (const c of chunks) socket.push(c);
  if (end) socket.push(null);
  return socket;
}

/** Everything still readable from `stream` until its end. */
export function readAll(stream: Readable): Promise<Buffer> {
  if (stream.readableEnded) return Promise.resolve(Buffer.alloc(0));
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    stream.on("data", (c: Buffer) => parts.push(c));
    stream.once("end", () => resolve(Buffer.concat(parts)));
    stream.once("error", reject);
    stream.resume();
  });
}
