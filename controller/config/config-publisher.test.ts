import pino from "pino";
import { afterEach, describe, expect, it, vi } from "vitest";
import { MemoryStore } from "../store/memory-store.ts";
import { AgentRegistry } from "./agent-registry.ts";
import { ConfigPublisher } from "./config-publisher.ts";
import { PropagationTracker } from "./propagation.ts";
import { newServiceObject } from "./testing/fixtures.ts";

// Counts the encodings, so that what the publisher keeps shows in what it encodes again.
const encodings = vi.hoisted(() => ({ count: 0 }));
vi.mock("./config-encoding.ts", async (original) => {
  const actual = await original<typeof import("./config-encoding.ts")>();
  return {
    ...actual,
    encodeConfigMessage: (...args: Parameters<typeof actual.encodeConfigMessage>) => {
      encodings.count++;
      return actual.encodeConfigMessage(...args);
    },
  };
});

let publisher: ConfigPublisher | undefined;
afterEach(() => publisher?.stop());

async function publishing(services: number): Promise<ConfigPublisher> {
  const store = new MemoryStore();
  await store.open();
  for (let i = 0; i < services; i++) {
    await store.create(newServiceObject(`svc-${i}`, `10.97.${i >> 8}.${i & 255}`, { app: `svc-${i}` }));
  }
  publisher = new ConfigPublisher({
    store,
    agents: new AgentRegistry({ forgetAfterMs: 60_000, onTopologyChange: () => {} }),
    tracker: new PropagationTracker(),
    debounceMs: 1,
    startupGraceMs: 0,
    now: () => performance.timeOrigin + performance.now(),
    log: pino({ level: "silent" }),
  });
  publisher.start();
  await vi.waitFor(() => expect(publisher!.current()).toBeDefined());
  return publisher;
}

describe("ConfigPublisher's encoded Configs", () => {
  it("keeps what went out: the compressed bytes of a large table, not the plain ones they came from", async () => {
    // 3000 Services: a full table past COMPRESS_CONFIGS_FROM_BYTES.
    const p = await publishing(3000);
    encodings.count = 0;
    const first = p.messageFrom(undefined, "zstd");
    expect(first.compressed).toBe(true);
    expect(encodings.count).toBe(1);
    // Every other agent reading zstd gets the same bytes, with no encoding.
    expect(p.messageFrom(undefined, "zstd").message).toBe(first.message);
    expect(encodings.count).toBe(1);
    // An agent reading plain Configs: the plain bytes were not kept, so they are encoded again (and kept).
    const plain = p.messageFrom(undefined);
    expect(plain.compressed).toBe(false);
    expect(plain.message.length).toBeGreaterThan(first.message.length * 5);
    expect(encodings.count).toBe(2);
    expect(p.messageFrom(undefined).message).toBe(plain.message);
    expect(encodings.count).toBe(2);
    // An agent reading only Brotli (one from before zstd): its own bytes, from the kept plain ones.
    const brotli = p.messageFrom(undefined, "br");
    expect(brotli.compressed).toBe(true);
    expect(brotli.message).not.toEqual(first.message);
    expect(p.messageFrom(undefined, "br").message).toBe(brotli.message);
    expect(p.messageFrom(undefined, "zstd").message).toBe(first.message);
    expect(encodings.count).toBe(2);
  });

  it("keeps a small table's plain bytes for every agent, whatever it reads", async () => {
    const p = await publishing(3);
    encodings.count = 0;
    const first = p.messageFrom(undefined, "zstd");
    expect(first.compressed).toBe(false);
    expect(p.messageFrom(undefined).message).toBe(first.message);
    expect(p.messageFrom(undefined, "zstd").message).toBe(first.message);
    expect(encodings.count).toBe(1);
  });
});
