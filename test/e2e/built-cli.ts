// The nodemesh command line compiled as `npm run build` compiles it, into a directory of its own
// inside the repository (so node_modules resolves), for tests that measure what production runs:
// running from source costs every thread TypeScript's type stripper (about 17 MB each), which a
// memory bound must not count. Remove it with the returned `remove`.

import { execFile } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";

const REPO = new URL("../..", import.meta.url).pathname;

export async function buildCli(): Promise<{ cli: string; remove: () => void }> {
  mkdirSync(join(REPO, "test-results"), { recursive: true });
  const out = mkdtempSync(join(REPO, "test-results", "build-"));
  const remove = () => rmSync(out, { recursive: true, force: true });
  try {
    const tsc = join(REPO, "node_modules/typescript/bin/tsc");
    await promisify(execFile)(process.execPath, [tsc, "-p", join(REPO, "tsconfig.build.json"), "--outDir", out], {
      cwd: REPO,
      timeout: 120_000,
    });
    // What the build script copies besides the compiled code (package.json "build").
    cpSync(join(REPO, "api/agent.proto"), join(out, "api/agent.proto"));
    cpSync(join(REPO, "api/otlp"), join(out, "api/otlp"), { recursive: true });
    cpSync(join(REPO, "controller/ui/static"), join(out, "controller/ui/static"), { recursive: true });
  } catch (err) {
    remove();
    throw err;
  }
  return { cli: join(out, "bin/nodemesh.js"), remove };
}
