// Hand-made HTTP/2 frames for the malformed-HTTP/2 tests: a prior-knowledge h2c connection whose
// bytes no well-behaved library would send (a body that contradicts its content-length, a
// content-length that is no number). Only what those tests need: HEADERS with literal header
// fields (no Huffman, no dynamic table), DATA, RST_STREAM, and a reader that splits the answer
// into frames.

import type net from "node:net";

export const FRAME = { DATA: 0, HEADERS: 1, RST_STREAM: 3, SETTINGS: 4, GOAWAY: 7 } as const;
export const FLAG = { END_STREAM: 0x1, END_HEADERS: 0x4 } as const;
/** RFC 9113 §7 error codes seen in these tests. */
export const H2_ERROR = { NO_ERROR: 0, PROTOCOL_ERROR: 1, INTERNAL_ERROR: 2, CANCEL: 8 } as const;

export const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");

export function frame(type: number, flags: number, stream: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(stream, 5);
  return Buffer.concat([head, payload]);
}

/** HPACK literal header field without indexing, new name (RFC 7541 §6.2.2); short strings only. */
function literal(name: string, value: string): Buffer {
  if (name.length > 126 || value.length > 126) throw new RangeError("raw-h2 writes only short header strings");
  return Buffer.concat([
    Buffer.from([0x00, name.length]),
    Buffer.from(name, "latin1"),
    Buffer.from([value.length]),
    Buffer.from(value, "latin1"),
  ]);
}

/**
 * A POST request's header block: `:method POST`, `:scheme http`, `:path /` from the static table
 * (0x83 0x86 0x84) — or `:path` as a literal when given — then `headers` as literals, in order
 * (a name may repeat).
 */
export function postHeaderBlock(headers: ReadonlyArray<readonly [string, string]>, path?: string): Buffer {
  const pseudo =
    path === undefined
      ? Buffer.from([0x83, 0x86, 0x84])
      : Buffer.concat([Buffer.from([0x83, 0x86]), literal(":path", path)]);
  return Buffer.concat([pseudo, ...headers.map(([n, v]) => literal(n, v))]);
}

export interface H2Frame {
  type: number;
  flags: number;
  stream: number;
  payload: Buffer;
}

/** The error code of a RST_STREAM or GOAWAY frame. */
export function errorCodeOf(f: H2Frame): number {
  return f.type === FRAME.GOAWAY ? f.payload.readUInt32BE(4) : f.payload.readUInt32BE(0);
}

/**
 * Writes `bytes` and reads the peer's frames until `stop` says so, the peer closes, or `ms` pass.
 * The socket is left open (the caller may write more, then destroys it).
 */
export function readFrames(
  socket: net.Socket,
  bytes: Buffer,
  stop: (frames: readonly H2Frame[]) => boolean,
  ms = 3000,
): Promise<{ frames: H2Frame[]; closed: boolean }> {
  return new Promise((resolve) => {
    const frames: H2Frame[] = [];
    let buffered = Buffer.alloc(0);
    const done = (closed: boolean) => {
      clearTimeout(timer);
      socket.off("data", onData);
      socket.off("close", onClose);
      resolve({ frames, closed });
    };
    const onData = (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      while (buffered.length >= 9) {
        const length = buffered.readUIntBE(0, 3);
        if (buffered.length < 9 + length) break;
        frames.push({
          type: buffered[3]!,
          flags: buffered[4]!,
          stream: buffered.readUInt32BE(5) & 0x7fffffff,
          payload: buffered.subarray(9, 9 + length),
        });
        buffered = buffered.subarray(9 + length);
      }
      if (stop(frames)) done(false);
    };
    const onClose = () => done(true);
    const timer = setTimeout(() => done(false), ms);
    socket.on("data", onData);
    socket.on("close", onClose);
    socket.on("error", () => {});
    socket.write(bytes);
  });
}
