import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const FIXTURE = fileURLToPath(new URL("./read-buffers.fixture.ts", import.meta.url));

function forward256MB(flags: string[]): { received: number; maxArrayBuffersMB: number } {
  const out = execFileSync(process.execPath, [...flags, "--max-semi-space-size=8", FIXTURE], {
    encoding: "utf8",
    timeout: 60_000,
  });
  return JSON.parse(out.trim().split("\n").at(-1)!);
}

describe("the read buffers of forwarded bytes", () => {
  it("are collected young: a pipe's dead buffers stay far below V8's 64 MB external limit", () => {
    // With gc exposed (as the agent runs), a young collection every 8 MB forwarded.
    const collected = forward256MB(["--expose-gc"]);
    // Without it, V8 frees them only with the full collection the 64 MB limit starts.
    const left = forward256MB([]);
    expect(collected.received).toBe(256 * 2 ** 20);
    expect(left.received).toBe(256 * 2 ** 20);
    // Measured: 26 MB collected (the proxy's reads and the sink's), about 80 left.
    expect(collected.maxArrayBuffersMB).toBeLessThan(40);
    expect(left.maxArrayBuffersMB).toBeGreaterThan(collected.maxArrayBuffersMB + 24);
  });
});
