// The README's first command must keep working: `make demo` runs test/demo.ts.

import { describe, expect, it } from "vitest";
import { worldNamespaces } from "../world/netns.ts";
import { Proc } from "../world/world.ts";

const DEMO = new URL("../demo.ts", import.meta.url).pathname;

/** Namespaces that belong to the run of process `pid` (names carry the owner pid in base 36). */
function namespacesOf(pid: number): string[] {
  return worldNamespaces().filter((name) => name.startsWith(`nmt-${pid.toString(36)}-`));
}

describe("make demo", () => {
  it("runs the mesh, shows every replica serving, and cleans up", async () => {
    const demo = new Proc(process.execPath, [DEMO, "--once", "--requests", "6"], { name: "demo" });
    const exit = await demo.exited;
    expect(exit.code, demo.lines.join("\n")).toBe(0);
    const output = demo.lines.join("\n");
    expect(output).toContain("served: reviews-1 2, reviews-2 2, reviews-3 2");
    expect(output).toMatch(/node-2 agent: 0 outbound, 4 inbound requests/);
    expect(namespacesOf(demo.pid!)).toEqual([]);
  }, 60_000);

  it("removes everything on Ctrl-C", async () => {
    const demo = new Proc(process.execPath, [DEMO, "--requests", "3"], { name: "demo" });
    await demo.waitForLine(/Ctrl-C stops it/, 30_000);
    expect(namespacesOf(demo.pid!).length).toBeGreaterThan(0);
    demo.kill("SIGINT");
    await demo.exited;
    expect(namespacesOf(demo.pid!)).toEqual([]);
  }, 60_000);
});
