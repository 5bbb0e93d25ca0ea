// Test helpers: throwaway network namespaces (named nmi-*) and commands run inside them.
// Every namespace is deleted by `withNamespaces`, also when the test fails.
import { execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const exec = promisify(execFile);

export const PREFIX = "nmi-";
const PROBE = fileURLToPath(new URL("./probe.ts", import.meta.url));
const CLI = fileURLToPath(new URL("../cli.ts", import.meta.url));

export interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** Creates `count` namespaces (loopback up), runs fn, then deletes them whatever happens. */
export async function withNamespaces<T>(count: number, fn: (...names: string[]) => Promise<T>): Promise<T> {
  const names: string[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const name = `${PREFIX}${randomBytes(4).toString("hex")}`;
      await exec("ip", ["netns", "add", name]);
      names.push(name);
      await sh(name, "ip link set lo up");
    }
    return await fn(...names);
  } finally {
    for (const name of names) await deleteNamespace(name);
  }
}

async function deleteNamespace(name: string): Promise<void> {
  // Only our own probes can be in there; they are stopped by the tests, this is the safety net.
  const { stdout } = await exec("ip", ["netns", "pids", name]).catch(() => ({ stdout: "" }));
  for (const pid of stdout.split("\n").filter(Boolean)) {
    try {
      process.kill(Number(pid), "SIGKILL");
    } catch {}
  }
  await exec("ip", ["netns", "del", name]);
}

/** Runs argv inside the namespace; never throws on a non-zero exit. */
export async function run(ns: string, argv: string[], env: NodeJS.ProcessEnv = {}): Promise<Result> {
  const child = spawn("nsenter", [`--net=/run/netns/${ns}`, ...argv], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (s: string) => (stdout += s));
  child.stderr.setEncoding("utf8").on("data", (s: string) => (stderr += s));
  const [code] = (await once(child, "close")) as [number | null];
  return { code: code ?? -1, stdout, stderr };
}

/** Runs a shell command line inside the namespace and fails loudly if it fails. */
export async function sh(ns: string, line: string): Promise<string> {
  const r = await run(ns, ["sh", "-c", line]);
  if (r.code !== 0) throw new Error(`[${ns}] ${line}: exit ${r.code}: ${r.stderr}`);
  return r.stdout;
}

/** `nodemesh init` run end to end inside the namespace. */
export function init(ns: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<Result> {
  return run(ns, [process.execPath, CLI, ...args], env);
}

/** iptables-save (all tables, or one) without its timestamp lines and with counters zeroed. */
export async function iptablesSave(ns: string, table?: string): Promise<string> {
  const out = await sh(ns, table ? `iptables-save -t ${table}` : "iptables-save");
  return out
    .split("\n")
    .filter((line) => !line.startsWith("#"))
    .map((line) => line.replace(/\[\d+:\d+\]/g, "[0:0]"))
    .join("\n");
}

/** TCP servers inside the namespace answering each connection with their banner; stop() ends them. */
export async function serve(ns: string, banners: Record<number, string>): Promise<{ stop: () => Promise<void> }> {
  const args = Object.entries(banners).map(([port, banner]) => `${port}=${banner}`);
  const child = spawn("nsenter", [`--net=/run/netns/${ns}`, process.execPath, PROBE, "serve", ...args], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const [ready] = (await Promise.race([once(child.stdout, "data"), once(child, "exit")])) as [unknown];
  if (String(ready).trim() !== "ready") throw new Error(`probe servers in ${ns} did not start`);
  return {
    stop: async () => {
      if (child.exitCode !== null) return;
      child.kill("SIGTERM");
      await once(child, "exit");
    },
  };
}

/**
 * Connects from inside the namespace and returns the banner read, or "error: CODE"; from
 * `localPort` if given, and with SO_MARK `mark` if given (as the agent's sockets are).
 */
export async function connect(
  ns: string,
  host: string,
  port: number,
  from: { localPort?: number; mark?: number } = {},
): Promise<string> {
  const extra = from.localPort || from.mark ? [String(from.localPort ?? 0), String(from.mark ?? 0)] : [];
  const r = await run(ns, [process.execPath, PROBE, "connect", host, String(port), ...extra]);
  return r.stdout.trim();
}
