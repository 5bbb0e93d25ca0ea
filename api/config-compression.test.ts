import { brotliCompressSync, zstdCompressSync } from "node:zlib";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { agentServiceDefinition, type CompressedConfig, type Config } from "./agent-service.ts";
import {
  CONFIG_ENCODINGS,
  compressConfigMessage,
  inflateConfig,
  inflateConfigBytes,
  MAX_CONFIG_BYTES,
  pickConfigEncoding,
  releaseConfigBytes,
} from "./config-compression.ts";

const serialize = agentServiceDefinition.Connect.responseSerialize as (msg: unknown) => Buffer;
const deserialize = agentServiceDefinition.Connect.responseDeserialize as (bytes: Buffer) => unknown;

function table(services: number): Config {
  return {
    version: "7.3",
    full: true,
    baseVersion: "",
    services: Array.from({ length: services }, (_, i) => ({
      name: `svc-${i}`,
      namespace: "default",
      vip: `10.96.${i >> 8}.${i & 255}`,
      ports: [{ name: "http", port: 80, targetPort: 8080, protocol: "http" }],
      endpoints: [
        {
          ip: `10.128.${i >> 8}.${i & 255}`,
          port: 8080,
          node: "node-1",
          pod: `default/p-${i}`,
          meshed: true,
          workload: `svc-${i}`,
          serviceAccount: "default",
        },
      ],
    })),
    removed: [],
    peers: { nodes: [{ name: "node-1", underlayIp: "10.0.0.1" }] },
    traffic: [{ kind: "TrafficPolicy", namespace: "default", name: "p", specJson: '{"timeouts":{"request":"2s"}}' }],
    removedTraffic: [],
  };
}

/** What the agent's stream hands it: the compressed message decoded by the contract's codec. */
function received(message: Buffer): CompressedConfig {
  const decoded = deserialize(message) as { kind: string; compressedConfig: CompressedConfig };
  expect(decoded.kind).toBe("compressedConfig");
  return decoded.compressedConfig;
}

const COMPRESS = { zstd: zstdCompressSync, br: brotliCompressSync };

describe.each(CONFIG_ENCODINGS)("Configs compressed with %s", (encoding) => {
  it("inflate to exactly the Config the plain message carries, at a fraction of its size", () => {
    const plain = serialize({ config: table(2000) });
    const compressed = compressConfigMessage(plain, "7.3", encoding);
    expect(compressed.length).toBeLessThan(plain.length / 5);
    const c = received(compressed);
    expect(c).toMatchObject({ encoding, version: "7.3" });
    expect(inflateConfig(c, MAX_CONFIG_BYTES)).toEqual((deserialize(plain) as { config: Config }).config);
  });

  it("refuses what it cannot or must not read, naming why", () => {
    const c = received(compressConfigMessage(serialize({ config: table(50) }), "7.3", encoding));
    expect(() => inflateConfig({ ...c, encoding: "lz4" }, MAX_CONFIG_BYTES)).toThrow('unknown config encoding "lz4"');
    expect(() => inflateConfig({ ...c, encoding: "toString" }, MAX_CONFIG_BYTES)).toThrow(
      'unknown config encoding "toString"',
    );
    expect(() => inflateConfig(c, c.size - 1)).toThrow(
      `a compressed config of ${c.size} bytes (at most ${c.size - 1})`,
    );
    // A bomb: it announces little and inflates to more; inflation stops at what was announced.
    const bomb = { ...c, data: COMPRESS[encoding](Buffer.alloc(50 << 20)), size: 1000 };
    expect(() => inflateConfig(bomb, MAX_CONFIG_BYTES)).toThrow(/compressed config unreadable/);
    expect(() => inflateConfig({ ...c, size: c.size + 10 }, MAX_CONFIG_BYTES)).toThrow(
      /inflated to \d+ bytes, \d+ announced/,
    );
    expect(() => inflateConfig({ ...c, data: Buffer.from("not compressed at all") }, MAX_CONFIG_BYTES)).toThrow(
      /compressed config unreadable/,
    );
    const garbage = Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f]);
    expect(() =>
      inflateConfig({ ...c, data: COMPRESS[encoding](garbage), size: garbage.length }, MAX_CONFIG_BYTES),
    ).toThrow(/not a Config/);
  });

  it("turns any bytes, whatever size they announce, into a Config or an Error (fuzz)", () => {
    const valid = received(compressConfigMessage(serialize({ config: table(20) }), "7.3", encoding));
    // Random data, and valid data with random flips: never a crash, a hang or an inflation past the bound.
    const data = fc.oneof(
      fc.uint8Array({ maxLength: 512 }).map((b) => Buffer.from(b)),
      fc.array(fc.nat({ max: valid.data.length - 1 }), { minLength: 1, maxLength: 4 }).map((at) => {
        const flipped = Buffer.from(valid.data);
        for (const i of at) flipped[i]! ^= 0x5a;
        return flipped;
      }),
    );
    fc.assert(
      fc.property(data, fc.nat({ max: 1 << 20 }), (bytes, size) => {
        try {
          const config = inflateConfig({ ...valid, data: bytes, size }, 1 << 20);
          expect(typeof config.version).toBe("string");
        } catch (err) {
          expect(err).toBeInstanceOf(Error);
          expect((err as Error).message).toMatch(/compressed config/);
        }
      }),
      { numRuns: 500 },
    );
  });
});

describe("compressed Configs", () => {
  it("the controller writes the first encoding an agent lists that it knows; none known: plain", () => {
    expect(pickConfigEncoding(["zstd", "br"])).toBe("zstd");
    expect(pickConfigEncoding(["lz4", "br", "zstd"])).toBe("br");
    expect(pickConfigEncoding(["lz4", "__proto__", "toString"])).toBeUndefined();
    expect(pickConfigEncoding([])).toBeUndefined();
    expect(pickConfigEncoding(undefined)).toBeUndefined();
  });

  it("frees an inflated table at once, and never a small Buffer that may share its memory", () => {
    const plain = serialize({ config: table(2000) });
    const inflated = inflateConfigBytes(received(compressConfigMessage(plain, "7.3", "zstd")), MAX_CONFIG_BYTES);
    expect(inflated.length).toBeGreaterThan(64 << 10);
    releaseConfigBytes(inflated);
    expect(inflated.length).toBe(0);
    expect(inflated.buffer.byteLength).toBe(0);

    // Small Buffers come from Node's shared pool: releasing one must not touch its neighbours.
    const small = Buffer.from("a small config");
    const neighbour = Buffer.from("its neighbour in the pool");
    releaseConfigBytes(small);
    expect(small.toString()).toBe("a small config");
    expect(neighbour.toString()).toBe("its neighbour in the pool");
  });

  it("compresses only a ControllerMessage that holds a Config", () => {
    const certificate = serialize({
      certificate: { requestId: "r", certChainPem: "", trustBundlePem: "", error: "x" },
    });
    expect(() => compressConfigMessage(certificate, "1", "zstd")).toThrow("not a ControllerMessage holding a Config");
  });
});
