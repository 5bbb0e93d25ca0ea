// Single-stream bulk TCP throughput with iperf3 (Debian's): one connection sending as fast as it
// can for `durationS`, measured at the receiver.

import type { Pod, World } from "../world/world.ts";

export const IPERF_PORT = 5201;

export async function bulkGbitPerS(world: World, from: Pod, ip: string, port: number, durationS: number) {
  const args = ["-c", ip, "-p", String(port), "-t", String(durationS), "-O", "1", "-J", "--connect-timeout", "3000"];
  const r = await world.exec(from, "iperf3", args, { timeoutMs: (durationS + 20) * 1000 });
  let report: { error?: string; end?: { sum_received?: { bits_per_second: number } } };
  try {
    report = JSON.parse(r.stdout);
  } catch {
    throw new Error(`iperf3 to ${ip}:${port} failed (${r.code}): ${r.stderr}${r.stdout}`);
  }
  const bps = report.end?.sum_received?.bits_per_second;
  if (r.code !== 0 || report.error || bps === undefined) {
    throw new Error(`iperf3 to ${ip}:${port} failed: ${report.error ?? r.stderr}`);
  }
  return bps / 1e9;
}
