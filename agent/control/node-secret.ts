// The agent's node credential until mTLS lands: a random secret made on first start and kept in
// the state dir (0600). The controller binds the node name to the secret that first claimed it
// (trust on first use), so an agent restarted with the same state dir keeps its node, and another
// process cannot pose as it. Losing the state dir loses the node: an operator then releases the
// name (`nodemesh nodes release NODE`).

import { randomBytes } from "node:crypto";
import { chmodSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { NODE_SECRET_PATTERN } from "../../api/agent-service.ts";
import { writeFileAtomic } from "../sys/files.ts";

export const NODE_SECRET_FILE = "node-secret";

/** The secret in `stateDir`, made (32 random bytes, base64url) if there is none yet. */
export function loadOrCreateNodeSecret(stateDir: string): string {
  const path = join(stateDir, NODE_SECRET_FILE);
  let text: string | undefined;
  try {
    text = readFileSync(path, "utf8").trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
  if (text === undefined) {
    mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    const secret = randomBytes(32).toString("base64url");
    writeFileAtomic(path, `${secret}\n`);
    return secret;
  }
  // Replacing a bad secret would lock the node out of its binding: say so instead.
  if (!NODE_SECRET_PATTERN.test(text)) {
    throw new Error(`${path} is not a node secret (32 to 128 base64url characters); fix or remove it`);
  }
  chmodSync(path, 0o600); // in case someone copied it in with a wider mode
  return text;
}
