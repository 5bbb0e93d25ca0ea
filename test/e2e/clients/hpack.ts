// Just enough HPACK (RFC 7541) for the bad-input corpus's raw HTTP/2 client: header blocks are
// written as literals without indexing (any name or value, also ones no library would send, such
// as upper-case names), and the peer's blocks are decoded in full (static and dynamic tables,
// Huffman strings), so a test can read `:status` and `grpc-status` from what the agent or the
// workload answered.

import { HUFFMAN_CODES, HUFFMAN_LENGTHS, STATIC_TABLE } from "./hpack-tables.ts";

/** An HPACK integer with an `prefix`-bit prefix, the first byte's high bits set to `high`. */
export function hpackInteger(value: number, prefix: number, high = 0): Buffer {
  const max = (1 << prefix) - 1;
  if (value < max) return Buffer.from([high | value]);
  const bytes = [high | max];
  let rest = value - max;
  while (rest >= 128) {
    bytes.push((rest % 128) + 128);
    rest = Math.floor(rest / 128);
  }
  bytes.push(rest);
  return Buffer.from(bytes);
}

function rawString(s: string): Buffer {
  const bytes = Buffer.from(s, "latin1");
  return Buffer.concat([hpackInteger(bytes.length, 7), bytes]);
}

/** A header block of literal fields without indexing, new names, in order, exactly as given. */
export function encodeHeaderBlock(headers: ReadonlyArray<readonly [string, string]>): Buffer {
  return Buffer.concat(headers.flatMap(([name, value]) => [Buffer.from([0x00]), rawString(name), rawString(value)]));
}

/** Huffman decoding: a map from (length, code) to the symbol. */
const HUFFMAN = new Map<string, number>(HUFFMAN_CODES.map((code, sym) => [`${HUFFMAN_LENGTHS[sym]}:${code}`, sym]));

function huffmanDecode(data: Buffer): string {
  const out: number[] = [];
  let code = 0;
  let length = 0;
  for (const byte of data) {
    for (let bit = 7; bit >= 0; bit--) {
      code = code * 2 + ((byte >> bit) & 1);
      length++;
      const sym = HUFFMAN.get(`${length}:${code}`);
      if (sym !== undefined) {
        if (sym === 256) throw new Error("EOS in a Huffman string");
        out.push(sym);
        code = 0;
        length = 0;
      } else if (length > 30) throw new Error("invalid Huffman code");
    }
  }
  return Buffer.from(out).toString("latin1");
}

/** A decoder for one connection's header blocks (its dynamic table persists from block to block). */
export class HpackDecoder {
  private dynamic: [string, string][] = [];
  private size = 0;
  private maxSize = 4096;

  decode(block: Buffer): [string, string][] {
    const out: [string, string][] = [];
    let i = 0;
    const integer = (prefix: number): number => {
      const max = (1 << prefix) - 1;
      let value = block[i++]! & max;
      if (value < max) return value;
      let shift = 0;
      let byte: number;
      do {
        byte = block[i++]!;
        value += (byte & 127) * 2 ** shift;
        shift += 7;
      } while (byte & 128);
      return value;
    };
    const string = (): string => {
      const huffman = (block[i]! & 0x80) !== 0;
      const length = integer(7);
      const data = block.subarray(i, i + length);
      i += length;
      return huffman ? huffmanDecode(data) : data.toString("latin1");
    };
    const entry = (index: number): readonly [string, string] => {
      const e = index <= STATIC_TABLE.length ? STATIC_TABLE[index - 1] : this.dynamic[index - STATIC_TABLE.length - 1];
      if (!e) throw new Error(`HPACK index ${index} out of range`);
      return e;
    };
    while (i < block.length) {
      const first = block[i]!;
      if (first & 0x80) {
        out.push([...entry(integer(7))]);
      } else if (first & 0x40) {
        const index = integer(6);
        const name = index === 0 ? string() : entry(index)[0];
        const value = string();
        out.push([name, value]);
        this.add(name, value);
      } else if (first & 0x20) {
        this.maxSize = integer(5);
        this.evict();
      } else {
        const index = integer(4); // without indexing (0x00) or never indexed (0x10)
        const name = index === 0 ? string() : entry(index)[0];
        out.push([name, string()]);
      }
    }
    return out;
  }

  private add(name: string, value: string): void {
    this.dynamic.unshift([name, value]);
    this.size += name.length + value.length + 32;
    this.evict();
  }

  private evict(): void {
    while (this.size > this.maxSize && this.dynamic.length > 0) {
      const [n, v] = this.dynamic.pop()!;
      this.size -= n.length + v.length + 32;
    }
  }
}
