// A stand-in for the controller's REST API, for the dashboard's page tests and for looking at the
// page without a mesh: the three endpoints the page reads, answered from a small shop-like mesh
// whose numbers drift on every request, plus the real uiHandler.
//
//   node controller/ui/fake-api.fixture.ts [port]      # then open http://127.0.0.1:8099/

import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { MATRIX_MAX_NODES } from "../../api/agent-service.ts";
import type { GraphEdge, GraphNode, ServiceDetail, ServiceGraph } from "../../api/service-graph.ts";
import type { AgentStatus } from "../config/agent-registry.ts";
import { PeerProbes } from "../config/peer-probes.ts";
import { uiHandler } from "./ui-server.ts";

const API = "/apis/nodemesh.io/v1alpha1";

interface EdgeSpec {
  source: string;
  target: string;
  rps: number;
  errorRate: number;
  p50: number;
  p99: number;
  protocol?: "http" | "grpc" | "tcp";
  mtls?: boolean;
}

export interface FakeApi {
  url: string;
  server: Server;
  /** Requests seen, in order: method, path and whether they carried the token. */
  requests: { path: string; authorization?: string }[];
  /** Mutable: the next answers reflect changes. */
  edges: EdgeSpec[];
  agents: AgentStatus[];
  /** When set, API calls without `authorization: Bearer <token>` get 401. */
  token?: string;
  /** Per-path status overrides (e.g. 404 for the graph). */
  fail: Map<string, number>;
  close(): Promise<void>;
}

const svc = (name: string, ns = "shop") => `svc:${name}.${ns}`;
const wl = (name: string, ns = "shop") => `wl:${name}.${ns}`;

export function defaultEdges(): EdgeSpec[] {
  return [
    { source: wl("loadgen", "default"), target: svc("frontend"), rps: 48.2, errorRate: 0.002, p50: 3.1, p99: 22 },
    { source: svc("frontend"), target: wl("frontend"), rps: 48.2, errorRate: 0.002, p50: 3.1, p99: 22 },
    { source: wl("frontend"), target: svc("catalog"), rps: 96.4, errorRate: 0, p50: 1.2, p99: 6.8, mtls: true },
    { source: svc("catalog"), target: wl("catalog"), rps: 96.4, errorRate: 0, p50: 1.2, p99: 6.8, mtls: true },
    { source: wl("frontend"), target: svc("checkout"), rps: 12.5, errorRate: 0.021, p50: 8.4, p99: 61 },
    { source: svc("checkout"), target: wl("checkout"), rps: 12.5, errorRate: 0.021, p50: 8.4, p99: 61 },
    {
      source: wl("checkout"),
      target: svc("payments"),
      rps: 12.1,
      errorRate: 0.084,
      p50: 31,
      p99: 412,
      protocol: "grpc",
    },
    {
      source: svc("payments"),
      target: wl("payments-v1"),
      rps: 10.9,
      errorRate: 0.02,
      p50: 29,
      p99: 180,
      protocol: "grpc",
    },
    {
      source: svc("payments"),
      target: wl("payments-v2"),
      rps: 1.2,
      errorRate: 0.61,
      p50: 45,
      p99: 2300,
      protocol: "grpc",
    },
    {
      source: wl("checkout"),
      target: svc("postgres"),
      rps: 3.4,
      errorRate: 0,
      p50: 0,
      p99: 0,
      protocol: "tcp",
    },
    { source: svc("postgres"), target: wl("postgres"), rps: 3.4, errorRate: 0, p50: 0, p99: 0, protocol: "tcp" },
  ];
}

/** An agent as the controller lists it, its probe summary worked out as the controller's is. */
export function agent(
  node: string,
  ip: string,
  peers: NonNullable<AgentStatus["peers"]>,
  connected = true,
): AgentStatus {
  const now = new Date().toISOString();
  return {
    node,
    connected,
    agentVersion: "0.1.0",
    underlayIp: ip,
    facts: {
      cpuModel: "AMD EPYC 7763 64-Core Processor",
      cpuCores: 8,
      memoryBytes: 32 * 2 ** 30,
      os: "Debian GNU/Linux 12 (bookworm)",
      kernel: "6.1.0-28-amd64",
      interfaces: [],
    },
    connectedAt: now,
    appliedVersion: "v42",
    appliedAt: now,
    lastReport: {
      at: now,
      health: { ready: true, detail: "" },
      traffic: {} as never,
      intervalSeconds: 1,
    },
    peers,
    peerSummary: PeerProbes.from(peers, (name) => name).summary(),
    pods: [
      { name: `${node}-a`, namespace: "shop", ip: "10.0.0.1", labels: {} },
      { name: `${node}-b`, namespace: "shop", ip: "10.0.0.2", labels: {} },
    ],
    podCount: 2,
  };
}

