import { execFile } from "node:child_process";
import { promisify } from "node:util";

const run = promisify(execFile);

/** Every namespace a test world creates starts with this prefix. */
export const WORLD_PREFIX = "nmt-";

export async function leftovers(): Promise<string[]> {
  const { stdout } = await run("ip", ["netns", "list"]);
  return stdout
    .split("\n")
    .map((line) => line.split(" ")[0])
    .filter((name) => name.startsWith(WORLD_PREFIX));
}

/** Kills the processes inside each leftover namespace, then deletes it. */
export async function reapLeftovers(): Promise<void> {
  for (const name of await leftovers()) {
    const { stdout } = await run("ip", ["netns", "pids", name]).catch(() => ({ stdout: "" }));
    for (const pid of stdout.split("\n").filter(Boolean)) {
      try {
        process.kill(Number(pid), "SIGKILL");
      } catch {}
    }
    await run("ip", ["netns", "del", name]).catch(() => {});
  }
}
