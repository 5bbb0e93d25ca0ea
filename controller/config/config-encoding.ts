// The Config message in protobuf wire format (api/agent.proto), assembled from bytes encoded once
// per table entry. A table entry outlives many tables (rebuilds reuse unchanged entries) and goes
// into many messages (the full table, the updates from each base), so encoding each service once
// and concatenating makes a message cost a copy instead of a protobuf encode of 10,000 services.
// config-encoding.test.ts checks the result against the contract's own (proto-loader) codec.

import {
  type Peer,
  toWireService,
  toWireTraffic,
  type WireService,
  type WireTrafficObject,
} from "../../api/agent-service.ts";
import type { TableDiff } from "./config-diff.ts";
import type { TableEntry, TrafficEntry } from "./service-table.ts";

/** Protobuf wire types (the reader in testing/fleet-agent.ts uses them too). */
export const WIRE_TYPE = { VARINT: 0, I64: 1, LEN: 2, I32: 5 } as const;
const { VARINT, LEN } = WIRE_TYPE;
/** A one-byte tag and a length varint (at most 10 bytes). */
const TAG_AND_LENGTH_BYTES = 11;

/** A growable buffer with the few protobuf primitives the Config needs. */
class Writer {
  private buf: Buffer;
  /** Where the content starts: `headRoom` bytes are left in front for finishAsField. */
  private readonly start: number;
  private pos: number;

  constructor(capacity = 256, headRoom = 0) {
    this.buf = Buffer.allocUnsafe(headRoom + capacity);
    this.start = headRoom;
    this.pos = headRoom;
  }

  private reserve(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  varint(value: number): this {
    this.reserve(10);
    let v = value;
    while (v > 0x7f) {
      this.buf[this.pos++] = (v & 0x7f) | 0x80;
      v = Math.floor(v / 128);
    }
    this.buf[this.pos++] = v;
    return this;
  }

  tag(field: number, wireType: number): this {
    return this.varint((field << 3) | wireType);
  }

  /** proto3: an empty string is the default and is left out (not so in a repeated field). */
  string(field: number, value: string, repeated = false): this {
    if (value === "" && !repeated) return this;
    const length = Buffer.byteLength(value);
    this.tag(field, LEN).varint(length);
    this.reserve(length);
    this.pos += this.buf.write(value, this.pos, "utf8");
    return this;
  }

  uint32(field: number, value: number | undefined, optional = false): this {
    if (value === undefined || (value === 0 && !optional)) return this;
    return this.tag(field, VARINT).varint(value);
  }

  bool(field: number, value: boolean): this {
    return value ? this.tag(field, VARINT).varint(1) : this;
  }

  bytes(field: number, value: Buffer): this {
    this.tag(field, LEN).varint(value.length);
    this.reserve(value.length);
    this.pos += value.copy(this.buf, this.pos);
    return this;
  }

  message(field: number, encode: (w: Writer) => void): this {
    const sub = new Writer();
    encode(sub);
    return this.bytes(field, sub.finish());
  }

  finish(): Buffer {
    return this.buf.subarray(this.start, this.pos);
  }

  /** The content as length-delimited field `field` of an enclosing message, its tag and length written into the head room. */
  finishAsField(field: number): Buffer {
    const head = new Writer(TAG_AND_LENGTH_BYTES)
      .tag(field, LEN)
      .varint(this.pos - this.start)
      .finish();
    if (head.length > this.start) throw new Error("finishAsField needs head room for the tag and length");
    const begin = this.start - head.length;
    head.copy(this.buf, begin);
    return this.buf.subarray(begin, this.pos);
  }
}

function encodeService(s: WireService): Buffer {
  const w = new Writer().string(1, s.name).string(2, s.namespace).string(3, s.vip);
  for (const p of s.ports) {
    w.message(4, (m) => m.string(1, p.name).uint32(2, p.port).uint32(3, p.targetPort, true).string(4, p.protocol));
  }
  for (const e of s.endpoints) {
    w.message(5, (m) =>
      m
        .string(1, e.ip)
        .uint32(2, e.port, true)
        .string(3, e.node)
        .string(4, e.pod)
        .bool(5, e.meshed)
        .string(6, e.workload),
    );
  }
  return Buffer.from(w.finish()); // a right-sized copy: it is kept as long as the entry
}

function encodeTraffic(t: WireTrafficObject): Buffer {
  return Buffer.from(
    new Writer().string(1, t.kind).string(2, t.namespace).string(3, t.name).string(4, t.specJson).finish(),
  );
}

const serviceBytes = new WeakMap<TableEntry, Buffer>();
const trafficBytes = new WeakMap<TrafficEntry, Buffer>();

function cached<E extends object>(cache: WeakMap<E, Buffer>, entry: E, encode: (e: E) => Buffer): Buffer {
  let bytes = cache.get(entry);
  if (!bytes) {
    bytes = encode(entry);
    cache.set(entry, bytes);
  }
  return bytes;
}

function encodePeers(w: Writer, peers: readonly Peer[]): void {
  for (const p of peers) w.message(1, (m) => m.string(1, p.name).string(2, p.underlayIp));
}

/** The ControllerMessage carrying `diff` as a Config, ready for the stream. */
export function encodeConfigMessage(diff: TableDiff): Buffer {
  const services = diff.services.map((entry) =>
    cached(serviceBytes, entry, (e) => encodeService(toWireService(e.service))),
  );
  const traffic = diff.traffic.map((entry) =>
    cached(trafficBytes, entry, (e) => encodeTraffic(toWireTraffic(e.object))),
  );
  // Sized for the entries plus their tags and lengths, so the buffer rarely grows (and copies).
  const entryBytes = [...services, ...traffic].reduce((n, b) => n + b.length + 6, 0);
  // The Config is written behind room for its enclosing field's tag and length, so that wrapping
  // it into the ControllerMessage does not copy a table of several megabytes once more.
  const w = new Writer(entryBytes + 1024, TAG_AND_LENGTH_BYTES).string(1, diff.to.version).bool(2, diff.full);
  w.string(3, diff.from?.version ?? "");
  for (const bytes of services) w.bytes(4, bytes);
  for (const key of diff.removed) w.string(5, key, true);
  if (diff.peers) w.message(6, (m) => encodePeers(m, diff.peers!));
  for (const bytes of traffic) w.bytes(7, bytes);
  for (const key of diff.removedTraffic) w.string(8, key, true);
  return w.finishAsField(1);
}
