import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { NODE_SECRET_PATTERN } from "../../api/agent-service.ts";
import { loadOrCreateNodeSecret, NODE_SECRET_FILE } from "./node-secret.ts";

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "nodemesh-state-"));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe("loadOrCreateNodeSecret", () => {
  it("makes a random secret once (0600) and returns the same one after a restart", () => {
    const stateDir = join(dir, "state"); // not there yet
    const secret = loadOrCreateNodeSecret(stateDir);
    expect(secret).toMatch(NODE_SECRET_PATTERN);
    expect(statSync(join(stateDir, NODE_SECRET_FILE)).mode & 0o777).toBe(0o600);
    expect(loadOrCreateNodeSecret(stateDir)).toBe(secret);
    expect(loadOrCreateNodeSecret(join(dir, "other"))).not.toBe(secret);
  });

  it("refuses a file that is not a secret instead of replacing it", () => {
    writeFileSync(join(dir, NODE_SECRET_FILE), "oops\n");
    expect(() => loadOrCreateNodeSecret(dir)).toThrow(/is not a node secret .*fix or remove it/);
    expect(readFileSync(join(dir, NODE_SECRET_FILE), "utf8")).toBe("oops\n");
  });
});
