// Runs once around the whole test suite: reaps the namespaces of earlier runs that were killed,
// and fails the suite if this run leaves any of its own.
import { orphans, reapOrphans } from "./reaper.ts";

export async function setup(): Promise<void> {
  const reaped = await reapOrphans();
  if (reaped.length > 0) console.warn(`reaped network namespaces left by dead runs: ${reaped.join(", ")}`);
}

export async function teardown(): Promise<void> {
  // Every test worker has exited by now, so whatever namespace a worker made and did not delete
  // is an orphan. (Namespaces of concurrent runs have live owners and are not looked at.)
  const left = orphans();
  if (left.length === 0) return;
  await reapOrphans();
  process.exitCode = 1; // vitest only logs an error thrown here; this makes the run fail
  throw new Error(`the suite left network namespaces behind (a test did not destroy its world): ${left.join(", ")}`);
}
