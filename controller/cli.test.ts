// `nodemesh controller`'s flags for traces and alerts: bad values stop it before anything starts,
// with a message naming the flag.

import { existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { runController } from "./cli.ts";

/** Never created: a bad flag stops the controller before it touches its store. */
const STORE = join(tmpdir(), `nodemesh-cli-test-${process.pid}`, "store");

describe("nodemesh controller flags", () => {
  it("refuses an unusable --otlp-address", async () => {
    for (const bad of ["10.0.0.1:99999", "a:b:c", "[::1]:x", ""]) {
      await expect(runController(["--otlp-address", bad, "--store-dir", STORE]), bad).rejects.toThrow(
        /--otlp-address must be/,
      );
    }
  });

  it("refuses an --alertmanager-url that is not an http(s) URL", async () => {
    for (const bad of ["alertmanager:9093", "ftp://am/", "http://am:9093/?x=1", ""]) {
      await expect(runController(["--alertmanager-url", bad, "--store-dir", STORE]), bad).rejects.toThrow(
        /--alertmanager-url/,
      );
    }
  });

  it("left no store behind", () => {
    expect(existsSync(STORE)).toBe(false);
  });

  it("names both flags in --help", async () => {
    const out: string[] = [];
    const write = process.stdout.write.bind(process.stdout);
    process.stdout.write = ((chunk: string) => out.push(chunk) > 0) as typeof process.stdout.write;
    try {
      expect(await runController(["--help"])).toBe(0);
    } finally {
      process.stdout.write = write;
    }
    expect(out.join("")).toMatch(/--otlp-address ADDR\[:PORT\][\s\S]*OTLP\/HTTP \(POST \/v1\/traces/);
    expect(out.join("")).toMatch(/--alertmanager-url URL[\s\S]*The controller asks it,\s+not the browser/);
  });
});
