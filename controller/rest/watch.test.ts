import type { ServerResponse } from "node:http";
import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { KINDS } from "../../api/resources.ts";
import { MemoryStore } from "../store/memory-store.ts";
import { serviceAt } from "../store/store-test-objects.fixture.ts";
import { serveWatch } from "./watch.ts";

/** A response whose client never reads: everything written stays queued in writableLength. */
function unreadResponse(): ServerResponse {
  const stream = new Writable({ highWaterMark: 1, write: () => {} }) as Writable & Record<string, unknown>;
  stream.writeHead = () => stream;
  stream.flushHeaders = () => {};
  return stream as unknown as ServerResponse;
}

const SERVICES = KINDS.find((k) => k.plural === "services")!;

describe("serveWatch", () => {
  it("destroys a watcher that stopped reading once past its backlog, freeing what was queued, and stops sending", async () => {
    const store = new MemoryStore();
    const res = unreadResponse();
    let cutOff = 0;
    const watch = serveWatch(res, {
      store,
      kind: SERVICES,
      namespace: "default",
      present: (o) => o,
      maxBacklogBytes: 8 * 1024,
      onCutOff: () => cutOff++,
    });
    const written: number[] = [];
    for (let i = 0; i < 200 && !res.destroyed; i++) {
      await store.create(serviceAt("default", `svc-${i}`, i));
      written.push(res.writableLength);
    }
    expect(res.destroyed).toBe(true);
    expect(cutOff).toBe(1);
    // Cut off at the first write past the limit, not after the whole loop.
    expect(written.length).toBeLessThan(200);
    expect(Math.max(...written.slice(0, -1))).toBeLessThanOrEqual(8 * 1024);
    await watch.done; // 'close' came: the server's bookkeeping releases the watch
    // Unsubscribed: later changes reach nobody and count nothing.
    await store.create(serviceAt("default", "after", 999));
    expect(cutOff).toBe(1);
  });

  it("ends the stream gracefully when the server stops it", async () => {
    const store = new MemoryStore();
    const res = unreadResponse();
    const watch = serveWatch(res, {
      store,
      kind: SERVICES,
      namespace: undefined,
      present: (o) => o,
      maxBacklogBytes: 1024 * 1024,
      onCutOff: () => {
        throw new Error("not cut off");
      },
    });
    await store.create(serviceAt("default", "one", 1));
    watch.stop();
    expect(res.writableEnded).toBe(true);
    expect(res.destroyed).toBe(false);
  });
});
