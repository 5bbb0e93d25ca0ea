// Stop-then-start without refused connections. An agent stopped with no successor beside it (a
// supervisor that restarts in place) leaves its pod listeners open in a holder process before it
// closes its own copies: connections arriving in the gap wait in those sockets' queues instead of
// being refused. The next agent opens its listeners beside them (SO_REUSEPORT) and ends the holder;
// what waited moves to the new listeners (tcp_migrate_req, sys/linux.ts allowListenerMigration).
// No next agent within the hold time: the holder exits and the waiting connections are reset.
//
// The holder is `sleep`, given the listening sockets as inherited descriptors: nothing runs in it.

import { spawn } from "node:child_process";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import type { Logger } from "pino";
import { writeFileAtomic } from "../sys/files.ts";

const HOLDER_FILE = "listener-holder.json";

/** Hands `fds` (listening sockets) to a detached holder for `seconds`; recorded in the state dir. */
export function holdListeners(stateDir: string, fds: readonly number[], seconds: number, log: Logger): void {
  if (fds.length === 0 || seconds <= 0) return;
  try {
    const holder = spawn("sleep", [String(seconds)], {
      stdio: ["ignore", "ignore", "ignore", ...fds],
      detached: true,
    });
    holder.on("error", (err) => log.error({ err: err.message }, "could not start the listener holder"));
    holder.unref();
    if (holder.pid === undefined) return;
    writeFileAtomic(join(stateDir, HOLDER_FILE), `${JSON.stringify({ pid: holder.pid, listeners: fds.length })}\n`);
    log.info({ pid: holder.pid, listeners: fds.length, seconds }, "pod listeners held for the next agent");
  } catch (err) {
    log.error({ err: (err as Error).message }, "could not hold the pod listeners");
  }
}

/**
 * Ends the holder a previous agent left, once this agent's listeners are open in every pod: the
 * connections waiting in the held sockets move to ours.
 */
export function releaseHeldListeners(stateDir: string, log: Logger): void {
  const file = join(stateDir, HOLDER_FILE);
  if (!existsSync(file)) return;
  try {
    const { pid } = JSON.parse(readFileSync(file, "utf8")) as { pid?: unknown };
    // Only the holder we recorded: a pid the system reused for something else is left alone.
    if (typeof pid === "number" && pid > 0 && commandOf(pid) === "sleep") {
      process.kill(pid, "SIGTERM");
      log.info({ pid }, "took over the pod listeners the previous agent held");
    }
  } catch (err) {
    log.warn({ err: (err as Error).message }, "could not end the listener holder");
  }
  rmSync(file, { force: true });
}

function commandOf(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0")[0]?.split("/").at(-1);
  } catch {
    return undefined;
  }
}
