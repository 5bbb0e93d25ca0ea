// The control plane at scale: one controller process (the real CLI, loopback only, a file store
// pre-filled with Services), a fleet of simulated agents (real grpc-js clients, one HTTP/2
// connection each, spread over a few child processes) that each enroll pods matching the Services'
// selectors. Measures the time to full sync, the propagation of policy writes to every agent, and
// the controller's memory and CPU.
//
//   node test/bench/control-plane.ts [--agents 1000] [--services 10000] [--endpoints 50000]
//        [--processes 4] [--writes 20] [--steady-s 20] [--quick] [--plain-configs] [--json FILE]
//        [--cpu-prof DIR]
//
// --quick is 200 agents × 2000 services × 10000 endpoints. --cpu-prof DIR runs the controller with
// node's --cpu-prof and writes its profile there. --plain-configs: the agents list no config
// encoding in their Hello, so every Config comes plain (as before compressed Configs, issue 16).
// --steady-s: after the rest, every agent reports as a real one does (no pods, which the controller
// keeps from PodsChanged; its probes of the other nodes: all of them first, then the 64 of a round;
// a few edges; every 5 s) for this long, and the controller's CPU and memory under those reports
// are measured (0: skipped). Last, the agents list is read once with every probe,
// once with summaries only (?peers=summary), and as the dashboard and `nodemesh nodes` read it
// (?peers=matrix&pods=count: summaries at this size, and pod counts).
// Clocks: every process reads performance.timeOrigin + performance.now(), all on this machine.

