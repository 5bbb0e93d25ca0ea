// The README's first command must keep working: `make demo` runs test/demo.ts.

import { execFileSync } from "node:child_process";
import { afterEach, describe, expect, it } from "vitest";
import { worldNamespaces } from "../world/netns.ts";
import { Proc } from "../world/world.ts";

const DEMO = new URL("../demo.ts", import.meta.url).pathname;

/** Namespaces that belong to the run of process `pid` (names carry the owner pid in base 36). */
function namespacesOf(pid: number): string[] {
  return worldNamespaces().filter((name) => name.startsWith(`nmt-${pid.toString(36)}-`));
}

/** Demos a test started: one still running after its test (it failed midway) is stopped and cleans up. */
const demos: Proc[] = [];
function startDemo(args: string[]): Proc {
  const demo = new Proc(process.execPath, [DEMO, ...args], { name: "demo" });
  demos.push(demo);
  return demo;
}
afterEach(async () => {
  for (const demo of demos.splice(0)) await demo.stop("SIGINT", 15_000);
}, 30_000);

describe("make demo", () => {
  it("runs the mesh, shows every replica serving, and cleans up", async () => {
    const demo = startDemo(["--once", "--requests", "6"]);
    const exit = await demo.exited;
    expect(exit.code, demo.lines.join("\n")).toBe(0);
    const output = demo.lines.join("\n");
    expect(output).toContain("served: reviews-1 2, reviews-2 2, reviews-3 2");
    expect(output).toMatch(/node-2 agent: 0 outbound, 4 inbound requests/);
    expect(namespacesOf(demo.pid!)).toEqual([]);
  }, 60_000);

  it("serves the dashboard on this machine's loopback, kept alive by a light load; Ctrl-C removes everything", async () => {
    // Port 0: whatever is free, so that a developer's own demo on 8080 does not fail this test.
    const demo = startDemo(["--requests", "3", "--dashboard-port", "0"]);
    const [, url] = (await demo.waitForLine(/dashboard: (http:\/\/127\.0\.0\.1:\d+\/)/, 30_000)).match(
      /dashboard: (\S+)/,
    )!;
    await demo.waitForLine(/Ctrl-C stops it/, 10_000);
    const page = await fetch(url);
    expect(page.status).toBe(200);
    expect(page.headers.get("content-type")).toContain("text/html");
    expect(await page.text()).toContain("<title>");
    // The background load (4 requests/s) shows in the service graph the page draws; the demo's own
    // 3 requests alone stay far below 1 request/s over the 10 s window.
    const clientToReviews = async () => {
      const graph = (await (await fetch(`${url}apis/nodemesh.io/v1alpha1/servicegraph?window=10`)).json()) as {
        edges: { source: string; target: string; requestsPerSecond: number }[];
      };
      return graph.edges.find((e) => e.source.includes("client") && e.target.includes("reviews"));
    };
    let edge: Awaited<ReturnType<typeof clientToReviews>>;
    for (let i = 0; i < 60 && !(edge && edge.requestsPerSecond > 1); i++) {
      edge = await clientToReviews();
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    expect(edge?.requestsPerSecond).toBeGreaterThan(1);
    // The agents' spans reach the controller: traces of four spans across both nodes' agents
    // (client → node-1 agent → reviews-2 or -3 through node-2's agent).
    const crossNodeTrace = async () => {
      const list = (await (await fetch(`${url}apis/nodemesh.io/v1alpha1/traces?limit=100`)).json()) as {
        items: { spanCount: number; nodes: string[] }[];
      };
      return list.items.find((t) => t.spanCount >= 4 && t.nodes.length === 2);
    };
    let trace: Awaited<ReturnType<typeof crossNodeTrace>>;
    for (let i = 0; i < 40 && !trace; i++) {
      trace = await crossNodeTrace();
      if (!trace) await new Promise((resolve) => setTimeout(resolve, 500));
    }
    expect(trace, "a trace through both agents").toBeDefined();
    expect(namespacesOf(demo.pid!).length).toBeGreaterThan(0);
    demo.kill("SIGINT");
    await demo.exited;
    expect(namespacesOf(demo.pid!)).toEqual([]);
  }, 60_000);

  it("removes everything when its terminal closes (SIGHUP)", async () => {
    const demo = startDemo(["--requests", "3"]);
    await demo.waitForLine(/Ctrl-C stops it/, 30_000);
    demo.kill("SIGHUP");
    expect((await demo.exited).code).toBe(0);
    expect(demo.lines.join("\n")).toContain("cleaned up");
    expect(namespacesOf(demo.pid!)).toEqual([]);
  }, 60_000);

  it("says which of its processes died, then removes everything and exits 1", async () => {
    const demo = startDemo(["--requests", "3"]);
    await demo.waitForLine(/Ctrl-C stops it/, 30_000);
    // node-1's agent runs in the node-1 namespace of this run.
    const node1 = namespacesOf(demo.pid!).find((name) => name.endsWith("-n1"));
    expect(node1).toBeDefined();
    const pids = execFileSync("ip", ["netns", "pids", node1!], { encoding: "utf8" }).trim().split("\n");
    expect(pids.length).toBeGreaterThan(0);
    for (const pid of pids) process.kill(Number(pid), "SIGKILL");
    expect((await demo.exited).code).toBe(1);
    const output = demo.lines.join("\n");
    expect(output).toMatch(/the node-1 agent exited \(SIGKILL\): stopping the demo/);
    expect(output).toContain("cleaned up");
    expect(namespacesOf(demo.pid!)).toEqual([]);
  }, 60_000);
});
