// Runs once around the whole test suite: removes namespaces that an earlier, killed run left
// behind, and fails the suite if this run leaves any of its own.
import { leftovers, reapLeftovers } from "./reaper.ts";

export async function setup(): Promise<void> {
  await reapLeftovers();
}

export async function teardown(): Promise<void> {
  const left = await leftovers();
  if (left.length > 0) {
    await reapLeftovers();
    throw new Error(`the suite left network namespaces behind: ${left.join(", ")}`);
  }
}
