// The command line itself, run as a user runs it.
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import packageJson from "../package.json" with { type: "json" };

const BIN = fileURLToPath(new URL("./nodemesh.ts", import.meta.url));

async function nodemesh(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [BIN, ...args], { timeout: 20_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe("nodemesh", () => {
  it("--version, -v and version print the version", async () => {
    for (const flag of ["--version", "-v", "version"]) {
      expect(await nodemesh(flag)).toEqual({ code: 0, stdout: `nodemesh ${packageJson.version}\n`, stderr: "" });
    }
    expect((await nodemesh("--help")).stdout).toContain("version     print nodemesh's version (also --version)");
  });

  it("exits 2 on bad flags of a client command, before reaching any controller", async () => {
    const r = await nodemesh("status", "-n", "default", "--server", "http://127.0.0.1:1");
    expect(r).toEqual({
      code: 2,
      stdout: "",
      stderr: "nodemesh status: status has no option -n (see nodemesh status --help)\n",
    });
  });
});
