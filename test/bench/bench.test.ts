// The benchmark's pure parts: HAProxy's configuration and rules (checked by the real haproxy and
// iptables-restore), percentiles, and the goals evaluated from results.

import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import type { Pod } from "../world/world.ts";
import type { BenchResults, PathResult } from "./compare.ts";
import { percentile } from "./h2load.ts";
import { inboundConfig, inboundRules, outboundConfig, outboundRules } from "./haproxy.ts";
import { goalsReport, markdownReport } from "./report.ts";

const dir = mkdtempSync(join(tmpdir(), "nodemesh-bench-test-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const backend = { name: "b", ip: "10.244.2.11" } as Pod;
const routes = [
  { vip: "10.96.0.31", vipPort: 80, listenPort: 15001, backend, backendPort: 8080 },
  { vip: "10.96.0.31", vipPort: 5201, listenPort: 15003, backend, backendPort: 5201, mode: "tcp" as const },
];
const inbound = [
  { appPort: 8080, listenPort: 15006 },
  { appPort: 5201, listenPort: 15007, mode: "tcp" as const },
];

describe("HAProxy in the interception position", () => {
  for (const mode of ["tcp", "http"] as const) {
    it(`writes ${mode} configurations haproxy accepts`, () => {
      for (const [name, cfg] of [
        ["out", outboundConfig(mode, routes)],
        ["in", inboundConfig(mode, inbound)],
      ] as const) {
        const file = join(dir, `${mode}-${name}.cfg`);
        writeFileSync(file, cfg);
        // Throws (with haproxy's complaint) if the configuration is refused.
        execFileSync("haproxy", ["-c", "-q", "-f", file], { stdio: "pipe" });
        expect(cfg).toContain(`mode ${mode}`);
      }
      expect(outboundConfig(mode, routes)).toContain("server s 10.244.2.11:8080");
      expect(inboundConfig(mode, inbound)).toContain("server s 127.0.0.1:8080");
    });
  }

  it("keeps bulk streams in mode tcp whatever the mode of the run", () => {
    const cfg = outboundConfig("http", routes);
    const bulk = cfg.slice(cfg.indexOf("listen out-15003"));
    expect(bulk).toMatch(/^ {2}mode tcp$/m);
  });

  it("redirects the VIP's ports outbound and the app's ports inbound, as iptables-restore accepts", () => {
    const out = outboundRules(routes);
    const into = inboundRules(inbound);
    expect(out).toContain("-A OUTPUT -p tcp -d 10.96.0.31/32 --dport 80 -j REDIRECT --to-ports 15001");
    expect(into).toContain("-A PREROUTING -p tcp --dport 8080 -j REDIRECT --to-ports 15006");
    for (const rules of [out, into]) execFileSync("iptables-restore", ["--test"], { input: rules, stdio: "pipe" });
  });
});

describe("percentile", () => {
  it("is the value below which the share lies", () => {
    const values = Array.from({ length: 1000 }, (_, i) => i + 1);
    expect(percentile(values, 50)).toBe(501);
    expect(percentile(values, 99)).toBe(991);
    expect(percentile(values, 99.9)).toBe(1000);
    expect(percentile([7], 99)).toBe(7);
  });
});

describe("goals", () => {
  const latency = (p50: number, p90 = p50, p99 = p50, p999 = p50) => ({ p50, p90, p99, p999, ok: 1, total: 1 });
  const path = (system: PathResult["system"], protocol: PathResult["protocol"], more: Partial<PathResult>) =>
    ({ location: "cross-node", system, protocol, latency: latency(1), saturationRps: 1000, ...more }) as PathResult;
  const results = (haproxyTcpAdded: number): BenchResults => ({
    date: "2026-11-30T00:00:00.000Z",
    machine: { cpus: 2, model: "test", kernel: "6", node: "v24" },
    options: { rate: 1000, connections: 16, durationS: 10, saturationS: 5, bulkS: 5, agentArgs: "" },
    paths: [
      path("direct", "HTTP/1.1", { saturationRps: 40_000 }),
      path("nodemesh", "opaque TCP", { added: latency(0.09, 0.1, 0.25), cpuPer1000: 0.1 }),
      path("nodemesh", "HTTP/1.1", {
        latency: latency(2, 3, 4, 13),
        added: latency(1, 1.2, 1.9),
        saturationRps: 9000,
        cpuPer1000: 0.4,
      }),
      path("nodemesh plaintext", "HTTP/1.1", { added: latency(0.9), saturationRps: 10_000, cpuPer1000: 0.32 }),
      path("nodemesh plaintext", "opaque TCP", { added: latency(0.08), cpuPer1000: 0.1 }),
      path("HAProxy", "tcp", { added: latency(haproxyTcpAdded) }),
      path("HAProxy", "http", { saturationRps: 20_000 }),
      path("direct", "gRPC", { saturationRps: 30_000 }),
      path("nodemesh", "gRPC", { added: latency(1, 2, 5), saturationRps: 16_000 }),
    ],
    bulk: [
      { location: "cross-node", system: "direct", gbitPerS: 10 },
      { location: "cross-node", system: "nodemesh", gbitPerS: 5 },
      { location: "cross-node", system: "nodemesh plaintext", gbitPerS: 6 },
    ],
    newConnections: [
      { location: "cross-node", system: "nodemesh", perS: 900, connections: 3000, handshakes: 1 },
      { location: "cross-node", system: "nodemesh plaintext", perS: 1000, connections: 3000, handshakes: 0 },
    ],
    agentRss: { idleMB: 50, loadedMB: 80, afterLoadMB: 60, pods: 1000, withPodsMB: 53 },
  });
  const byGoal = (r: BenchResults) => new Map(goalsReport(r).map((g) => [g.goal, g]));

  it("checks each figure against its target, in the right direction", () => {
    const goals = byGoal(results(0.05));
    const met = (goal: string) => goals.get(goal)?.met;
    expect(met("opaque TCP added p50")).toBe(true); // 0.09 ≤ 0.10
    expect(met("opaque TCP added p99")).toBe(true); // 0.25 ≤ 0.30
    expect(met("opaque TCP added p50 / HAProxy tcp added p50")).toBe(false); // 1.8× > 1.5×
    expect(met("bulk TCP / direct")).toBe(true); // 0.5 ≥ 0.5
    expect(met("HTTP/1.1 added p50")).toBe(true); // 1.0 ≤ 1.0
    expect(met("HTTP/1.1 added p99")).toBe(true); // 1.9 ≤ 2.5
    expect(met("HTTP/1.1 p99.9 / p99")).toBe(false); // 13 / 4 > 3
    expect(met("HTTP/1.1 saturation / HAProxy http")).toBe(false); // 0.45 < 0.6
    expect(met("CPU per 1000 requests, opaque TCP")).toBe(true);
    expect(met("CPU per 1000 requests, HTTP/1.1")).toBe(false); // 0.4 > 0.25
    expect(met("gRPC added p99")).toBe(false); // 5 > 4
    expect(met("gRPC saturation / direct gRPC")).toBe(true); // 0.53 ≥ 0.5
    expect(met("agent RSS idle")).toBe(true); // 50 ≤ 90
    expect(met("agent RSS peak under load")).toBe(true); // 80 ≤ 200
    expect(goals.get("agent RSS per enrolled pod")).toMatchObject({ met: true }); // 3 kB ≤ 10
    expect(goals.get("agent RSS per enrolled pod")?.measured).toBeCloseTo(3, 6); // 3 MB over 1000 pods
    expect(goals.get("mTLS CPU per request / plaintext, HTTP/1.1")).toMatchObject({ measured: 1.25, met: false });
    expect(met("mTLS CPU per request / plaintext, opaque TCP")).toBe(true); // 1.0 ≤ 1.2
    expect(goals.get("mTLS handshakes per new connection")).toMatchObject({ measured: 1 / 3000, met: true });
  });

  it("reports mTLS beside plaintext with ratios", () => {
    const md = markdownReport(results(0.05));
    expect(md).toContain(
      "| cross-node | HTTP/1.1 | 1.000 | 0.900 | 1.900 | 0.900 | 9000 | 10000 | 0.90 | 0.400 | 0.320 | 1.25 |",
    );
    expect(md).toContain("| cross-node | bulk TCP, Gbit/s | | | | | 5.00 | 6.00 | 0.83 | | | |");
    expect(md).toContain("| cross-node | nodemesh | 900 | 3000 | 1 | 0.000 |");
    expect(md).toContain(
      "Agent RSS: idle 50.0 MB, under load 80.0 MB (peak), 60.0 MB settled after the load, 53.0 MB idle with 1000 pods enrolled (3.00 kB per pod).",
    );
  });

  it("compares with HAProxy only when HAProxy measurably adds latency", () => {
    for (const noise of [0, 0.01, -0.2]) {
      expect(byGoal(results(noise)).has("opaque TCP added p50 / HAProxy tcp added p50")).toBe(false);
    }
  });

  it("renders every path and goal in the markdown", () => {
    const md = markdownReport(results(0.05));
    expect(md).toContain("| cross-node | nodemesh opaque TCP | 1.000 |");
    expect(md).toContain("| gRPC added p99 | cross-node | 5.000 ms | ≤ 4 ms | **no** |");
    expect(md).toContain("3.00 kB per pod");
  });
});