export function defaultAgents(): AgentStatus[] {
  const p = (nodeName: string, rttMs: number, lossRatio = 0, error = "") => ({ nodeName, rttMs, lossRatio, error });
  return [
    agent("node-1", "10.250.0.11", [p("node-2", 0.182), p("node-3", 4.6)]),
    agent("node-2", "10.250.0.12", [p("node-1", 0.175), p("node-3", 4.9, 0.05)]),
    agent("node-3", "10.250.0.13", [p("node-1", 4.4), p("node-2", 27.5)]),
  ];
}

const kindOf = (id: string): GraphNode => {
  const [kind, rest] = id.split(":") as [string, string];
  const dot = rest.lastIndexOf(".");
  return {
    id,
    kind: kind === "svc" ? "service" : "workload",
    name: rest.slice(0, dot),
    namespace: rest.slice(dot + 1),
  };
};

/** A little movement on every read, as real traffic has. */
function jitter(v: number, tick: number, i: number): number {
  return v * (1 + 0.06 * Math.sin(tick * 0.9 + i * 1.7));
}

function graphOf(edges: EdgeSpec[], windowSeconds: number, tick: number): ServiceGraph {
  const ids = new Set<string>();
  for (const e of edges) ids.add(e.source).add(e.target);
  const graphEdges: GraphEdge[] = edges.map((e, i) => {
    const rps = jitter(e.rps, tick, i);
    const isTcp = e.protocol === "tcp";
    return {
      source: e.source,
      target: e.target,
      protocol: e.protocol ?? "http",
      mtls: e.mtls ?? false,
      requestsPerSecond: rps,
      errorRate: e.errorRate,
      p50Ms: isTcp ? null : e.p50,
      p99Ms: isTcp ? null : jitter(e.p99, tick, i + 3),
      bytesPerSecond: rps * 1800,
    };
  });
  const services = [...ids]
    .filter((id) => id.startsWith("svc:"))
    .sort()
    .map((id) => {
      const into = graphEdges.filter((e) => e.target === id);
      const rps = into.reduce((s, e) => s + e.requestsPerSecond, 0);
      const errors = into.reduce((s, e) => s + e.requestsPerSecond * e.errorRate, 0);
      const node = kindOf(id);
      return {
        id,
        name: node.name,
        namespace: node.namespace,
        protocol: into[0]?.protocol ?? ("http" as const),
        requestsPerSecond: rps,
        errorRate: rps > 0 ? errors / rps : 0,
        p50Ms: into[0]?.p50Ms ?? null,
        p99Ms: into.length ? Math.max(...into.map((e) => e.p99Ms ?? 0)) || null : null,
        bytesPerSecond: rps * 1800,
      };
    });
  return {
    windowSeconds,
    generatedAt: new Date().toISOString(),
    nodes: [...ids].sort().map(kindOf),
    edges: graphEdges,
    services,
  };
}

