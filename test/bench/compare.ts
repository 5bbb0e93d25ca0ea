// The side-by-side benchmark: the same client (h2load, iperf3) against the same backend (the sample
// workload) in one run, directly, through nodemesh, and through HAProxy in the same interception
// position (haproxy.ts), same-node and cross-node. Every proxied path has two hops: the client's
// side and the backend's side.
//
//   direct              client pod → backend pod
//   nodemesh opaque TCP a Service port declared `tcp`: bytes forwarded, no HTTP parsing
//   nodemesh HTTP/1.1   a Service port declared `http`, with a TrafficPolicy (retries), metrics on
//   nodemesh gRPC       a Service port declared `grpc` (HTTP/2 end to end)
//   nodemesh eBPF       the same three, from a client pod intercepted by the eBPF programs (bpf/)
//                       instead of iptables (skipped, with the reason, where eBPF cannot run)
//   HAProxy tcp / http  HAProxy 2.6 in `mode tcp` / `mode http` in both pods
//
// "nodemesh" is the mesh as it ships: a controller (the CA) and agents whose tunnels are mutual
// TLS, many per connection. "nodemesh plaintext" is the same agents to backends of their own that a
// PeerAuthentication DISABLE selects: the same paths without TLS, side by side in one run (each
// measurement checks on the agents' counters that its tunnels had the security it names). Also
// new connections per second through an opaque TCP port, with the TLS handshakes the source agent
// made meanwhile: tunnels share connections, so a new connection costs no handshake.
//
// Figures per path: latency at a fixed rate (paced per connection; added = minus direct), saturation
// throughput (closed loop), CPU seconds per 1000 requests of the proxy processes at the fixed rate,
// and single-stream bulk throughput; agent RSS idle, under load and with `--pods` more pods
// enrolled. Writes JSON and markdown (with ratios and the goals) and prints the markdown.
//
//   node test/bench/compare.ts [--duration 10] [--saturation-duration 5] [--bulk-duration 5]
//        [--rate 1000] [--connections 16] [--pods 1000] [--new-connections 3000]
//        [--locations same-node,cross-node]
//        [--agent-args="--workers 1"] (extra flags for the agents)
//        [--only REGEX (paths whose "system protocol" matches, e.g. 'direct|opaque'; bulk is "system bulk")]
//        [--json test-results/bench.json] [--markdown test-results/bench.md]

import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { cpus, release } from "node:os";
import { dirname } from "node:path";
import { parseArgs } from "node:util";
import type { LoadArgs, LoadReport } from "../e2e/clients/http-load.ts";
import { BUILT_CLI, Mesh } from "../e2e/mesh.ts";
import { modeUnavailable } from "../e2e/modes.ts";
import { httpFrom } from "../e2e/netns-client.ts";
import { type Node, type Pod, type Proc, World } from "../world/world.ts";
import { h2loadAtRate, h2loadSaturation, type Latency, WARM_UP_S } from "./h2load.ts";
import {
  type HaproxyInbound,
  type HaproxyMode,
  type HaproxyRoute,
  inboundConfig,
  inboundRules,
  installRules,
  outboundConfig,
  outboundRules,
  startHaproxy,
} from "./haproxy.ts";
import { bulkGbitPerS, IPERF_PORT } from "./iperf.ts";
import { cpuInWindow, peakRssMB, rssMB, settledRssMB } from "./proc-stats.ts";
import { goalsReport, markdownReport } from "./report.ts";
import { BENCH_WORKLOAD_ARGS } from "./workload.ts";

