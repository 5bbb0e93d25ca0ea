// CPU time and resident memory of processes, read from /proc (both cover every thread: the
// agent's worker threads and HAProxy's threads count). Shared by the benchmarks.

import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";

const CLOCK_TICKS_PER_S = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim());

/** User + system CPU seconds used so far by the processes, summed. */
export function cpuSeconds(pids: readonly number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    // Fields after the command name, which is in parentheses and may hold spaces.
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    ticks += Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14 and 15 of stat(5))
  }
  return ticks / CLOCK_TICKS_PER_S;
}

/** Resident set size in MB (10^6 bytes, as the goals are stated): now (VmRSS) or its peak (VmHWM). */
export function rssMB(pid: number, field: "VmRSS" | "VmHWM" = "VmRSS"): number {
  let status: string;
  try {
    status = readFileSync(`/proc/${pid}/status`, "utf8");
  } catch {
    throw new Error(`process ${pid} has exited`);
  }
  const m = new RegExp(`^${field}:\\s+(\\d+) kB$`, "m").exec(status);
  if (!m) throw new Error(`no ${field} for pid ${pid}`);
  return (Number(m[1]) * 1024) / 1e6;
}

/**
 * A process's RSS once it has settled: the lowest of 20 samples over 10 s. The agent and the
 * controller give back what a burst (start-up, enrollments, a fleet connecting) grew of their
 * heap a few seconds after it (api/idle-heap.ts), and their RSS then stays put.
 */
export async function settledRssMB(pid: number): Promise<number> {
  let lowest = Number.POSITIVE_INFINITY;
  for (let i = 0; i < 20; i++) {
    await new Promise((r) => setTimeout(r, 500));
    lowest = Math.min(lowest, rssMB(pid));
  }
  return lowest;
}

/** The highest RSS of each process seen while `work` runs, sampled every `intervalMs`. */
export async function peakRssMB<T>(
  pids: readonly number[],
  work: () => Promise<T>,
  intervalMs = 100,
): Promise<{ result: T; peaks: number[] }> {
  const peaks = pids.map((pid) => rssMB(pid));
  let failure: Error | undefined; // a process that exited mid-run fails the run, after it
  const timer = setInterval(() => {
    try {
      pids.forEach((pid, i) => {
        peaks[i] = Math.max(peaks[i]!, rssMB(pid));
      });
    } catch (err) {
      failure ??= err as Error;
    }
  }, intervalMs);
  try {
    const result = await work();
    if (failure) throw failure;
    return { result, peaks };
  } finally {
    clearInterval(timer);
  }
}

/**
 * CPU seconds the processes used between `fromMs` and `toMs` after the call, while `work` runs:
 * the steady part of a load run, without its warm-up and tail.
 */
export async function cpuInWindow<T>(
  pids: readonly number[],
  fromMs: number,
  toMs: number,
  work: () => Promise<T>,
): Promise<{ result: T; cpuS: number; windowS: number }> {
  let first: [number, number] | undefined;
  let last: [number, number] | undefined;
  const sample = (): [number, number] => [performance.now(), cpuSeconds(pids)];
  const t1 = setTimeout(() => {
    first = sample();
  }, fromMs);
  const t2 = setTimeout(() => {
    last = sample();
  }, toMs);
  try {
    const result = await work();
    if (!first || !last) throw new Error("the load ended before its CPU window closed");
    return { result, cpuS: last[1] - first[1], windowS: (last[0] - first[0]) / 1000 };
  } finally {
    clearTimeout(t1);
    clearTimeout(t2);
  }
}
