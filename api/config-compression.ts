// Compressed Configs (api/agent.proto, CompressedConfig). A full table of 10,000 Services is 3.4 MB
// of protobuf, and every agent of a fleet needs it: 1000 agents syncing at once moved 3.4 GB through
// grpc-js. The controller compresses each large Config once and writes the same bytes to every
// agent that reads the encoding (its Hello says so); grpc-js's own message compression would
// compress again for every stream. Brotli: about 20× on such tables, and stable in every Node.

import { brotliCompressSync, brotliDecompressSync, constants } from "node:zlib";
import protobuf from "protobufjs/minimal.js";
import { agentServiceDefinition, type CompressedConfig, type Config } from "./agent-service.ts";

export const CONFIG_ENCODING = "br";
/** Configs smaller than this go plain: compressing an update of a few Services buys nothing. */
export const COMPRESS_CONFIGS_FROM_BYTES = 64 << 10;
/** The largest Config an agent takes, plain (its gRPC receive limit) or once inflated. */
export const MAX_CONFIG_BYTES = 64 << 20;
/**
 * Quality 2: about 20× in 12 ms on a 3.8 MB table; 5 was no smaller at 3× the time, and during a
 * fleet's sync the controller compresses every large update too (1000 agents: 16.4 s to full sync
 * at 2, 23.2 s at 5, make bench's control plane).
 */
const BROTLI_QUALITY = 2;

const CONFIG_FIELD = 1; // ControllerMessage.config
const COMPRESSED_CONFIG_FIELD = 3; // ControllerMessage.compressed_config
const LEN = 2;

const deserialize = agentServiceDefinition.Connect.responseDeserialize as (bytes: Buffer) => unknown;

/**
 * Controller side: the ControllerMessage carrying `message`'s Config (a ControllerMessage holding
 * a Config, as config-encoding.ts writes it) compressed.
 */
export function compressConfigMessage(message: Uint8Array, version: string): Buffer {
  const r = protobuf.Reader.create(message);
  const tag = r.uint32();
  if (tag !== ((CONFIG_FIELD << 3) | LEN)) throw new Error("not a ControllerMessage holding a Config");
  const length = r.uint32();
  const config = message.subarray(r.pos, r.pos + length);
  const data = brotliCompressSync(config, {
    params: {
      [constants.BROTLI_PARAM_QUALITY]: BROTLI_QUALITY,
      [constants.BROTLI_PARAM_SIZE_HINT]: config.length,
    },
  });
  const w = protobuf.Writer.create();
  w.uint32((COMPRESSED_CONFIG_FIELD << 3) | LEN).fork();
  w.uint32((1 << 3) | LEN).string(CONFIG_ENCODING);
  w.uint32((2 << 3) | LEN).string(version);
  w.uint32(3 << 3).uint32(config.length);
  w.uint32((4 << 3) | LEN).bytes(data);
  w.ldelim();
  return w.finish() as Buffer;
}

/**
 * Agent side: the Config in `compressed`, inflating at most `maxBytes` (and no more than it says
 * it holds). Throws what is wrong: an unknown encoding, too large, corrupt, not a Config.
 */
export function inflateConfig(compressed: CompressedConfig, maxBytes: number): Config {
  const bytes = inflateConfigBytes(compressed, maxBytes);
  // A Config alone has no decoder of its own here: framed as ControllerMessage.config, it is decoded
  // by the same code as a plain one.
  const w = protobuf.Writer.create();
  w.uint32((CONFIG_FIELD << 3) | LEN).uint32(bytes.length);
  const framed = Buffer.concat([w.finish(), bytes]);
  let message: { kind?: string; config?: Config };
  try {
    message = deserialize(framed) as typeof message;
  } catch (err) {
    throw new Error(`compressed config is not a Config: ${(err as Error).message}`);
  }
  if (message.kind !== "config" || !message.config) throw new Error("compressed config is not a Config");
  return message.config;
}

/** The Config's protobuf bytes in `compressed`, checked as inflateConfig says. */
export function inflateConfigBytes(compressed: CompressedConfig, maxBytes: number): Buffer {
  if (compressed.encoding !== CONFIG_ENCODING) throw new Error(`unknown config encoding "${compressed.encoding}"`);
  if (compressed.size > maxBytes)
    throw new Error(`a compressed config of ${compressed.size} bytes (at most ${maxBytes})`);
  let bytes: Buffer;
  try {
    bytes = brotliDecompressSync(compressed.data, { maxOutputLength: Math.max(1, compressed.size) });
  } catch (err) {
    throw new Error(`compressed config unreadable: ${(err as Error).message}`);
  }
  if (bytes.length !== compressed.size) {
    throw new Error(`compressed config inflated to ${bytes.length} bytes, ${compressed.size} announced`);
  }
  return bytes;
}