const { values } = parseArgs({
  options: {
    duration: { type: "string", default: "10" },
    "saturation-duration": { type: "string", default: "5" },
    "bulk-duration": { type: "string", default: "5" },
    rate: { type: "string", default: "1000" },
    connections: { type: "string", default: "16" },
    pods: { type: "string", default: "1000" },
    "new-connections": { type: "string", default: "3000" },
    locations: { type: "string", default: "same-node,cross-node" },
    only: { type: "string" },
    "agent-args": { type: "string", default: "" },
    json: { type: "string", default: "test-results/bench.json" },
    markdown: { type: "string", default: "test-results/bench.md" },
  },
});
const RATE = Number(values.rate);
const CONNECTIONS = Number(values.connections);
const DURATION_S = Number(values.duration);
const SATURATION_S = Number(values["saturation-duration"]);
const BULK_S = Number(values["bulk-duration"]);
const EXTRA_PODS = Number(values.pods);
const LOCATIONS = values.locations.split(",") as Location[];
for (const l of LOCATIONS) if (l !== "same-node" && l !== "cross-node") throw new Error(`unknown location ${l}`);
const ONLY = values.only ? new RegExp(values.only) : undefined;
const NEW_CONNECTIONS = Number(values["new-connections"]);
const HTTP_LOAD = new URL("../e2e/clients/http-load.ts", import.meta.url).pathname;
/** Where the meshed backends also serve HTTP for the opaque TCP Services. */
const OPAQUE_APP_PORT = 8081;
const wanted = (label: string) => !ONLY || ONLY.test(label);

export type Location = "same-node" | "cross-node";
export type System = "direct" | "nodemesh" | "nodemesh eBPF" | "nodemesh plaintext" | "HAProxy";
export type Protocol = "HTTP/1.1" | "gRPC" | "opaque TCP" | "tcp" | "http";

export interface PathResult {
  location: Location;
  system: System;
  /** nodemesh: how the Service port is declared; HAProxy: its mode. The load is HTTP/1.1 but for gRPC. */
  protocol: Protocol;
  latency: Latency;
  /** This path's percentiles minus the direct path's with the same load and location. */
  added?: Latency;
  saturationRps: number;
  /** CPU seconds of the proxy processes (both hops) per 1000 requests at the fixed rate. */
  cpuPer1000?: number;
}

export interface BulkResult {
  location: Location;
  system: System;
  gbitPerS: number;
}

/** New TCP connections per second through a nodemesh opaque TCP port (each one a new tunnel). */
export interface NewConnectionsResult {
  location: Location;
  system: System;
  perS: number;
  connections: number;
  /** TLS handshakes the source agent made meanwhile. */
  handshakes: number;
}

export interface BenchResults {
  date: string;
  machine: { cpus: number; model: string; kernel: string; node: string };
  options: {
    rate: number;
    connections: number;
    durationS: number;
    saturationS: number;
    bulkS: number;
    agentArgs: string;
  };
  paths: PathResult[];
  bulk: BulkResult[];
  newConnections: NewConnectionsResult[];
  /**
   * Idle and with `pods` enrolled: an agent without traffic; loaded: the peak of the two serving the
   * load; afterLoad: the higher of those two once settled after the last run (absent in older runs).
   */
  agentRss: { idleMB: number; loadedMB: number; afterLoadMB?: number; pods: number; withPodsMB: number };
}

const log = (msg: string) => process.stderr.write(`[bench] ${msg}\n`);

