import { closeSync, fsyncSync, openSync, readFileSync, renameSync, writeSync } from "node:fs";
import { dirname } from "node:path";

/** Write-to-temp, fsync, rename, fsync the directory: after a crash the file is old or new, never torn. */
export function writeFileAtomic(path: string, data: string): void {
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = openSync(tmp, "w", 0o600);
  try {
    writeSync(fd, data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
  const dir = openSync(dirname(path), "r");
  try {
    fsyncSync(dir);
  } finally {
    closeSync(dir);
  }
}

/**
 * A JSON file's text and parsed value, or undefined when it does not exist and `optional`. Every
 * other failure is `fail(message)`, the message naming the file and what is wrong with it.
 */
export function readJsonFile(
  path: string,
  fail: (message: string) => Error,
  opts: { optional?: boolean } = {},
): { text: string; value: unknown } | undefined {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    if (opts.optional && (err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw fail(`cannot read ${path}: ${(err as Error).message}`);
  }
  try {
    return { text, value: JSON.parse(text) };
  } catch (err) {
    throw fail(`${path} is not JSON: ${(err as Error).message}`);
  }
}
