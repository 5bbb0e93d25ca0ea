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

/** The JSON text of `nested(depth, object)`, built without a recursive stringify. */
export function nestedJson(depth: number, object = false): string {
  return object ? `${'{"a":'.repeat(depth)}1${"}".repeat(depth)}` : `${"[".repeat(depth)}1${"]".repeat(depth)}`;
}

/** `depth` arrays or objects, one inside the other: what a recursive walk of a body meets at worst. */
export function nested(depth: number, object = false): unknown {
  let value: unknown = 1;
  for (let i = 0; i < depth; i++) value = object ? { a: value } : [value];
  return value;
}

type Path = (string | number)[];

function pathsOf(value: unknown, at: Path = [], out: Path[] = []): Path[] {
  out.push(at);
  if (typeof value === "object" && value !== null) {
    for (const [k, v] of Object.entries(value)) pathsOf(v, [...at, Array.isArray(value) ? Number(k) : k], out);
  }
  return out;
}

/** A value to put where a valid one was: any JSON, a near miss of a scalar, or something deep. */
const replacement: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 5, arbitrary: fc.jsonValue({ maxDepth: 3 }) },
  {
    weight: 3,
    arbitrary: fc.constantFrom(
      "",
      "a",
      "-",
      "UPPER",
      "0",
      -1,
      0,
      1.5,
      65536,
      2 ** 53,
      "10.0.0.256",
      "(a+)+$",
      "[",
      "\\",
      "..",
      "/",
      "../../etc/passwd",
      "x".repeat(300),
      "\u0000",
      "\r\n",
      "é",
      [],
      {},
      null,
      true,
    ),
  },
  { weight: 1, arbitrary: fc.integer({ min: 33, max: 1000 }).map((d) => nested(d)) },
  {
    weight: 1,
    arbitrary: fc.constantFrom("__proto__", "constructor", "toString").map((k) => JSON.parse(`{"${k}":{"x":1}}`)),
  },
);

type Mutation = { op: "replace" | "delete" | "add" | "keep"; at: number; key: string; value: unknown };

/**
 * `seed` (a valid object) with up to `count` random changes: a value replaced, a field removed, an
 * unknown field added. A mutation fuzzer: most results are near-valid, so they reach deep checks.
 */
export function mutated(seed: unknown, count = 3): fc.Arbitrary<unknown> {
  const mutation: fc.Arbitrary<Mutation> = fc.record({
    op: fc.constantFrom("replace", "replace", "delete", "add", "keep"),
    at: fc.nat(),
    key: fc.oneof(fc.string({ maxLength: 8 }), fc.constantFrom("__proto__", "constructor", "status")),
    value: replacement,
  });
  return fc.array(mutation, { minLength: 1, maxLength: count }).map((mutations) => {
    let root: unknown = structuredClone(seed);
    for (const mutation of mutations) {
      // A copy: fast-check hands out the same instance of a constant every time it draws it.
      const m = { ...mutation, value: structuredClone(mutation.value) };
      const paths = pathsOf(root);
      const path = paths[m.at % paths.length]!;
      if (path.length === 0) {
        if (m.op === "replace") root = m.value;
        continue;
      }
      const parent = path.slice(0, -1).reduce<unknown>((v, k) => (v as Record<string, unknown>)[k], root) as Record<
        string | number,
        unknown
      >;
      const last = path[path.length - 1]!;
      const target = parent[last];
      if (m.op === "replace") parent[last] = m.value;
      else if (m.op === "delete") {
        if (Array.isArray(parent)) parent.splice(Number(last), 1);
        else delete parent[last];
      } else if (m.op === "add" && typeof target === "object" && target !== null) {
        Object.defineProperty(target, Array.isArray(target) ? target.length : m.key, {
          value: m.value,
          enumerable: true,
          writable: true,
          configurable: true,
        });
      }
    }
    return root;
  });
}