if (!existsSync(BUILT_CLI)) throw new Error(`${BUILT_CLI} is missing: run npm run build (make bench does)`);
// Node 3 carries no traffic: its agent gives the idle memory and the memory per enrolled pod.
// Pods get cgroups (v2) when the eBPF mode can run here: its client pod is intercepted through its cgroup.
const EBPF_UNAVAILABLE = modeUnavailable("ebpf");
if (EBPF_UNAVAILABLE) log(`no eBPF columns: ${EBPF_UNAVAILABLE}`);
const world = await World.create({ nodes: 3, cgroups: !EBPF_UNAVAILABLE });
// The agents run as built (dist/), as production runs them: running from source costs every
// thread TypeScript's type stripper (about 17 MB each).
const mesh = new Mesh(world, { cli: BUILT_CLI, agentArgs: values["agent-args"].split(" ").filter(Boolean) });
try {
  const [n1, n2, n3] = world.nodes as [Node, Node, Node];
  const pods = {
    plainClient: await world.addPod(n1, "plain-client"),
    meshClient: await world.addPod(n1, "mesh-client"),
    haproxyClient: await world.addPod(n1, "haproxy-client"),
    ebpfClient: EBPF_UNAVAILABLE ? undefined : await world.addPod(n1, "ebpf-client"),
  };
  // One backend per system and location, all running the same workload.
  const backends = {} as Record<`${System}-${Location}`, Pod>;
  const podName = { direct: "direct", nodemesh: "nodemesh", "nodemesh plaintext": "nmplain", HAProxy: "haproxy" };
  for (const system of ["direct", "nodemesh", "nodemesh plaintext", "HAProxy"] as const) {
    for (const location of ["same-node", "cross-node"] as const) {
      const name = `${podName[system]}-${location === "same-node" ? "near" : "far"}`;
      backends[`${system}-${location}`] = await world.addPod(location === "same-node" ? n1 : n2, name);
    }
  }

  // nodemesh: per location, one opaque and one HTTP Service on the nodemesh backend, and the same
  // two on the plaintext one, which a PeerAuthentication DISABLE selects.
  const vip = {
    tcp: { "same-node": "10.96.0.10", "cross-node": "10.96.0.11" },
    http: { "same-node": "10.96.0.20", "cross-node": "10.96.0.21" },
  };
  const plainVip = {
    tcp: { "same-node": "10.96.0.40", "cross-node": "10.96.0.41" },
    http: { "same-node": "10.96.0.50", "cross-node": "10.96.0.51" },
  };
  const haproxyVip = { "same-node": "10.96.0.30", "cross-node": "10.96.0.31" };
  const meshed = ["nodemesh", "nodemesh plaintext"] as const;
  const vipOf = (system: (typeof meshed)[number]) => (system === "nodemesh" ? vip : plainVip);
  const objects: string[] = [];
  for (const location of ["same-node", "cross-node"] as const) {
    for (const system of meshed) {
      const backend = backends[`${system}-${location}`];
      const suffix = `${system === "nodemesh" ? "" : "plain-"}${location}`;
      objects.push(`apiVersion: nodemesh.io/v1alpha1
kind: Service
metadata: { name: tcp-${suffix}, namespace: default }
spec:
  vip: ${vipOf(system).tcp[location]}
  selector: { app: ${backend.name} }
  ports:
    - { name: web, port: 80, targetPort: ${OPAQUE_APP_PORT}, protocol: tcp }
    - { name: bulk, port: ${IPERF_PORT}, protocol: tcp }
`);
      objects.push(`apiVersion: nodemesh.io/v1alpha1
kind: Service
metadata: { name: http-${suffix}, namespace: default }
spec:
  vip: ${vipOf(system).http[location]}
  selector: { app: ${backend.name} }
  ports:
    - { name: http, port: 80, targetPort: 8080, protocol: http }
    - { name: grpc, port: 9090, protocol: grpc }
`);
      objects.push(`apiVersion: nodemesh.io/v1alpha1
kind: TrafficPolicy
metadata: { name: http-${suffix}, namespace: default }
spec:
  targetRefs: [{ kind: Service, name: http-${suffix} }]
  retries: { attempts: 2, retryOn: [connect-failure, reset, gateway-error, unavailable] }
`);
    }
  }
  objects.push(`apiVersion: nodemesh.io/v1alpha1
kind: PeerAuthentication
metadata: { name: plaintext-backends, namespace: default }
spec:
  targetRefs: [{ name: tcp-plain-same-node }, { name: tcp-plain-cross-node }]
  mtls: { mode: DISABLE }
`);
  log("starting the controller, agents and workloads");
  await mesh.startController();
  const applied = await mesh.cli(["apply", "-f", "-"], objects.join("---\n"));
  if (applied.code !== 0) throw new Error(`apply: ${applied.stderr}${applied.stdout}`);
  const [agent1, agent2, idleAgent] = await Promise.all([
    mesh.startAgent(n1),
    mesh.startAgent(n2),
    mesh.startAgent(n3),
  ]);
  const agentPids = [agent1.proc.pid!, agent2.proc.pid!];
  for (const pod of Object.values(backends)) {
    await mesh.startWorkload(pod, [...BENCH_WORKLOAD_ARGS]);
    const iperf = world.spawn(pod, "iperf3", ["-s", "--forceflush", "-p", String(IPERF_PORT)], {
      name: `iperf3 ${pod.name}`,
    });
    await iperf.waitForLine(/Server listening/, 5_000);
  }
  // The opaque Services' app port: the same workload on a port of its own, so that the pod port the
  // HTTP Service declares \`http\` is not also the one the opaque Service declares \`tcp\` (the
  // destination agent would serve the opaque tunnel as HTTP: the first Service by name wins).
  for (const system of meshed) {
    for (const location of ["same-node", "cross-node"] as const) {
      await mesh.startWorkload(backends[`${system}-${location}`], [
        ...BENCH_WORKLOAD_ARGS,
        "--http-port",
        String(OPAQUE_APP_PORT),
        "--grpc-port",
        "0",
      ]);
    }
  }
  await mesh.enroll(pods.meshClient, ["--label", "app=mesh-client"]);
  if (pods.ebpfClient) {
    const { cgroup } = pods.ebpfClient;
    await mesh.enroll(pods.ebpfClient, ["--label", "app=ebpf-client", "--mode", "ebpf", "--cgroup", cgroup!]);
  }
  for (const system of meshed) {
    for (const location of ["same-node", "cross-node"] as const) {
      const backend = backends[`${system}-${location}`];
      await mesh.enroll(backend, ["--label", `app=${backend.name}`]);
    }
  }
  // Every VIP answers (the tables reached both agents, the clients' certificates arrived).
  const meshClients = [pods.meshClient, ...(pods.ebpfClient ? [pods.ebpfClient] : [])];
  for (const [ip, client] of meshClients.flatMap((c) =>
    [...Object.values(vip.http), ...Object.values(plainVip.http)].map((ip) => [ip, c] as const),
  )) {
    for (let attempt = 0; ; attempt++) {
      const ok = await httpFrom(client.netnsPath, `http://${ip}/`, { timeoutMs: 2000 }).then(
        (r) => r.status === 200,
        () => false,
      );
      if (ok) break;
      if (attempt === 100) throw new Error(`${ip} does not answer through the mesh`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  /** Tunnels accepted by both agents, by security, and the TLS handshakes node-1's agent made. */
  const tunnelCounts = async () => {
    const [m1, m2] = await Promise.all([mesh.metrics(n1), mesh.metrics(n2)]);
    const sum = (name: string) => (m1.get(name) ?? 0) + (m2.get(name) ?? 0);
    return {
      mtls: sum('nodemesh_tunnel_connections_total{security="mutual_tls"}'),
      plaintext: sum('nodemesh_tunnel_connections_total{security="plaintext"}'),
      sameNode: sum('nodemesh_tunnel_connections_total{security="same_node"}'),
      handshakes: m1.get('nodemesh_tunnel_tls_connections_total{direction="outbound"}') ?? 0,
    };
  };
  /**
   * Runs `work`, then fails loudly if a tunnel the path should not open was opened meanwhile:
   * across nodes, one of the other security or one served in memory; on one node, any that crossed
   * the network (its agent serves those in memory, agent/dataplane/local-tunnel.ts).
   */
  const withSecurity = async <T>(location: Location, system: System, work: () => Promise<T>): Promise<T> => {
    if (!system.startsWith("nodemesh")) return work();
    const before = await tunnelCounts();
    const result = await work();
    const after = await tunnelCounts();
    const opened = (kind: "mtls" | "plaintext" | "sameNode") => after[kind] - before[kind];
    const wrong =
      location === "same-node"
        ? opened("mtls") + opened("plaintext")
        : opened("sameNode") + (system === "nodemesh plaintext" ? opened("mtls") : opened("plaintext"));
    if (wrong > 0) throw new Error(`${location} ${system}: ${wrong} tunnels of another kind during its measurement`);
    return result;
  };

  // HAProxy: the client pod's VIP ports go to its HAProxy; the backends' app ports to theirs.
  const routes: HaproxyRoute[] = (["same-node", "cross-node"] as const).flatMap((location, i) => [
    {
      vip: haproxyVip[location],
      vipPort: 80,
      listenPort: 15001 + i,
      backend: backends[`HAProxy-${location}`],
      backendPort: 8080,
    },
    {
      vip: haproxyVip[location],
      vipPort: IPERF_PORT,
      listenPort: 15003 + i,
      backend: backends[`HAProxy-${location}`],
      backendPort: IPERF_PORT,
      mode: "tcp" as const,
    },
  ]);
  const inbound: HaproxyInbound[] = [
    { appPort: 8080, listenPort: 15006 },
    { appPort: IPERF_PORT, listenPort: 15007, mode: "tcp" },
  ];
  const haproxyPods = [backends["HAProxy-same-node"], backends["HAProxy-cross-node"]];
  await installRules(world, pods.haproxyClient, outboundRules(routes));
  for (const pod of haproxyPods) await installRules(world, pod, inboundRules(inbound));
  let haproxyProcs: Proc[] = [];
  const startHaproxies = async (mode: HaproxyMode) => {
    await Promise.all(haproxyProcs.map((p) => p.stop("SIGTERM")));
    haproxyProcs = [
      await startHaproxy(
        world,
        pods.haproxyClient,
        outboundConfig(mode, routes),
        routes.map((r) => r.listenPort),
      ),
      ...(await Promise.all(
        haproxyPods.map((pod) =>
          startHaproxy(
            world,
            pod,
            inboundConfig(mode, inbound),
            inbound.map((i) => i.listenPort),
          ),
        ),
      )),
    ];
    return haproxyProcs.map((p) => p.pid!);
  };

  // Memory per enrolled pod: empty namespaces enrolled with the idle agent, as its init container would.
  const idleMB = await settledRssMB(idleAgent.proc.pid!);
  log(`enrolling ${EXTRA_PODS} pods`);
  const idleIp = (i: number) => `10.245.${i >> 8}.${i & 255}`;
  const places = EXTRA_PODS > 0 ? await world.addBareNamespaces("idle", EXTRA_PODS, idleIp) : [];
  for (const [i, place] of places.entries()) {
    // From the node's own namespace: the privileged caller that may name another namespace.
    const body = {
      name: `idle-${i}`,
      namespace: "bench",
      ip: idleIp(i),
      netnsPath: place.netnsPath,
      labels: { app: "idle" },
    };
    const reply = await mesh.enrollmentCall(n3, n3, "POST", "/v1/pods", JSON.stringify(body));
    if (reply.status !== 200) throw new Error(`enroll idle-${i}: ${reply.status} ${reply.body}`);
  }
  const withPodsMB = await settledRssMB(idleAgent.proc.pid!);
  let loadedMB = Math.max(...agentPids.map((pid) => rssMB(pid)));
  /**
   * Runs `work`, sampling the serving agents' RSS when `system` is nodemesh's: the peak goes into
   * the run's figure, and, since the agents serve every path so their RSS climbs across the run, into
   * the log line that says where.
   */
  const watchingAgents = async <T>(system: System, during: string, work: () => Promise<T>): Promise<T> => {
    const watched = system.startsWith("nodemesh") ? agentPids : [];
    const { result, peaks } = await peakRssMB(watched, work);
    loadedMB = Math.max(loadedMB, ...peaks);
    if (watched.length) log(`  agents' RSS peak ${during}: ${peaks.map((mb) => mb.toFixed(1)).join(" / ")} MB`);
    return result;
  };

  const paths: PathResult[] = [];
  const bulk: BulkResult[] = [];
  const measure = async (
    location: Location,
    system: System,
    protocol: Protocol,
    from: Pod,
    url: string,
    proxyPids: number[],
  ) => {
    if (!wanted(`${system} ${protocol}`)) return;
    await withSecurity(location, system, () => measureOnce(location, system, protocol, from, url, proxyPids));
  };
  const measureOnce = async (
    location: Location,
    system: System,
    protocol: Protocol,
    from: Pod,
    url: string,
    proxyPids: number[],
  ) => {
    const grpc = protocol === "gRPC";
    log(`${location} ${system} ${protocol}: saturation for ${SATURATION_S} s, then ${RATE} req/s for ${DURATION_S} s`);
    // Saturation first: it also warms the proxies up (JIT), so the fixed-rate run measures them warm.
    const saturated = await watchingAgents(system, "at saturation", () =>
      h2loadSaturation(world, from, url, { connections: CONNECTIONS, durationS: SATURATION_S, grpc }),
    );
    if (saturated.failed > 0) throw new Error(`${system} ${protocol}: failures at saturation`);
    const rated = await cpuInWindow(proxyPids, (WARM_UP_S + 0.3) * 1000, (WARM_UP_S + DURATION_S - 0.3) * 1000, () =>
      h2loadAtRate(world, from, url, { rate: RATE, connections: CONNECTIONS, durationS: DURATION_S, grpc }),
    );
    const latency = rated.result;
    if (latency.ok !== latency.total)
      throw new Error(`${system} ${protocol}: ${latency.total - latency.ok} failed requests`);
    const achievedRps = latency.total / DURATION_S;
    const direct = paths.find(
      (p) => p.location === location && p.system === "direct" && (p.protocol === "gRPC") === grpc,
    );
    paths.push({
      location,
      system,
      protocol,
      latency,
      ...(direct ? { added: minus(latency, direct.latency) } : {}),
      saturationRps: saturated.rps,
      ...(proxyPids.length ? { cpuPer1000: (rated.cpuS / (achievedRps * rated.windowS)) * 1000 } : {}),
    });
  };
  const measureBulk = async (location: Location, system: System, from: Pod, ip: string) => {
    if (!wanted(`${system} bulk`)) return;
    log(`${location} ${system}: bulk TCP for ${BULK_S} s`);
    const gbitPerS = await watchingAgents(system, "in bulk", () =>
      withSecurity(location, system, () => bulkGbitPerS(world, from, ip, IPERF_PORT, BULK_S)),
    );
    bulk.push({ location, system, gbitPerS });
  };
  const newConnections: NewConnectionsResult[] = [];
  /** New connections per second to an opaque TCP port: each request on a connection of its own. */
  const measureNewConnections = async (location: Location, system: System, ip: string) => {
    if (!wanted(`${system} new connections`)) return;
    log(`${location} ${system}: new connections for ${NEW_CONNECTIONS} requests`);
    const before = await tunnelCounts();
    const args: LoadArgs = {
      url: `http://${ip}/`,
      requests: NEW_CONNECTIONS,
      concurrency: CONNECTIONS,
      headers: { connection: "close" },
    };
    const report = await withSecurity(location, system, async () => {
      const run = await world.exec(pods.meshClient, process.execPath, [HTTP_LOAD, JSON.stringify(args)], {
        timeoutMs: 120_000,
      });
      return JSON.parse(run.stdout.trim().split("\n").at(-1) ?? "{}") as LoadReport;
    });
    if ((report.statuses["200"] ?? 0) !== NEW_CONNECTIONS)
      throw new Error(`${system} new connections: ${JSON.stringify(report.statuses)}`);
    const after = await tunnelCounts();
    newConnections.push({
      location,
      system,
      perS: (NEW_CONNECTIONS / report.durationMs) * 1000,
      connections: NEW_CONNECTIONS,
      handshakes: after.handshakes - before.handshakes,
    });
  };

  for (const location of LOCATIONS) {
    const direct = backends[`direct-${location}`];
    await measure(location, "direct", "HTTP/1.1", pods.plainClient, `http://${direct.ip}:8080/`, []);
    await measure(location, "direct", "gRPC", pods.plainClient, `http://${direct.ip}:9090/echo.Echo/Unary`, []);
    await measureBulk(location, "direct", pods.plainClient, direct.ip);
    await measure(location, "nodemesh", "opaque TCP", pods.meshClient, `http://${vip.tcp[location]}/`, agentPids);
    await measure(location, "nodemesh", "HTTP/1.1", pods.meshClient, `http://${vip.http[location]}/`, agentPids);
    await measure(
      location,
      "nodemesh",
      "gRPC",
      pods.meshClient,
      `http://${vip.http[location]}:9090/echo.Echo/Unary`,
      agentPids,
    );
    await measureBulk(location, "nodemesh", pods.meshClient, vip.tcp[location]);
    await measureNewConnections(location, "nodemesh", vip.tcp[location]);
    if (pods.ebpfClient) {
      const ebpf = "nodemesh eBPF";
      const from = pods.ebpfClient;
      await measure(location, ebpf, "opaque TCP", from, `http://${vip.tcp[location]}/`, agentPids);
      await measure(location, ebpf, "HTTP/1.1", from, `http://${vip.http[location]}/`, agentPids);
      await measure(location, ebpf, "gRPC", from, `http://${vip.http[location]}:9090/echo.Echo/Unary`, agentPids);
      await measureBulk(location, ebpf, from, vip.tcp[location]);
    }
    const plain = "nodemesh plaintext";
    await measure(location, plain, "opaque TCP", pods.meshClient, `http://${plainVip.tcp[location]}/`, agentPids);
    await measure(location, plain, "HTTP/1.1", pods.meshClient, `http://${plainVip.http[location]}/`, agentPids);
    await measure(
      location,
      plain,
      "gRPC",
      pods.meshClient,
      `http://${plainVip.http[location]}:9090/echo.Echo/Unary`,
      agentPids,
    );
    await measureBulk(location, plain, pods.meshClient, plainVip.tcp[location]);
    await measureNewConnections(location, plain, plainVip.tcp[location]);
  }
  for (const mode of ["tcp", "http"] as const) {
    if (!wanted(`HAProxy ${mode}`) && !(mode === "tcp" && wanted("HAProxy bulk"))) continue;
    const haproxyPids = await startHaproxies(mode);
    for (const location of LOCATIONS) {
      await measure(location, "HAProxy", mode, pods.haproxyClient, `http://${haproxyVip[location]}/`, haproxyPids);
      if (mode === "tcp") await measureBulk(location, "HAProxy", pods.haproxyClient, haproxyVip[location]);
    }
  }

  // What the serving agents keep once the load is over (api/idle-heap.ts, memory-release.ts).
  const afterLoadMB = Math.max(...(await Promise.all(agentPids.map((pid) => settledRssMB(pid)))));
  log(`agents' RSS settled after the load: ${afterLoadMB.toFixed(1)} MB`);

  const results: BenchResults = {
    date: new Date().toISOString(),
    machine: { cpus: cpus().length, model: cpus()[0]?.model ?? "?", kernel: release(), node: process.version },
    options: {
      rate: RATE,
      connections: CONNECTIONS,
      durationS: DURATION_S,
      saturationS: SATURATION_S,
      bulkS: BULK_S,
      agentArgs: values["agent-args"],
    },
    paths,
    bulk,
    newConnections,
    agentRss: { idleMB, loadedMB, afterLoadMB, pods: EXTRA_PODS, withPodsMB },
  };
  const markdown = markdownReport(results);
  for (const [file, text] of [
    [values.json, `${JSON.stringify({ ...results, goals: goalsReport(results) }, null, 2)}\n`],
    [values.markdown, markdown],
  ] as const) {
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, text);
  }
  console.log(markdown);
} finally {
  await mesh.destroy();
}

function minus(a: Latency, b: Latency): Latency {
  return {
    p50: a.p50 - b.p50,
    p90: a.p90 - b.p90,
    p99: a.p99 - b.p99,
    p999: a.p999 - b.p999,
    ok: a.ok,
    total: a.total,
  };
}
