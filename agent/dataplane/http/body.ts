// A request body that can be sent more than once: chunks are kept while the body stays under the
// retry cap, so a retry replays what was sent and then carries on with what is still arriving.
// Past the cap nothing is kept and the request can no longer be retried or mirrored.

import type { Readable, Writable } from "node:stream";
import { countForwarded } from "../read-buffers.ts";

export interface BodySource {
  /** True when there is no body at all (ended before any byte): the request goes out without one. */
  readonly empty: boolean;
  /** Sends the body to `sink` from the start, and ends it when the body ends. */
  attach(sink: Writable): void;
  /** Stops sending to the current sink (its attempt was abandoned). */
  detach(): void;
}

export class RequestBody implements BodySource {
  private chunks: Buffer[] = [];
  private size = 0;
  private sink: Writable | undefined;
  private listening = false;
  private ended = false;
  /** Body bytes received from the client so far. */
  bytes = 0;
  /** Every byte so far is kept: a retry can resend the body. */
  replayable: boolean;

  private readonly src: Readable;
  private readonly cap: number;

  constructor(src: Readable, cap: number) {
    this.src = src;
    this.cap = cap;
    this.replayable = cap >= 0;
    // A request without a body may arrive already ended (optimizeEmptyRequests): no "end" follows.
    this.ended = src.readableEnded;
    // Listening from the start: an HTTP/2 stream may end before the first attempt attaches.
    if (!this.ended) {
      src.once("end", () => {
        this.ended = true;
        this.sink?.end();
      });
    }
  }

  /** True when the whole body has arrived and is kept (a mirror can copy it). */
  get complete(): boolean {
    return this.ended && this.replayable;
  }

  get kept(): readonly Buffer[] {
    return this.chunks;
  }

  get empty(): boolean {
    return this.bytes === 0 && (this.ended || this.src.readableEnded);
  }

  attach(sink: Writable): void {
    this.sink = sink;
    for (const c of this.chunks) sink.write(c);
    if (this.ended || this.src.readableEnded) {
      this.ended = true;
      sink.end();
      return;
    }
    if (!this.listening) {
      this.listening = true;
      this.src.on("data", (chunk: Buffer) => this.onData(chunk));
    }
    this.src.resume();
  }

  detach(): void {
    this.sink = undefined;
    if (!this.ended) this.src.pause();
  }

  /** Resolves once the whole body has arrived (or at once if it has). */
  whenEnded(): Promise<void> {
    if (this.ended) return Promise.resolve();
    return new Promise((resolve) => {
      this.src.once("end", resolve);
      this.src.once("close", resolve);
    });
  }

  private onData(chunk: Buffer): void {
    this.bytes += chunk.length;
    countForwarded(chunk);
    if (this.replayable) {
      this.size += chunk.length;
      if (this.size > this.cap) {
        this.replayable = false;
        this.chunks = [];
      } else this.chunks.push(chunk);
    }
    const sink = this.sink;
    if (sink && !sink.write(chunk)) {
      this.src.pause();
      sink.once("drain", () => {
        if (this.sink === sink) this.src.resume();
      });
    }
  }
}

/** A body already in memory (a mirrored request). */
export class FixedBody implements BodySource {
  private readonly chunks: readonly Buffer[];
  constructor(chunks: readonly Buffer[]) {
    this.chunks = chunks;
  }
  get empty(): boolean {
    return this.chunks.every((c) => c.length === 0);
  }
  attach(sink: Writable): void {
    for (const c of this.chunks) sink.write(c);
    sink.end();
  }
  detach(): void {}
}