import { type ChildProcess, fork, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { MAX_PEERS_PER_ROUND } from "../../agent/control/probes.ts";
import type { WirePod } from "../../api/agent-service.ts";
import { CONTROLLER_PROCESS } from "../../api/process-settings.ts";
import {
  FleetAgent,
  type SteadyReports,
  TableCache,
  type TableSummary,
} from "../../controller/config/testing/fleet-agent.ts";
import { BUILT_CLI } from "../e2e/mesh.ts";
import { percentile } from "./h2load.ts";
import { cpuSeconds, rssMB, settledRssMB } from "./proc-stats.ts";
import { summarizeProfiles } from "./profile-summary.ts";

// The controller as built (npm run build), as in production: no type stripping at run time.
const CLI = BUILT_CLI;
const NAMESPACE = "default";
// The controller publishes no table during its start-up grace (2 s; see config-publisher.ts).
const CONTROLLER_STARTUP_GRACE_MS = 2000;
const READY_TIMEOUT_MS = 30_000;
const SYNC_TIMEOUT_MS = 120_000;
const WRITE_TIMEOUT_MS = 15_000;
// The agent's --report-interval-s default (agent/cli.ts).
const REPORT_INTERVAL_MS = 5000;
const EDGES_PER_REPORT = 5;
// Issue 16: every one of 1000 agents fully synced within 5 s.
const GOALS = { propagationP99Ms: 1000, fullSyncMs: 5000 };

const { values: args } = parseArgs({
  options: {
    agents: { type: "string" },
    services: { type: "string" },
    endpoints: { type: "string" },
    processes: { type: "string", default: "4" },
    writes: { type: "string", default: "20" },
    "steady-s": { type: "string", default: "20" },
    quick: { type: "boolean", default: false },
    "plain-configs": { type: "boolean", default: false },
    json: { type: "string", default: "test-results/bench-control-plane.json" },
    "cpu-prof": { type: "string" },
    fleet: { type: "boolean", default: false }, // internal: this process is one of the fleet's
  },
});

function wallClockMs(): number {
  return performance.timeOrigin + performance.now();
}

function count(name: "agents" | "services" | "endpoints", full: number, quick: number): number {
  const n = Number(args[name] ?? (args.quick ? quick : full));
  if (!Number.isInteger(n) || n <= 0) throw new Error(`--${name} must be a positive integer`);
  return n;
}

/** a.b.c.d from a base address and an offset below 2^16. */
function address(prefix: string, i: number): string {
  return `${prefix}.${i >> 8}.${i & 255}`;
}

function serviceName(i: number): string {
  return `svc-${i}`;
}

// ---- the fleet: child processes of simulated agents ----

type ToFleet =
  | {
      type: "start";
      port: number;
      firstAgent: number;
      agents: number;
      podsPerAgent: number;
      services: number;
      endpoints: number;
      plainConfigs: boolean;
    }
  | { type: "received"; storeVersion: number }
  /** Replace the first agent by a new stream of the same node (own table cache): one agent's full sync. */
  | { type: "reconnect" }
  /** Every agent starts reporting steadily (`nodes`: the fleet's size, each probed by every agent)… */
  | { type: "report"; nodes: number }
  /** …until this. */
  | { type: "quiet" }
  | { type: "stop" };

type FromFleet =
  | { type: "ready" }
  | { type: "synced"; times: number[]; configs: number; bytes: number; nacks: number }
  | { type: "received"; storeVersion: number; times: Array<number | null> }
  | { type: "reconnected"; ms: number }
  | { type: "quiet"; reports: number }
  | { type: "failed"; error: string };

/** Pod p (global index) selects service p mod services: each service gets endpoints / services pods. */
function podsOf(agent: number, podsPerAgent: number, services: number): WirePod[] {
  return Array.from({ length: podsPerAgent }, (_, j) => {
    const p = agent * podsPerAgent + j;
    return {
      name: `pod-${p}`,
      namespace: NAMESPACE,
      ip: address(`10.${128 + (p >> 16)}`, p & 0xffff),
      labels: { app: serviceName(p % services) },
    };
  });
}

function runFleet(): void {
  const send = (msg: FromFleet) => process.send!(msg);
  const agents: FleetAgent[] = [];
  let started: Extract<ToFleet, { type: "start" }> | undefined;
  const agentOf = (i: number, cache: TableCache, onApplied: (agent: FleetAgent, atMs: number) => void) =>
    new FleetAgent({
      port: started!.port,
      node: `node-${i}`,
      underlayIp: address("10.250", i),
      pods: podsOf(i, started!.podsPerAgent, started!.services),
      cache,
      onApplied,
      plainConfigs: started!.plainConfigs,
    });
  const complete = (t: TableSummary) =>
    t.endpointsByService.size === started!.services && t.endpoints === started!.endpoints;
  // The parent going away ends the fleet, whatever happened to it.
  process.on("disconnect", () => {
    for (const a of agents) a.close();
    process.exit(0);
  });
  process.on("message", (msg: ToFleet) => {
    if (msg.type === "start") {
      started = msg;
      const cache = new TableCache();
      const syncedAt = new Map<FleetAgent, number>();
      const onApplied = (agent: FleetAgent, atMs: number) => {
        if (syncedAt.has(agent) || !complete(agent.table!)) return;
        syncedAt.set(agent, atMs);
        if (syncedAt.size < agents.length) return;
        const sum = (f: (a: FleetAgent) => number) => agents.reduce((n, a) => n + f(a), 0);
        send({
          type: "synced",
          times: [...syncedAt.values()],
          configs: sum((a) => a.received.length),
          bytes: sum((a) => a.bytesReceived),
          nacks: sum((a) => a.nacks),
        });
      };
      for (let i = msg.firstAgent; i < msg.firstAgent + msg.agents; i++) agents.push(agentOf(i, cache, onApplied));
    } else if (msg.type === "reconnect") {
      agents[0]!.close();
      const connectedAt = wallClockMs();
      let done = false;
      agents[0] = agentOf(started!.firstAgent, new TableCache(), (agent, atMs) => {
        if (done || !complete(agent.table!)) return;
        done = true;
        send({ type: "reconnected", ms: atMs - connectedAt });
      });
    } else if (msg.type === "report") {
      // Probes of every node, as each agent's would be (RTTs differ between rounds; that is not modelled).
      const peers = Array.from({ length: msg.nodes }, (_, i) => ({
        nodeName: `node-${i}`,
        rttMs: 0.05 + (i % 50) / 100,
        lossRatio: 0,
        error: "",
      }));
      const steady: SteadyReports = { intervalMs: REPORT_INTERVAL_MS, peers, edges: EDGES_PER_REPORT };
      for (const a of agents) a.startReports(steady);
    } else if (msg.type === "quiet") {
      for (const a of agents) a.stopReports();
      send({ type: "quiet", reports: agents.reduce((n, a) => n + a.reportsSent, 0) });
    } else if (msg.type === "received") {
      const times = agents.map((a) => a.receivedAt(msg.storeVersion) ?? null);
      send({ type: "received", storeVersion: msg.storeVersion, times });
    } else {
      for (const a of agents) a.close();
      process.disconnect();
    }
  });
  send({ type: "ready" }); // loaded: the parent starts the clock only once every fleet process is
}

class FleetProcess {
  readonly child: ChildProcess;
  private readonly waiters = new Set<(msg: FromFleet) => void>();
  exited = false;

  constructor() {
    this.child = fork(fileURLToPath(import.meta.url), ["--fleet"], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
    this.child.on("message", (msg: FromFleet) => {
      for (const w of [...this.waiters]) w(msg);
    });
    this.child.on("exit", () => {
      this.exited = true;
      for (const w of [...this.waiters]) w({ type: "failed", error: "fleet process exited" });
    });
  }

  send(msg: ToFleet): void {
    this.child.send(msg);
  }

  /** The next message of `type`; rejects on a failure or after `timeoutMs`. */
  next<T extends FromFleet["type"]>(type: T, timeoutMs: number): Promise<Extract<FromFleet, { type: T }>> {
    return new Promise((resolve, reject) => {
      const done = (msg: FromFleet) => {
        if (msg.type !== type && msg.type !== "failed") return;
        this.waiters.delete(done);
        clearTimeout(timer);
        if (msg.type === "failed") reject(new Error(msg.error));
        else resolve(msg as Extract<FromFleet, { type: T }>);
      };
      const timer = setTimeout(() => {
        this.waiters.delete(done);
        reject(new Error(`fleet process: no "${type}" within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiters.add(done);
    });
  }
}

// ---- the controller process ----

/** The store files FileStore reads (controller/store/file-store.ts): one per Service, and meta.json. */
function writeStore(dir: string, services: number): void {
  const servicesDir = join(dir, "objects", "services", NAMESPACE);
  mkdirSync(servicesDir, { recursive: true });
  for (let i = 0; i < services; i++) {
    const name = serviceName(i);
    const object = {
      apiVersion: "nodemesh.io/v1alpha1",
      kind: "Service",
      metadata: {
        name,
        namespace: NAMESPACE,
        uid: `bench-${i}`,
        resourceVersion: String(i + 1),
        generation: 1,
        creationTimestamp: "2025-01-01T00:00:00Z",
      },
      spec: {
        vip: address("10.96", i),
        ports: [{ name: "http", port: 80, targetPort: 8080, protocol: "http" }],
        selector: { app: name },
      },
    };
    writeFileSync(join(servicesDir, `${name}.json`), JSON.stringify(object));
  }
  writeFileSync(join(dir, "meta.json"), JSON.stringify({ resourceVersion: String(services) }));
}

interface ControllerProcess {
  proc: ChildProcess;
  rest: string;
  grpcPort: number;
}

async function startController(storeDir: string, profileDir: string | undefined): Promise<ControllerProcess> {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run build (make bench does)`);
  const nodeFlags = [
    ...CONTROLLER_PROCESS.nodeFlags,
    ...(profileDir ? ["--cpu-prof", "--cpu-prof-dir", profileDir] : []),
  ];
  // setpriv's parent-death signal: the controller dies with this process, however it ends.
  const proc = spawn(
    "setpriv",
    [
      "--pdeathsig",
      "KILL",
      "--",
      process.execPath,
      ...nodeFlags,
      CLI,
      "controller",
      "--store-dir",
      storeDir,
      "--port",
      "0",
      "--grpc-address",
      "127.0.0.1",
      "--grpc-port",
      "0",
    ],
    { stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, ...CONTROLLER_PROCESS.env } },
  );
  return new Promise((resolve, reject) => {
    let buffered: string | undefined = "";
    const timer = setTimeout(() => reject(new Error("the controller did not get ready")), READY_TIMEOUT_MS);
    proc.on("exit", (code) => reject(new Error(`the controller exited (${code})`)));
    // Keep draining its log after "ready", or the controller blocks on a full pipe.
    proc.stdout!.on("data", (chunk: Buffer) => {
      if (buffered === undefined) return;
      buffered += chunk.toString();
      const ready = buffered.split("\n").find((line) => line.includes('"msg":"controller ready"'));
      buffered = buffered.slice(buffered.lastIndexOf("\n") + 1);
      if (!ready) return;
      buffered = undefined;
      clearTimeout(timer);
      const entry = JSON.parse(ready) as { rest: string; grpc: string };
      resolve({ proc, rest: entry.rest, grpcPort: Number(entry.grpc.split(":").at(-1)) });
    });
  });
}

async function rest(base: string, method: string, path: string, body?: unknown, type = "application/json") {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: body ? { "content-type": type } : {},
    body: body ? JSON.stringify(body) : undefined,
    signal: AbortSignal.timeout(WRITE_TIMEOUT_MS),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return text;
}

/** The controller's own write → last ACK histogram (count, sum in seconds). */
async function propagationHistogram(base: string): Promise<{ count: number; sum: number }> {
  const text = await rest(base, "GET", "/metrics");
  const pick = (suffix: string) =>
    Number(text.match(new RegExp(`^nodemesh_controller_config_propagation_seconds_${suffix} (\\S+)$`, "m"))?.[1] ?? 0);
  return { count: pick("count"), sum: pick("sum") };
}

const POLICIES = "/apis/nodemesh.io/v1alpha1/namespaces/default/trafficpolicies";

/** Write w: even ones create a TrafficPolicy, odd ones change the one just created. Returns its store version. */
async function policyWrite(base: string, w: number, services: number): Promise<number> {
  const name = `bench-${w >> 1}`;
  const text =
    w % 2 === 0
      ? await rest(base, "POST", POLICIES, {
          apiVersion: "nodemesh.io/v1alpha1",
          kind: "TrafficPolicy",
          metadata: { name, namespace: NAMESPACE },
          spec: { targetRefs: [{ name: serviceName((w >> 1) % services) }], retries: { attempts: 2 } },
        })
      : await rest(
          base,
          "PATCH",
          `${POLICIES}/${name}`,
          { spec: { retries: { attempts: 3 } } },
          "application/merge-patch+json",
        );
  return Number((JSON.parse(text) as { metadata: { resourceVersion: string } }).metadata.resourceVersion);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function poll<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    const value = await probe();
    if (value !== undefined) return value;
    await sleep(20);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

/**
 * The fleet reporting as real agents do for `seconds`: the controller's CPU per second and its
 * RSS (sampled every 250 ms) under that steady load, the state a controller spends its life in.
 */
async function steadyReports(fleet: FleetProcess[], pid: number, nodes: number, seconds: number) {
  const fleetPids = fleet.map((f) => f.child.pid!);
  const rssBeforeMB = rssMB(pid);
  const cpuBefore = cpuSeconds([pid]);
  const fleetCpuBefore = cpuSeconds(fleetPids);
  const startedAt = performance.now();
  for (const f of fleet) f.send({ type: "report", nodes });
  const samples: number[] = [];
  const samplesWanted = Math.ceil((seconds * 1000) / 250);
  for (let i = 0; i < samplesWanted; i++) {
    await sleep(250);
    samples.push(rssMB(pid));
  }
  const quiet = fleet.map((f) => f.next("quiet", 10_000));
  for (const f of fleet) f.send({ type: "quiet" });
  const reports = (await Promise.all(quiet)).reduce((n, m) => n + m.reports, 0);
  const elapsedS = (performance.now() - startedAt) / 1000;
  return {
    reports,
    rssBeforeMB,
    cpuPerS: (cpuSeconds([pid]) - cpuBefore) / elapsedS,
    fleetCpuPerS: (cpuSeconds(fleetPids) - fleetCpuBefore) / elapsedS,
    rssMeanMB: samples.reduce((a, b) => a + b, 0) / samples.length,
    rssMaxMB: Math.max(...samples),
    rssLastMB: samples.at(-1)!,
  };
}

/** One read of the agents list: its size (MB), the time to the last byte and the controller's CPU for it. */
async function agentsListRead(base: string, pid: number, query: string) {
  const cpuBefore = cpuSeconds([pid]);
  const startedAt = performance.now();
  const body = await rest(base, "GET", `/apis/nodemesh.io/v1alpha1/agents?${query}`);
  return {
    MB: Buffer.byteLength(body) / 1e6,
    ms: performance.now() - startedAt,
    cpuS: cpuSeconds([pid]) - cpuBefore,
  };
}

async function main(): Promise<void> {
  const agents = count("agents", 1000, 200);
  const services = count("services", 10_000, 2000);
  const endpoints = count("endpoints", 50_000, 10_000);
  const processes = Math.min(agents, Number(args.processes));
  const writes = Number(args.writes);
  const steadyS = Number(args["steady-s"]);
  if (!(steadyS >= 0)) throw new Error("--steady-s must be 0 or more");
  if (endpoints % agents !== 0) throw new Error("--endpoints must be a multiple of --agents");
  const podsPerAgent = endpoints / agents;
  const profileDir = args["cpu-prof"] ? resolve(args["cpu-prof"]) : undefined;

  const dir = mkdtempSync(join(tmpdir(), "nodemesh-bench-cp-"));
  const fleet: FleetProcess[] = [];
  let controller: ControllerProcess | undefined;
  const cleanup = () => {
    for (const f of fleet) if (!f.exited) f.child.kill("SIGKILL");
    if (controller && controller.proc.exitCode === null) controller.proc.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  };
  for (const [signal, code] of [
    ["SIGINT", 130],
    ["SIGTERM", 143],
  ] as const) {
    process.once(signal, () => {
      cleanup();
      process.exit(code);
    });
  }
  process.once("exit", cleanup);
  try {
    writeStore(dir, services);
    controller = await startController(dir, profileDir);
    const pid = controller.proc.pid!;
    await sleep(CONTROLLER_STARTUP_GRACE_MS + 200);
    const cpuBefore = cpuSeconds([pid]);

    for (let i = 0; i < processes; i++) fleet.push(new FleetProcess());
    await Promise.all(fleet.map((f) => f.next("ready", READY_TIMEOUT_MS)));
    // Full sync: from starting the agents until each has ACKed a table with every service and endpoint.
    const started = wallClockMs();
    const synced = fleet.map((f) => f.next("synced", SYNC_TIMEOUT_MS));
    fleet.forEach((f, i) => {
      const first = Math.floor((i * agents) / processes);
      const n = Math.floor(((i + 1) * agents) / processes) - first;
      f.send({
        type: "start",
        port: controller!.grpcPort,
        firstAgent: first,
        agents: n,
        podsPerAgent,
        services,
        endpoints,
        plainConfigs: args["plain-configs"],
      });
    });
    const syncReplies = await Promise.all(synced);
    const syncTimes = syncReplies.flatMap((m) => m.times.map((t) => t - started)).sort((a, b) => a - b);
    const fullSyncMs = syncTimes.at(-1)!;
    const cpuSync = cpuSeconds([pid]) - cpuBefore;
    const fleetCpuSync = fleet.reduce((s, f) => s + cpuSeconds([f.child.pid!]), 0);
    const total = (f: (m: (typeof syncReplies)[number]) => number) => syncReplies.reduce((n, m) => n + f(m), 0);
    const syncTraffic = {
      configs: total((m) => m.configs),
      MB: total((m) => m.bytes) / 2 ** 20,
      nacks: total((m) => m.nacks),
    };
    const rssIdle = await settledRssMB(pid); // the last ACKs, and the heap given back after the burst

    // Policy writes, one at a time: write → receipt at every agent.
    const samples: number[] = [];
    const lastAgentMs: number[] = [];
    const histogramBefore = await propagationHistogram(controller.rest);
    const cpuWritesBefore = cpuSeconds([pid]);
    for (let w = 0; w < writes; w++) {
      const writtenAt = wallClockMs();
      const storeVersion = await policyWrite(controller.rest, w, services);
      const times = await poll(`write ${w} to reach every agent`, WRITE_TIMEOUT_MS, async () => {
        const replies = await Promise.all(
          fleet.map((f) => {
            const reply = f.next("received", 5000);
            f.send({ type: "received", storeVersion });
            return reply;
          }),
        );
        const all = replies.flatMap((r) => r.times);
        return all.every((t) => t !== null) ? (all as number[]) : undefined;
      });
      const latencies = times.map((t) => t - writtenAt);
      samples.push(...latencies);
      lastAgentMs.push(Math.max(...latencies));
      // The controller observes its histogram at the last ACK: wait for it, so writes do not overlap.
      await poll(`the controller to see write ${w} ACKed`, WRITE_TIMEOUT_MS, async () =>
        (await propagationHistogram(controller!.rest)).count > histogramBefore.count + w ? true : undefined,
      );
    }
    const cpuPerWrite = writes > 0 ? (cpuSeconds([pid]) - cpuWritesBefore) / writes : 0;
    const histogramAfter = await propagationHistogram(controller.rest);
    // One agent reconnecting to the synced controller: its full table alone.
    const reconnected = fleet[0]!.next("reconnected", SYNC_TIMEOUT_MS);
    fleet[0]!.send({ type: "reconnect" });
    const oneAgentSyncMs = (await reconnected).ms;
    const rssPeak = rssMB(pid, "VmHWM");
    const steady = steadyS > 0 ? await steadyReports(fleet, pid, agents, steadyS) : undefined;
    // The agents list: with every probe and pod, with summaries only, and as the dashboard reads it
    // every 2 s (a mesh of this size gets summaries for the matrix, and pod counts).
    const listAll = await agentsListRead(controller.rest, pid, "peers=all");
    const listSummary = await agentsListRead(controller.rest, pid, "peers=summary");
    const listDashboard = await agentsListRead(controller.rest, pid, "peers=matrix&pods=count");

    samples.sort((a, b) => a - b);
    const round = (n: number, digits = 1) => Number(n.toFixed(digits));
    const result = {
      agents,
      services,
      endpoints,
      processes,
      writes,
      fullSyncMs: round(fullSyncMs),
      fullSyncP50Ms: round(percentile(syncTimes, 50)),
      oneAgentSyncMs: round(oneAgentSyncMs),
      propagationP50Ms: writes > 0 ? round(percentile(samples, 50)) : null,
      propagationP99Ms: writes > 0 ? round(percentile(samples, 99)) : null,
      propagationMaxMs: writes > 0 ? round(samples.at(-1)!) : null,
      controllerHistogramMeanMs:
        writes > 0
          ? round(((histogramAfter.sum - histogramBefore.sum) / (histogramAfter.count - histogramBefore.count)) * 1000)
          : null,
      controllerRssIdleMB: round(rssIdle),
      controllerRssPeakMB: round(rssPeak),
      controllerCpuSyncS: round(cpuSync, 2),
      controllerCpuPerWriteS: round(cpuPerWrite, 3),
      fleetCpuSyncS: round(fleetCpuSync, 2),
      syncConfigs: syncTraffic.configs,
      syncMB: round(syncTraffic.MB),
      syncNacks: syncTraffic.nacks,
      steadySeconds: steadyS,
      steadyReports: steady?.reports ?? null,
      steadyControllerCpuPerS: steady ? round(steady.cpuPerS, 3) : null,
      steadyControllerRssBeforeMB: steady ? round(steady.rssBeforeMB) : null,
      steadyControllerRssMeanMB: steady ? round(steady.rssMeanMB) : null,
      steadyControllerRssMaxMB: steady ? round(steady.rssMaxMB) : null,
      steadyControllerRssLastMB: steady ? round(steady.rssLastMB) : null,
      steadyFleetCpuPerS: steady ? round(steady.fleetCpuPerS, 3) : null,
      agentsListMB: round(listAll.MB),
      agentsListMs: round(listAll.ms),
      agentsListCpuS: round(listAll.cpuS, 2),
      agentsSummaryListMB: round(listSummary.MB, 2),
      agentsSummaryListMs: round(listSummary.ms),
      agentsSummaryListCpuS: round(listSummary.cpuS, 2),
      agentsDashboardListMB: round(listDashboard.MB, 2),
      agentsDashboardListMs: round(listDashboard.ms),
      agentsDashboardListCpuS: round(listDashboard.cpuS, 2),
      goals: {
        propagationP99Ms: GOALS.propagationP99Ms,
        propagationMet: writes > 0 && percentile(samples, 99) <= GOALS.propagationP99Ms,
        fullSyncMs: GOALS.fullSyncMs,
        fullSyncMet: fullSyncMs <= GOALS.fullSyncMs,
      },
    };

    const rows: Array<[string, string]> = [
      ["agents × services × endpoints", `${agents} × ${services} × ${endpoints} (${processes} agent processes)`],
      [
        "full sync, last agent (median agent)",
        `${result.fullSyncMs} ms (${result.fullSyncP50Ms} ms), goal ≤ ${GOALS.fullSyncMs} ms: ${result.goals.fullSyncMet ? "met" : "missed"}`,
      ],
      ["one agent reconnecting: full table applied", `${result.oneAgentSyncMs} ms`],
      [
        `policy write → agent, p50 / p99 / max (${samples.length} samples)`,
        `${result.propagationP50Ms} / ${result.propagationP99Ms} / ${result.propagationMaxMs} ms, goal p99 ≤ ${GOALS.propagationP99Ms} ms: ${result.goals.propagationMet ? "met" : "missed"}`,
      ],
      ["controller histogram (store write → last ACK), mean", `${result.controllerHistogramMeanMs} ms`],
      ["controller RSS idle after sync / peak", `${result.controllerRssIdleMB} / ${result.controllerRssPeakMB} MB`],
      ["controller CPU: full sync / per write", `${result.controllerCpuSyncS} s / ${result.controllerCpuPerWriteS} s`],
      ["agent processes' CPU until full sync", `${result.fleetCpuSyncS} s`],
      [
        "Configs (MB) received until full sync, NACKs",
        `${result.syncConfigs} (${result.syncMB} MB), ${result.syncNacks}`,
      ],
      ...(steady
        ? ([
            [
              `steady reports (every ${REPORT_INTERVAL_MS / 1000} s, ${agents} peers then ${MAX_PEERS_PER_ROUND}, ${EDGES_PER_REPORT} edges, no pods), ${steadyS} s`,
              `${steady.reports} reports; controller CPU ${result.steadyControllerCpuPerS} s/s, RSS before / mean / max / last ${result.steadyControllerRssBeforeMB} / ${result.steadyControllerRssMeanMB} / ${result.steadyControllerRssMaxMB} / ${result.steadyControllerRssLastMB} MB; agent processes' CPU ${result.steadyFleetCpuPerS} s/s`,
            ],
          ] as Array<[string, string]>)
        : []),
      [
        "GET agents: every probe / ?peers=summary / ?peers=matrix&pods=count (size, time, controller CPU)",
        `${result.agentsListMB} MB, ${result.agentsListMs} ms, ${result.agentsListCpuS} s / ${result.agentsSummaryListMB} MB, ${result.agentsSummaryListMs} ms, ${result.agentsSummaryListCpuS} s / ${result.agentsDashboardListMB} MB, ${result.agentsDashboardListMs} ms, ${result.agentsDashboardListCpuS} s`,
      ],
    ];
    console.log("\n| control plane | |\n|---|---|");
    for (const [k, v] of rows) console.log(`| ${k} | ${v} |`);
    mkdirSync(dirname(resolve(args.json)), { recursive: true });
    writeFileSync(args.json, `${JSON.stringify(result, null, 2)}\n`);
    console.log(`\nwritten to ${args.json}`);

    for (const f of fleet) f.send({ type: "stop" });
    // SIGTERM lets the controller stop cleanly (and write its CPU profile).
    const exited = new Promise((r) => controller!.proc.once("exit", r));
    controller.proc.kill("SIGTERM");
    await Promise.race([exited, sleep(10_000)]);
    if (profileDir) {
      const files = readdirSync(profileDir).filter((f) => f.endsWith(".cpuprofile"));
      console.log(
        `\ncontroller profile (${profileDir}):\n${summarizeProfiles(
          files.map((f) => join(profileDir, f)),
          15,
        ).join("\n")}`,
      );
    }
  } finally {
    cleanup();
  }
}

if (args.fleet) runFleet();
else
  main().catch((err: Error) => {
    console.error(`control-plane bench: ${err.stack ?? err.message}`);
    process.exitCode = 1;
  });
