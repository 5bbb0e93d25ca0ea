// HAProxy (Debian's) as the peer proxy in nodemesh's interception position: the client pod's
// outbound connections to a VIP are REDIRECTed (iptables, like nodemesh's init container) to an
// HAProxy inside that pod, which forwards to the backend pod; there, inbound connections are
// REDIRECTed to a second HAProxy that delivers to the app on loopback. Two hops, as with nodemesh.
// Backends are fixed per VIP (HAProxy has no service registry); everything else is HAProxy's defaults.

import { rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Pod, Proc, World } from "../world/world.ts";

export type HaproxyMode = "tcp" | "http";

/** An outbound VIP port that the client-side HAProxy forwards to a backend pod's port. */
export interface HaproxyRoute {
  vip: string;
  vipPort: number;
  listenPort: number;
  backend: Pod;
  backendPort: number;
  /** Bulk byte streams stay in mode tcp whatever the mode of the run. */
  mode?: HaproxyMode;
}

/** An inbound app port on a backend pod, delivered by its HAProxy to 127.0.0.1. */
export interface HaproxyInbound {
  appPort: number;
  listenPort: number;
  mode?: HaproxyMode;
}

function config(mode: HaproxyMode, sections: string[]): string {
  return `global
  maxconn 4096
defaults
  mode ${mode}
  timeout connect 5s
  timeout client 120s
  timeout server 120s
${sections.join("")}`;
}

function listen(name: string, listenPort: number, target: string, mode: HaproxyMode | undefined): string {
  return `listen ${name}
  bind :${listenPort}
${mode ? `  mode ${mode}\n` : ""}  server s ${target}
`;
}

export function outboundConfig(mode: HaproxyMode, routes: readonly HaproxyRoute[]): string {
  return config(
    mode,
    routes.map((r) => listen(`out-${r.listenPort}`, r.listenPort, `${r.backend.ip}:${r.backendPort}`, r.mode)),
  );
}

export function inboundConfig(mode: HaproxyMode, inbound: readonly HaproxyInbound[]): string {
  return config(
    mode,
    inbound.map((i) => listen(`in-${i.listenPort}`, i.listenPort, `127.0.0.1:${i.appPort}`, i.mode)),
  );
}

export function outboundRules(routes: readonly HaproxyRoute[]): string {
  const rules = routes.map(
    (r) => `-A OUTPUT -p tcp -d ${r.vip}/32 --dport ${r.vipPort} -j REDIRECT --to-ports ${r.listenPort}`,
  );
  return `*nat\n${rules.join("\n")}\nCOMMIT\n`;
}

export function inboundRules(inbound: readonly HaproxyInbound[]): string {
  const rules = inbound.map((i) => `-A PREROUTING -p tcp --dport ${i.appPort} -j REDIRECT --to-ports ${i.listenPort}`);
  return `*nat\n${rules.join("\n")}\nCOMMIT\n`;
}

/** Installs `rules` (iptables-restore input) in the pod; they go with the pod's namespace. */
export async function installRules(world: World, pod: Pod, rules: string): Promise<void> {
  const r = await world.exec(pod, "iptables-restore", [], { input: rules, timeoutMs: 10_000 });
  if (r.code !== 0) throw new Error(`iptables-restore in ${pod.name} failed: ${r.stderr}`);
}

/** Starts HAProxy in the pod (foreground, config on stdin) and waits until every port listens. */
export async function startHaproxy(world: World, pod: Pod, cfg: string, ports: readonly number[]): Promise<Proc> {
  const path = join(tmpdir(), `nodemesh-bench-haproxy-${pod.netns}.cfg`);
  writeFileSync(path, cfg);
  try {
    return await start(world, pod, path, cfg, ports);
  } finally {
    rmSync(path, { force: true }); // read once at start
  }
}

async function start(world: World, pod: Pod, path: string, cfg: string, ports: readonly number[]): Promise<Proc> {
  const check = await world.exec(pod, "haproxy", ["-c", "-q", "-f", path], { timeoutMs: 10_000 });
  if (check.code !== 0) throw new Error(`haproxy config refused: ${check.stderr}${check.stdout}\n${cfg}`);
  const proc = world.spawn(pod, "haproxy", ["-db", "-f", path], { name: `haproxy ${pod.name}` });
  for (let i = 0; i < 100; i++) {
    const ss = await world.exec(pod, "ss", ["-Hltn"], { timeoutMs: 5_000 });
    if (ports.every((p) => ss.stdout.includes(`:${p} `))) return proc;
    if (proc.exit) throw new Error(`haproxy in ${pod.name} exited: ${proc.lines.join("\n")}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  await proc.stop("SIGKILL");
  throw new Error(`haproxy in ${pod.name} did not listen on ${ports.join(", ")} within 5 s`);
}
