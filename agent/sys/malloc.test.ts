import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const FIXTURE = fileURLToPath(new URL("./malloc.fixture.ts", import.meta.url));
const MB = 2 ** 20;

describe("glibc's heap", () => {
  it("keeps what freed Buffers held until released, and gives it back to the kernel then", () => {
    const out = execFileSync(process.execPath, ["--expose-gc", FIXTURE], { encoding: "utf8" });
    const r = JSON.parse(out.trim().split("\n").at(-1)!) as {
      supported: boolean;
      kept: number;
      free: number;
      left: number;
    };
    expect(r.supported).toBe(true);
    // 200 MB freed, still resident: the state the agent's release is for.
    expect(r.kept).toBeGreaterThan(150 * MB);
    expect(r.free).toBeGreaterThan(150 * MB);
    expect(r.left).toBeLessThan(50 * MB);
  });
});
