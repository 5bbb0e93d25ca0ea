// The command line itself, run as a user runs it.
import { execFile, spawn } from "node:child_process";
import { once } from "node:events";
import { existsSync, readdirSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { type AddressInfo, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import packageJson from "../package.json" with { type: "json" };
import { freePort } from "../test/free-port.ts";

const BIN = fileURLToPath(new URL("./nodemesh.ts", import.meta.url));

async function nodemesh(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return nodemeshWith({}, ...args);
}

/** nodemesh with `env` added to the test's environment. */
async function nodemeshWith(
  env: Record<string, string>,
  ...args: string[]
): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [BIN, ...args], {
      timeout: 20_000,
      env: { ...process.env, ...env },
    });
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
    expect((await nodemesh("--help")).stdout).toContain("version     print nodemesh's version (also --version, -v)");
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

describe("the module compile cache", () => {
  const dirs: string[] = [];
  const tempDir = async () => {
    const dir = await mkdtemp(join(tmpdir(), "nodemesh-compile-cache-"));
    dirs.push(dir);
    return dir;
  };
  afterAll(async () => {
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });
  /** The cache files under `dir` (Node keeps them in a subdirectory per Node version and user). */
  const cached = (dir: string) =>
    existsSync(dir) ? readdirSync(dir).flatMap((version) => readdirSync(join(dir, version))) : [];
  const homeCache = (home: string) => join(home, ".cache", "nodemesh", "compile-cache");

  /**
   * Starts an agent with `env` added and kills it once ready (its threads wrote their cache
   * before): its stderr, where Node's compile cache debug output goes.
   */
  const agentRun = async (stateDir: string, env: Record<string, string>): Promise<string> => {
    const port = await freePort();
    const agent = spawn(
      process.execPath,
      [
        BIN,
        "agent",
        "--node-name",
        "n1",
        "--state-dir",
        stateDir,
        "--enrollment-socket",
        join(stateDir, "a.sock"),
        "--admin-address",
        "127.0.0.1",
        "--admin-port",
        String(port),
        "--workers",
        "1",
      ],
      { env: { ...process.env, NODE_DEBUG_NATIVE: "COMPILE_CACHE", ...env } },
    );
    let stdout = "";
    let stderr = "";
    agent.stdout.on("data", (d) => {
      stdout += d;
    });
    agent.stderr.on("data", (d) => {
      stderr += d;
    });
    const exited = once(agent, "exit");
    for (let waited = 0; waited < 20_000 && !stdout.includes('"msg":"agent ready"'); waited += 20) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    agent.kill("SIGKILL"); // no exit: Node writes nothing then
    await exited;
    expect(stdout).toContain('"msg":"agent ready"');
    return stderr;
  };

  it("keeps compiled code under ~/.cache/nodemesh, or $NODE_COMPILE_CACHE; NODE_DISABLE_COMPILE_CACHE=1 turns it off", async () => {
    const home = await tempDir();
    expect((await nodemeshWith({ HOME: home }, "get", "--help")).code).toBe(0);
    expect(cached(homeCache(home)).length).toBeGreaterThan(10);

    const chosen = await tempDir();
    const otherHome = await tempDir();
    expect((await nodemeshWith({ HOME: otherHome, NODE_COMPILE_CACHE: chosen }, "get", "--help")).code).toBe(0);
    expect(cached(chosen).length).toBeGreaterThan(10);
    expect(existsSync(join(otherHome, ".cache"))).toBe(false);

    const offHome = await tempDir();
    expect((await nodemeshWith({ HOME: offHome, NODE_DISABLE_COMPILE_CACHE: "1" }, "get", "--help")).code).toBe(0);
    expect(cached(homeCache(offHome))).toEqual([]);
  });

  it("the agent keeps none unless $NODE_COMPILE_CACHE asks: Node would hold it in the agent's memory", async () => {
    const home = await tempDir();
    const stderr = await agentRun(await tempDir(), { HOME: home });
    expect(stderr).not.toMatch(/reading cache from|writing cache for/);
    expect(cached(homeCache(home))).toEqual([]);
  });

  it("an agent asked for it writes its threads' cache once ready, so one killed still leaves it for the next", async () => {
    const cacheDir = await tempDir();
    const stateDir = await tempDir();
    const accepted = (module: string) =>
      `V8 code cache for ESM ${pathToFileURL(fileURLToPath(new URL(module, import.meta.url))).href} was accepted`;
    const controlThread = accepted("../agent/agent.ts");
    const dataplaneWorker = accepted("../agent/dataplane/worker.ts");
    const first = await agentRun(stateDir, { NODE_COMPILE_CACHE: cacheDir });
    expect(first).not.toContain(controlThread);
    expect(first).not.toContain(dataplaneWorker);
    const second = await agentRun(stateDir, { NODE_COMPILE_CACHE: cacheDir });
    expect(second).toContain(controlThread);
    expect(second).toContain(dataplaneWorker);
  });
});
