import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { NodeBindings } from "./node-bindings.ts";

let dir: string;
let path: string;
const errors: Error[] = [];
const onError = (err: Error) => errors.push(err);
const NOW = new Date("2026-12-01T10:00:00Z");
const A = "a".repeat(43);
const B = "b".repeat(43);

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "nodemesh-bindings-"));
  path = join(dir, "node-bindings.json");
  errors.length = 0;
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe("NodeBindings", () => {
  it("binds a name to the first secret, persists digests only (0600), and reloads them", async () => {
    const b = await NodeBindings.load(path, onError);
    expect(b.check("node-1", A)).toBe("unbound");
    b.bind("node-1", A, NOW);
    b.bind("node-2", B, NOW);
    expect(b.check("node-1", A)).toBe("matches");
    expect(b.check("node-1", B)).toBe("mismatch");
    await b.flush();
    const text = readFileSync(path, "utf8");
    expect(text).not.toContain(A);
    expect(statSync(path).mode & 0o777).toBe(0o600);

    const reloaded = await NodeBindings.load(path, onError);
    expect(reloaded.list()).toEqual([
      { node: "node-1", boundAt: NOW.toISOString() },
      { node: "node-2", boundAt: NOW.toISOString() },
    ]);
    expect(reloaded.boundAt("node-2")).toBe(NOW.toISOString());
    expect(reloaded.check("node-2", B)).toBe("matches");
    expect(await reloaded.release("node-2")).toBe(true);
    expect((await NodeBindings.load(path, onError)).list().map((x) => x.node)).toEqual(["node-1"]);
    expect(reloaded.boundAt("node-2")).toBeUndefined();
    expect(errors).toEqual([]);
  });

  it("refuses a corrupt file rather than starting without bindings", async () => {
    for (const text of [
      "{",
      '{"version":2,"nodes":{}}',
      '{"version":1,"nodes":{"n":{"digest":"xyz","boundAt":"t"}}}',
    ]) {
      writeFileSync(path, text);
      await expect(NodeBindings.load(path, onError)).rejects.toThrow(
        /node-bindings.json is corrupt: .*refusing to start/,
      );
    }
  });
});