function detailOf(g: ServiceGraph, ns: string, name: string, windowSeconds: number): ServiceDetail | undefined {
  const id = `svc:${name}.${ns}`;
  const s = g.services.find((x) => x.id === id);
  if (!s) return undefined;
  const step = Math.max(1, Math.round(windowSeconds / 60));
  const now = Math.floor(Date.now() / 1000 / step) * step;
  const series = Array.from({ length: 60 }, (_, i) => {
    const wave = 1 + 0.25 * Math.sin(i / 6) + 0.1 * Math.sin(i * 1.3);
    const spike = i > 40 && i < 46 ? 2.5 : 1;
    return {
      t: now - (59 - i) * step,
      requestsPerSecond: s.requestsPerSecond * wave,
      errorRate: Math.min(1, s.errorRate * spike * (0.8 + 0.4 * Math.sin(i / 3) ** 2)),
      p50Ms: s.p50Ms === null ? null : s.p50Ms * wave,
      p99Ms: s.p99Ms === null ? null : s.p99Ms * wave * spike,
      bytesPerSecond: s.bytesPerSecond,
    };
  });
  const callers = g.edges
    .filter((e) => e.target === id)
    .map((e) => ({
      source: e.source.slice(3),
      requestsPerSecond: e.requestsPerSecond,
      errorRate: e.errorRate,
      p50Ms: e.p50Ms,
      p99Ms: e.p99Ms,
      bytesPerSecond: e.bytesPerSecond,
    }));
  const backends = g.edges.filter((e) => e.source === id).map((e) => kindOf(e.target).name);
  return {
    service: { name, namespace: ns, vip: "10.96.0.10", ports: [{ name: "http", port: 80, protocol: s.protocol }] },
    totals: {
      requestsPerSecond: s.requestsPerSecond,
      errorRate: s.errorRate,
      p50Ms: s.p50Ms,
      p99Ms: s.p99Ms,
      bytesPerSecond: s.bytesPerSecond,
    },
    series,
    callers,
    endpoints: backends.flatMap((b, i) => [
      { pod: `${b}-7d9f8-x${i}k2p`, ip: `10.0.1.${10 + i}`, node: "node-1" },
      { pod: `${b}-7d9f8-q${i}m4z`, ip: `10.0.2.${10 + i}`, node: "node-2" },
    ]),
    policies: [
      { kind: "HTTPRoute", namespace: ns, name: `${name}-canary`, agentsApplied: 3, agentsTotal: 3 },
      { kind: "TrafficPolicy", namespace: ns, name: `${name}-retries`, agentsApplied: 2, agentsTotal: 3 },
    ],
  };
}

function send(res: import("node:http").ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(body));
}

export async function startFakeApi(port = 0, host = "127.0.0.1"): Promise<FakeApi> {
  const ui = uiHandler();
  let tick = 0;
  const api: FakeApi = {
    url: "",
    server: undefined as unknown as Server,
    requests: [],
    edges: defaultEdges(),
    agents: defaultAgents(),
    fail: new Map(),
    close: () => new Promise<void>((resolve) => api.server.close(() => resolve())),
  };
  const handle = (req: IncomingMessage, res: import("node:http").ServerResponse) => {
    if (ui(req, res)) return;
    const url = new URL(req.url ?? "/", "http://localhost");
    api.requests.push({ path: `${url.pathname}${url.search}`, authorization: req.headers.authorization });
    if (api.token && req.headers.authorization !== `Bearer ${api.token}`) {
      return send(res, 401, {
        kind: "Status",
        status: "Failure",
        message: "missing or invalid bearer token",
        code: 401,
      });
    }
    const failed = api.fail.get(url.pathname);
    if (failed) return send(res, failed, { kind: "Status", message: `fake ${failed}`, code: failed });
    const windowSeconds = Number(url.searchParams.get("window") ?? 300);
    if (url.pathname === `${API}/agents`) {
      // As the controller: ?peers=summary leaves the probes out (=matrix beyond MATRIX_MAX_NODES
      // nodes), ?pods=count the pods.
      const peers = url.searchParams.get("peers");
      const summary = peers === "summary" || (peers === "matrix" && api.agents.length > MATRIX_MAX_NODES);
      const count = url.searchParams.get("pods") === "count";
      const items = api.agents.map(({ peers, pods, ...rest }) => ({
        ...rest,
        ...(summary ? {} : { peers }),
        ...(count ? {} : { pods }),
      }));
      return send(res, 200, { apiVersion: "nodemesh.io/v1alpha1", kind: "AgentList", items });
    }
    if (url.pathname === `${API}/servicegraph`) return send(res, 200, graphOf(api.edges, windowSeconds, tick++));
    const m = /^\/apis\/nodemesh\.io\/v1alpha1\/servicegraph\/services\/([^/]+)\/([^/]+)$/.exec(url.pathname);
    if (m) {
      const detail = detailOf(
        graphOf(api.edges, windowSeconds, tick),
        decodeURIComponent(m[1]!),
        decodeURIComponent(m[2]!),
        windowSeconds,
      );
      return detail ? send(res, 200, detail) : send(res, 404, { kind: "Status", message: "not found", code: 404 });
    }
    send(res, 404, { kind: "Status", message: `no route for ${url.pathname}`, code: 404 });
  };
  api.server = createServer(handle);
  await new Promise<void>((resolve) => api.server.listen(port, host, resolve));
  api.url = `http://${host}:${(api.server.address() as AddressInfo).port}`;
  return api;
}

if (import.meta.main) {
  const api = await startFakeApi(Number(process.argv[2] ?? 8099));
  console.log(`fake nodemesh API and dashboard on ${api.url}/`);
}
