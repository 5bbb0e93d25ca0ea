// Applies the nat and raw tables built by rules.ts with iptables-save / iptables-restore. There
// is no maintained iptables binding on npm, and the restore format is the one atomic interface
// iptables offers (Istio's and Linkerd's init containers drive it the same way).
import { spawn } from "node:child_process";
import { INIT_ERROR_CODES, InitError } from "./errors.ts";
import { buildTables, type RedirectConfig, type RuleScope, TABLES } from "./rules.ts";

export interface IptablesOptions {
  /**
   * Run iptables inside this network namespace (through `nsenter --net=`), e.g. from the node or
   * from tests. Unset: the caller's own namespace, which is the pod's for the init container.
   */
  netnsPath?: string;
}

export interface AppliedTables {
  /** The tables before (iptables-save -c -t nat, then -t raw). */
  before: string;
  /** What was handed to iptables-restore. */
  tables: string;
}

/**
 * The current nat and raw tables, with counters (-c) so that restoring keeps the counters of
 * other tools' rules. A never-used table may print only empty built-in chains, or nothing:
 * buildTables accepts both.
 */
export async function saveTables(options: IptablesOptions = {}): Promise<string> {
  const dumps = await Promise.all(TABLES.map((name) => run("iptables-save", ["-c", "-t", name], "", options)));
  return dumps.join("");
}

/** Replaces the tables named in `tables` (and only them) with one iptables-restore. */
export async function restoreTables(tables: string, options: IptablesOptions = {}): Promise<void> {
  await run("iptables-restore", ["-c"], tables, options);
}

/** Installs (config) or removes (null) the redirect rules of `scope`; returns what it did. */
export async function applyRedirect(
  config: RedirectConfig | null,
  options: IptablesOptions = {},
  scope: RuleScope = "all",
): Promise<AppliedTables> {
  const before = await saveTables(options);
  const tables = buildTables(before, config, scope);
  await restoreTables(tables, options);
  return { before, tables };
}

function run(command: string, args: string[], input: string, { netnsPath }: IptablesOptions): Promise<string> {
  const argv = netnsPath ? ["nsenter", `--net=${netnsPath}`, command, ...args] : [command, ...args];
  const shown = argv.join(" ");
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0], argv.slice(1), { stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
    // EPIPE when the command exits before reading its input: the exit status tells the story.
    child.stdin.on("error", () => {});
    child.stdin.end(input);
    child.on("error", (err: NodeJS.ErrnoException) => {
      const why = err.code === "ENOENT" ? `${argv[0]} not found on PATH` : err.message;
      reject(new InitError(INIT_ERROR_CODES.IPTABLES_FAILED, `${shown}: ${why}`, { cause: err }));
    });
    child.on("close", (code, signal) => {
      if (code === 0) return resolve(stdout);
      const status = signal ? `killed by ${signal}` : `exit code ${code}`;
      // Drop iptables' "Try `iptables-restore -h' …" advice: it is noise in a pod's log.
      const details = stderr.replace(/^Try `.*$/gm, "").trim() || "no error output";
      const message = `${shown} failed (${status}): ${details}${offendingLine(stderr, input)}`;
      reject(new InitError(INIT_ERROR_CODES.IPTABLES_FAILED, message));
    });
  });
}

/** iptables-restore names the failing input line by number ("line 7 failed"): show that line. */
function offendingLine(stderr: string, input: string): string {
  const m = /line:? (\d+)/.exec(stderr);
  const line = m ? input.split("\n")[Number(m[1]) - 1] : undefined;
  return line ? `\n  line ${m![1]}: ${line}` : "";
}
