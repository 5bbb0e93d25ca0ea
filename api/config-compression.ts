// Compressed Configs (api/agent.proto, CompressedConfig). A full table of 10,000 Services is 3.9 MB
// of protobuf, and every agent of a fleet needs it: 1000 agents syncing at once moved 3.9 GB through
// grpc-js. The controller compresses each large Config once per encoding and writes the same bytes
// to every agent that reads that encoding (its Hello lists them); grpc-js's own message compression
// would compress again for every stream.
//
// Two encodings. zstd (RFC 8878) first: on such a table it is a little smaller than Brotli at
// quality 2 and both faster to compress (9 against 17 ms) and to inflate (7.7 against 13 ms).
// Every agent inflates the full table at least once, and during a 1000-agent sync that is most of
// the simulated fleet's work: 11.6 s to full sync with Brotli, 8.2 with zstd inflating into one
// buffer (docs/benchmarks.md, "Seventeenth session"). Brotli (RFC 7932) for agents that list only
// "br": those from before zstd, in a rolling upgrade.

import { brotliCompressSync, brotliDecompressSync, constants, zstdCompressSync, zstdDecompressSync } from "node:zlib";
import protobuf from "protobufjs/minimal.js";
import { agentServiceDefinition, type CompressedConfig, type Config } from "./agent-service.ts";

/** A CompressedConfig encoding this code writes and reads. */
export type ConfigEncoding = "zstd" | "br";
/** What an agent lists in its Hello, the one it prefers first. */
export const CONFIG_ENCODINGS: readonly ConfigEncoding[] = ["zstd", "br"];
/** Configs smaller than this go plain: compressing an update of a few Services buys nothing. */
export const COMPRESS_CONFIGS_FROM_BYTES = 64 << 10;
/** The largest Config an agent takes, plain (its gRPC receive limit) or once inflated. */
export const MAX_CONFIG_BYTES = 64 << 20;

interface Codec {
  compress(config: Uint8Array): Buffer;
  /** Throws past `maxOutputLength` bytes. */
  inflate(data: Uint8Array, opts: InflateOptions): Buffer;
}

interface InflateOptions {
  maxOutputLength: number;
  /**
   * The output buffer's size: the announced size and one byte, so the whole Config lands in one
   * buffer. With node's default (16 kB) a 3.9 MB table came out as 240 pieces, then copied into one
   * (`Buffer.concat`): a sixth of a simulated fleet's CPU during its sync (its profile).
   */
  chunkSize: number;
}

const CODECS: Record<ConfigEncoding, Codec> = {
  // Level 3, zstd's default: 6 was 6 % smaller at three times the time, and during a fleet's sync
  // the controller compresses every large update too.
  zstd: {
    compress: (config) =>
      zstdCompressSync(config, {
        params: { [constants.ZSTD_c_compressionLevel]: 3, [constants.ZSTD_c_contentSizeFlag]: 1 },
      }),
    inflate: (data, opts) => zstdDecompressSync(data, opts),
  },
  // Quality 2: quality 5 was no smaller at 3× the time (1000 agents: 16.4 s to full sync at 2,
  // 23.2 s at 5, make bench's control plane, fifth session).
  br: {
    compress: (config) =>
      brotliCompressSync(config, {
        params: { [constants.BROTLI_PARAM_QUALITY]: 2, [constants.BROTLI_PARAM_SIZE_HINT]: config.length },
      }),
    inflate: (data, opts) => brotliDecompressSync(data, opts),
  },
};

/** Whether this code writes and reads `name` (own keys only: "toString" is no encoding). */
function isConfigEncoding(name: string): name is ConfigEncoding {
  return Object.hasOwn(CODECS, name);
}

/** The controller's choice among the encodings an agent's Hello lists: the first it writes, or none (plain). */
export function pickConfigEncoding(listed: readonly string[] | undefined): ConfigEncoding | undefined {
  return listed?.find(isConfigEncoding);
}

const CONFIG_FIELD = 1; // ControllerMessage.config
const COMPRESSED_CONFIG_FIELD = 3; // ControllerMessage.compressed_config
const LEN = 2;

const deserialize = agentServiceDefinition.Connect.responseDeserialize as (bytes: Buffer) => unknown;

/**
 * Controller side: the ControllerMessage carrying `message`'s Config (a ControllerMessage holding
 * a Config, as config-encoding.ts writes it) compressed.
 */
export function compressConfigMessage(message: Uint8Array, version: string, encoding: ConfigEncoding): Buffer {
  const r = protobuf.Reader.create(message);
  const tag = r.uint32();
  if (tag !== ((CONFIG_FIELD << 3) | LEN)) throw new Error("not a ControllerMessage holding a Config");
  const length = r.uint32();
  const config = message.subarray(r.pos, r.pos + length);
  const data = CODECS[encoding].compress(config);
  const w = protobuf.Writer.create();
  w.uint32((COMPRESSED_CONFIG_FIELD << 3) | LEN).fork();
  w.uint32((1 << 3) | LEN).string(encoding);
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
  releaseConfigBytes(bytes);
  let message: { kind?: string; config?: Config };
  try {
    message = deserialize(framed) as typeof message;
  } catch (err) {
    throw new Error(`compressed config is not a Config: ${(err as Error).message}`);
  } finally {
    releaseConfigBytes(framed); // the decoded Config holds strings only: nothing refers into it
  }
  if (message.kind !== "config" || !message.config) throw new Error("compressed config is not a Config");
  return message.config;
}

/**
 * Frees the memory under `bytes`, a Config's bytes inflated here that nothing refers into any more
 * (read, or decoded into objects that hold only strings), at once instead of at the next
 * collection that finds them. A table is megabytes: freed, the allocator hands the same pages to
 * the next one; left to the collector, every table lands in pages the kernel must fault in and
 * zero (a 3.4 MB table: 12 ms to inflate into fresh memory, 2.2 ms into reused; a simulated fleet
 * inflates a thousand). `bytes` is empty afterwards.
 */
export function releaseConfigBytes(bytes: Buffer): void {
  const memory = bytes.buffer;
  // Node's Buffer pool (whose slabs are Buffer.poolSize, 64 kB in Node 24) hands out small Buffers
  // that share one ArrayBuffer: only memory larger than a slab is the buffer's own.
  if (memory instanceof ArrayBuffer && memory.byteLength > Buffer.poolSize) memory.transfer(0);
}

/** The Config's protobuf bytes in `compressed`, checked as inflateConfig says. */
export function inflateConfigBytes(compressed: CompressedConfig, maxBytes: number): Buffer {
  const { encoding } = compressed;
  if (!isConfigEncoding(encoding)) throw new Error(`unknown config encoding "${encoding}"`);
  const codec = CODECS[encoding];
  if (compressed.size > maxBytes)
    throw new Error(`a compressed config of ${compressed.size} bytes (at most ${maxBytes})`);
  let bytes: Buffer;
  try {
    const size = Math.max(1, compressed.size);
    bytes = codec.inflate(compressed.data, {
      maxOutputLength: size,
      chunkSize: Math.max(constants.Z_MIN_CHUNK, size + 1),
    });
  } catch (err) {
    throw new Error(`compressed config unreadable: ${(err as Error).message}`);
  }
  if (bytes.length !== compressed.size) {
    throw new Error(`compressed config inflated to ${bytes.length} bytes, ${compressed.size} announced`);
  }
  return bytes;
}
