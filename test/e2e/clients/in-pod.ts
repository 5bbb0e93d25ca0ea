// Runs a load client (http-load.ts, grpc-call.ts) inside a pod, through the pod's interception
// rules, and returns the JSON report it prints as its last line.

import type { Place, World } from "../../world/world.ts";
import type { GrpcArgs, GrpcReport } from "./grpc-call.ts";
import type { LoadArgs, LoadReport } from "./http-load.ts";

const HTTP_LOAD = new URL("./http-load.ts", import.meta.url).pathname;
const GRPC_CALL = new URL("./grpc-call.ts", import.meta.url).pathname;

async function runInPod<T>(world: World, place: Place, script: string, args: unknown, timeoutMs: number): Promise<T> {
  const r = await world.exec(place, process.execPath, [script, JSON.stringify(args)], { timeoutMs });
  const name = script.split("/").at(-1)!.replace(/\.ts$/, "");
  if (r.code !== 0) throw new Error(`${name} failed (${r.code}): ${r.stderr}${r.stdout}`);
  return JSON.parse(r.stdout.trim().split("\n").at(-1)!) as T;
}

export function httpLoadIn(world: World, place: Place, args: LoadArgs, timeoutMs = 90_000): Promise<LoadReport> {
  return runInPod(world, place, HTTP_LOAD, args, timeoutMs);
}

export function grpcCallIn(world: World, place: Place, args: GrpcArgs, timeoutMs = 60_000): Promise<GrpcReport> {
  return runInPod(world, place, GRPC_CALL, args, timeoutMs);
}
