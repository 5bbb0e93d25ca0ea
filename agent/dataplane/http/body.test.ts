import { PassThrough, Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { FixedBody, RequestBody } from "./body.ts";

/** A sink that records what it got and whether it was ended. */
class Sink extends Writable {
  readonly got: Buffer[] = [];
  ended = false;
  constructor(opts: { highWaterMark?: number; delayMs?: number } = {}) {
    super({
      highWaterMark: opts.highWaterMark,
      write: (chunk: Buffer, _enc, cb) => {
        this.got.push(chunk);
        if (opts.delayMs) setTimeout(cb, opts.delayMs);
        else cb();
      },
      final: (cb) => {
        this.ended = true;
        cb();
      },
    });
  }
  get text(): string {
    return Buffer.concat(this.got).toString();
  }
}

const tick = (ms = 5) => new Promise((r) => setTimeout(r, ms));

describe("RequestBody", () => {
  it("replays the kept chunks to a second sink, then carries on with new chunks", async () => {
    const src = new PassThrough();
    const body = new RequestBody(src, 1024);
    const first = new Sink();
    body.attach(first);
    src.write("hello ");
    src.write("wor");
    await tick();
    expect(first.text).toBe("hello wor");
    expect(body.replayable).toBe(true);
    expect(Buffer.concat(body.kept as Buffer[]).toString()).toBe("hello wor");

    body.detach(); // the first attempt failed
    src.write("ld"); // arrives while no attempt is attached
    await tick();
    expect(first.text).toBe("hello wor");

    const second = new Sink();
    body.attach(second);
    await tick();
    expect(second.text).toBe("hello world");
    src.end("!");
    await body.whenEnded();
    await tick();
    expect(second.text).toBe("hello world!");
    expect(second.ended).toBe(true);
    expect(first.text).toBe("hello wor");
    expect(first.ended).toBe(false);
    expect(body.complete).toBe(true);
    expect(Buffer.concat(body.kept as Buffer[]).toString()).toBe("hello world!");
  });

  it("sends a whole kept body to a sink attached after the end, and ends it", async () => {
    const src = new PassThrough();
    const body = new RequestBody(src, 100);
    const first = new Sink();
    body.attach(first);
    src.end("abc");
    await body.whenEnded();
    await tick();
    expect(first.ended).toBe(true);
    const mirror = new Sink();
    body.attach(mirror);
    await tick();
    expect(mirror.text).toBe("abc");
    expect(mirror.ended).toBe(true);
    expect(await Promise.race([body.whenEnded().then(() => "ended"), tick(50).then(() => "pending")])).toBe("ended");
  });

  it("keeps a body of exactly the cap, and nothing once it grows past it", async () => {
    const src = new PassThrough();
    const body = new RequestBody(src, 5);
    const sink = new Sink();
    body.attach(sink);
    src.write("ab");
    src.write("cde");
    await tick();
    expect(body.replayable).toBe(true);
    expect(body.kept).toHaveLength(2);
    src.write("f");
    await tick();
    expect(body.replayable).toBe(false);
    expect(body.kept).toEqual([]);
    src.end("gh");
    await body.whenEnded();
    await tick();
    // The attempt in progress still gets every byte.
    expect(sink.text).toBe("abcdefgh");
    expect(sink.ended).toBe(true);
    expect(body.complete).toBe(false);
    expect(body.kept).toEqual([]);
  });

  it("keeps nothing with a cap of -1 (neither retries nor mirrors)", async () => {
    const src = new PassThrough();
    const body = new RequestBody(src, -1);
    expect(body.replayable).toBe(false);
    const sink = new Sink();
    body.attach(sink);
    src.end("payload");
    await body.whenEnded();
    await tick();
    expect(sink.text).toBe("payload");
    expect(body.kept).toEqual([]);
    expect(body.complete).toBe(false);
  });

  it("keeps an empty body with a cap of 0, until the first byte", async () => {
    const empty = new PassThrough();
    const a = new RequestBody(empty, 0);
    a.attach(new Sink());
    empty.end();
    await a.whenEnded();
    expect(a.complete).toBe(true);
    const one = new PassThrough();
    const b = new RequestBody(one, 0);
    b.attach(new Sink());
    one.end("x");
    await b.whenEnded();
    expect(b.replayable).toBe(false);
  });

  it("follows a slow sink's back-pressure without losing or reordering bytes", async () => {
    const src = new PassThrough({ highWaterMark: 16 });
    const body = new RequestBody(src, 1 << 20);
    const sink = new Sink({ highWaterMark: 8, delayMs: 1 });
    body.attach(sink);
    const expected: string[] = [];
    for (let i = 0; i < 40; i++) {
      const chunk = `chunk-${i};`;
      expected.push(chunk);
      if (!src.write(chunk)) await new Promise((r) => src.once("drain", r));
    }
    src.end();
    await body.whenEnded();
    await new Promise((r) => (sink.writableFinished ? r(undefined) : sink.once("finish", r)));
    expect(sink.text).toBe(expected.join(""));
    expect(Buffer.concat(body.kept as Buffer[]).toString()).toBe(expected.join(""));
  });

  it("does not resume for an abandoned sink's drain", async () => {
    const src = new PassThrough();
    const body = new RequestBody(src, 1024);
    const stuck = new Writable({ highWaterMark: 1, write: () => {} }); // never calls back: never drains
    body.attach(stuck);
    src.write("a");
    await tick();
    body.detach();
    expect(src.isPaused()).toBe(true);
    src.write("b");
    const next = new Sink();
    body.attach(next);
    src.end("c");
    await body.whenEnded();
    await tick();
    expect(next.text).toBe("abc");
    expect(next.ended).toBe(true);
  });
});

describe("FixedBody", () => {
  it("writes its chunks and ends, to every sink", async () => {
    const body = new FixedBody([Buffer.from("ab"), Buffer.from("c")]);
    for (let i = 0; i < 2; i++) {
      const sink = new Sink();
      body.attach(sink);
      await tick();
      expect(sink.text).toBe("abc");
      expect(sink.ended).toBe(true);
    }
    body.detach();
  });
});
