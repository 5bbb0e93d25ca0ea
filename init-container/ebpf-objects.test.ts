// The prebuilt eBPF objects in bpf/ are what `nodemesh init --mode ebpf` loads: they must be what
// their sources build to. This rebuilds them (bpf/build.sh, the script `make bpf` runs) into a
// temporary directory and compares byte for byte. The build is reproducible by construction
// (paths mapped to ".", DWARF stripped; see bpf/build.sh), so any difference is a source change
// whose objects were not rebuilt and committed — or another clang than Debian 12's clang 14.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";

const BPF_DIR = new URL("../bpf/", import.meta.url).pathname;
const OBJECTS = ["redirect.bpf.o", "origdst.bpf.o"];

function missingTools(): string[] {
  return ["clang", "llvm-strip"].filter((tool) => {
    try {
      execFileSync("sh", ["-c", `command -v ${tool}`], { stdio: "ignore" });
      return false;
    } catch {
      return true;
    }
  });
}

const missing = missingTools();
// On CI (make test installs clang and llvm) a missing compiler is a failure, not a skip.
const skipReason = missing.length > 0 && !process.env.CI ? `${missing.join(", ")} not installed (make setup)` : "";

describe.skipIf(skipReason !== "")(`prebuilt eBPF objects${skipReason ? ` (skipped: ${skipReason})` : ""}`, () => {
  const out = mkdtempSync(join(tmpdir(), "nodemesh-bpf-"));
  afterAll(() => rmSync(out, { recursive: true, force: true }));

  it("equal a fresh build of bpf/*.bpf.c (run make bpf and commit the objects when this fails)", () => {
    execFileSync(join(BPF_DIR, "build.sh"), [out], { stdio: "pipe" });
    for (const name of OBJECTS) {
      const fresh = readFileSync(join(out, name));
      const committed = readFileSync(join(BPF_DIR, name));
      expect(fresh.equals(committed), `${name} differs from a fresh build`).toBe(true);
    }
  });
});
