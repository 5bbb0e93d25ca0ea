// h2load, the one load client of the benchmarks: at a fixed request rate (paced per connection), with
// percentiles from its per-request log (h2load itself prints only mean and sd), or closed loop
// for saturation throughput.

import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
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

/** Seconds each run spends connecting and warming up before it measures. */
export const WARM_UP_S = 1;

/** The value below which p % of `sorted` (ascending) lie. */
export function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/** The request options shared by both modes: HTTP/1.1, or gRPC unary over HTTP/2. */
function requestArgs(grpc: boolean): string[] {
  const body = join(tmpdir(), `grpc-body-${process.pid}`);
  if (grpc && !existsSync(body)) {
    writeFileSync(body, GRPC_BODY);
    process.once("exit", () => rmSync(body, { force: true }));
  }
  return grpc ? ["-d", body, "-H", "content-type: application/grpc", "-H", "te: trailers"] : ["--h1"];
}

async function run(world: World, from: Pod, args: string[], durationS: number): Promise<string> {
  const r = await world.exec(from, "h2load", args, { timeoutMs: (durationS + 30) * 1000 });
  if (r.code !== 0) throw new Error(`h2load failed: ${r.stderr}${r.stdout}`);
  return r.stdout;
}

/**
 * Latency percentiles at a fixed total rate. Each connection sends on its own schedule, whatever
 * the others' answers do; but one request at a time, so an answer slower than the connection's
 * interval (16 ms at 1000 req/s over 16 connections) delays the next request on it, and that wait
 * is not counted: coordinated omission only hides stalls longer than the interval.
 */
export async function h2loadAtRate(world: World, from: Pod, url: string, o: RateOptions): Promise<Latency> {
  const log = join(tmpdir(), `h2load-${process.pid}-${Date.now()}.log`);
  // h2load's rate is per connection and fractional rates are allowed.
  const perClient = o.rate / o.connections;
  const args = [
    ...requestArgs(o.grpc),
    "-c",
    String(o.connections),
    "--rps",
    String(perClient),
    "-D",
    String(o.durationS),
    "--warm-up-time",
    String(WARM_UP_S),
    "--log-file",
    log,
    url,
  ];
  let rows: number[][];
  try {
    await run(world, from, args, o.durationS);
    // Log lines: start time (µs), status, duration (µs).
    rows = readFileSync(log, "utf8")
      .trim()
      .split("\n")
      .map((l) => l.split("\t").map(Number));
  } finally {
    rmSync(log, { force: true });
  }
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

/** Requests per second with every connection sending back to back (closed loop): saturation. */
export async function h2loadSaturation(
  world: World,
  from: Pod,
  url: string,
  o: Omit<RateOptions, "rate">,
): Promise<{ rps: number; failed: number }> {
  // Two client threads, one per core of the test machine: one thread alone saturates before the direct path.
  const args = [
    ...requestArgs(o.grpc),
    "-t",
    "2",
    "-c",
    String(o.connections),
    "-D",
    String(o.durationS),
    "--warm-up-time",
    String(WARM_UP_S),
    url,
  ];
  const { rps, failed } = h2loadSummary(await run(world, from, args, o.durationS));
  return { rps, failed };
}

/** h2load's closing summary: requests per second, and how many succeeded and failed. */
export function h2loadSummary(out: string): { rps: number; succeeded: number; failed: number } {
  const rps = /finished in [\d.]+\w+, ([\d.]+) req\/s/.exec(out);
  const counts = /requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed/.exec(out);
  if (!rps || !counts) throw new Error(`cannot read h2load's summary:\n${out}`);
  return { rps: Number(rps[1]), succeeded: Number(counts[1]), failed: Number(counts[2]) };
}
