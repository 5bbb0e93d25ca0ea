// h2load at a fixed request rate, open loop, with percentiles from its per-request log (h2load
// itself prints only mean and sd). Shared by the benchmarks.

import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Pod, World } from "../world/world.ts";

/** EchoRequest{message: "x", count: 1} in a gRPC length-prefixed frame. */
const GRPC_BODY = Buffer.from([0, 0, 0, 0, 5, 0x0a, 0x01, 0x78, 0x10, 0x01]);

export interface Latency {
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  ok: number;
  total: number;
}

export interface RateOptions {
  rate: number;
  connections: number;
  durationS: number;
  grpc: boolean;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

export async function h2loadAtRate(world: World, from: Pod, url: string, o: RateOptions): Promise<Latency> {
  const log = join(tmpdir(), `h2load-${process.pid}-${Date.now()}.log`);
  const body = join(tmpdir(), `grpc-body-${process.pid}`);
  writeFileSync(body, GRPC_BODY);
  const perClient = Math.max(1, Math.round(o.rate / o.connections));
  const args = [
    ...(o.grpc ? ["-d", body, "-H", "content-type: application/grpc", "-H", "te: trailers"] : ["--h1"]),
    "-c",
    String(o.connections),
    "--rps",
    String(perClient),
    "-D",
    String(o.durationS),
    "--warm-up-time",
    "1",
    "--log-file",
    log,
    url,
  ];
  const r = await world.exec(from, "h2load", args, { timeoutMs: (o.durationS + 30) * 1000 });
  if (r.code !== 0) throw new Error(`h2load failed: ${r.stderr}${r.stdout}`);
  // Log lines: start time (µs), status, duration (µs).
  const rows = readFileSync(log, "utf8")
    .trim()
    .split("\n")
    .map((l) => l.split("\t").map(Number));
  rmSync(log, { force: true });
  const ms = rows.map((row) => row[2]! / 1000).sort((a, b) => a - b);
  return {
    p50: percentile(ms, 50),
    p90: percentile(ms, 90),
    p99: percentile(ms, 99),
    p999: percentile(ms, 99.9),
    ok: rows.filter((row) => row[1] === 200).length,
    total: rows.length,
  };
}
