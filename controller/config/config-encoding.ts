// The Config message in protobuf wire format (api/agent.proto), assembled from bytes encoded once
// per table entry with protobufjs's Writer. A table entry outlives many tables (rebuilds reuse
// unchanged entries) and goes into many messages (the full table, the updates from each base), so
// encoding each service once and copying its bytes in makes a message cost a copy instead of a
// protobuf encode of 10,000 services. config-encoding.test.ts checks the result against the
// contract's own (proto-loader) codec.

import protobuf from "protobufjs/minimal.js";
import {
  type Peer,
  toWireService,
  toWireTraffic,
  type WireService,
  type WireTrafficObject,
} from "../../api/agent-service.ts";
import type { TableDiff } from "./config-diff.ts";
import type { TableEntry, TrafficEntry } from "./service-table.ts";

const { Writer } = protobuf;
type Writer = protobuf.Writer;

/** Protobuf wire types. */
const VARINT = 0;
const LEN = 2;

const tag = (field: number, wireType: number) => (field << 3) | wireType;

// proto3 leaves default values out (an empty string, 0, false), except in repeated fields.
function str(w: Writer, field: number, value: string, repeated = false): void {
  if (value !== "" || repeated) w.uint32(tag(field, LEN)).string(value);
}
function u32(w: Writer, field: number, value: number | undefined, optional = false): void {
  if (value !== undefined && (value !== 0 || optional)) w.uint32(tag(field, VARINT)).uint32(value);
}
function bool(w: Writer, field: number, value: boolean): void {
  if (value) w.uint32(tag(field, VARINT)).bool(true);
}
/** A length-delimited field holding bytes already encoded (an embedded message, copied in). */
function encoded(w: Writer, field: number, bytes: Uint8Array): void {
  w.uint32(tag(field, LEN)).bytes(bytes);
}
/** An embedded message written in place: fork/ldelim compute its length without a copy. */
function message(w: Writer, field: number, write: (w: Writer) => void): void {
  w.uint32(tag(field, LEN)).fork();
  write(w);
  w.ldelim();
}

function encodeService(s: WireService): Buffer {
  const w = Writer.create();
  str(w, 1, s.name);
  str(w, 2, s.namespace);
  str(w, 3, s.vip);
  for (const p of s.ports) {
    message(w, 4, (m) => {
      str(m, 1, p.name);
      u32(m, 2, p.port);
      u32(m, 3, p.targetPort, true);
      str(m, 4, p.protocol);
    });
  }
  for (const e of s.endpoints) {
    message(w, 5, (m) => {
      str(m, 1, e.ip);
      u32(m, 2, e.port, true);
      str(m, 3, e.node);
      str(m, 4, e.pod);
      bool(m, 5, e.meshed);
      str(m, 6, e.workload);
      str(m, 7, e.serviceAccount);
    });
  }
  return w.finish() as Buffer; // right-sized: it is kept as long as the entry
}

function encodeTraffic(t: WireTrafficObject): Buffer {
  const w = Writer.create();
  str(w, 1, t.kind);
  str(w, 2, t.namespace);
  str(w, 3, t.name);
  str(w, 4, t.specJson);
  return w.finish() as Buffer;
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
  for (const p of peers) {
    message(w, 1, (m) => {
      str(m, 1, p.name);
      str(m, 2, p.underlayIp);
    });
  }
}

/** The ControllerMessage carrying `diff` as a Config (its field 1), ready for the stream. */
export function encodeConfigMessage(diff: TableDiff): Buffer {
  const w = Writer.create();
  // One buffer in the end: the Config's length is known at ldelim, so nothing is copied twice.
  message(w, 1, (c) => {
    str(c, 1, diff.to.version);
    bool(c, 2, diff.full);
    str(c, 3, diff.from?.version ?? "");
    for (const entry of diff.services) {
      encoded(
        c,
        4,
        cached(serviceBytes, entry, (e) => encodeService(toWireService(e.service))),
      );
    }
    for (const key of diff.removed) str(c, 5, key, true);
    if (diff.peers) message(c, 6, (m) => encodePeers(m, diff.peers!));
    for (const entry of diff.traffic) {
      encoded(
        c,
        7,
        cached(trafficBytes, entry, (e) => encodeTraffic(toWireTraffic(e.object))),
      );
    }
    for (const key of diff.removedTraffic) str(c, 8, key, true);
  });
  return w.finish() as Buffer;
}
