// The command line itself, run as a user runs it.
import { execFile } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { type AddressInfo, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
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

  it("check --help and explain --help say what they check and how to reach the agent", async () => {
    const check = await nodemesh("check", "--help");
    expect(check.code).toBe(0);
    expect(check.stdout).toMatch(/^Usage: nodemesh check \[POD \| -n NS \| --all\] \[options\]/);
    expect(check.stdout).toContain("--agent URL");
    const explain = await nodemesh("explain", "--help");
    expect(explain.code).toBe(0);
    expect(explain.stdout).toMatch(/^Usage: nodemesh explain --from POD METHOD URL/);
    expect(explain.stdout).toContain("kubectl -n nodemesh-system port-forward");
    expect((await nodemesh("--help")).stdout).toContain("explain     where a request from a pod would go, and why");
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

describe("nodemesh controller start-up is all or nothing", () => {
  /** Runs `nodemesh controller` with a fresh store and gRPC on a free loopback port, plus `args`. */
  async function controller(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    const storeDir = await mkdtemp(join(tmpdir(), "nodemesh-startup-"));
    try {
      return await nodemesh(
        "controller",
        "--store-dir",
        storeDir,
        "--grpc-address",
        "127.0.0.1",
        "--grpc-port",
        "0",
        ...args,
      );
    } finally {
      await rm(storeDir, { recursive: true, force: true });
    }
  }

  it("exits 1 when its REST port is taken, instead of serving agents without its API", async () => {
    const holder = createServer().listen(0, "127.0.0.1");
    await once(holder, "listening");
    try {
      const r = await controller("--port", String((holder.address() as AddressInfo).port));
      expect(r.code).toBe(1);
      expect(r.stderr).toContain("EADDRINUSE");
    } finally {
      holder.close();
    }
  });

  it("exits 1 when told to serve its REST API beyond loopback without tokens", async () => {
    const r = await controller("--address", "0.0.0.0", "--port", "0");
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("refusing to serve the REST API on 0.0.0.0 without authentication");
  });
});
