// The side-by-side benchmark's report: markdown tables with ratios, and the goals checked
// against the figures (pure functions of the results, so a saved JSON can be re-rendered).

import type { BenchResults, BulkResult, Location, PathResult } from "./compare.ts";

export interface GoalResult {
  goal: string;
  location?: Location;
  measured: number;
  target: number;
  unit: string;
  comparison: "≤" | "≥";
  met: boolean;
}

/** Below this, an added latency is noise between two runs, not a cost to compare. */
const MEASURABLE_MS = 0.02;

const f3 = (n: number | undefined) => (n === undefined || !Number.isFinite(n) ? "" : n.toFixed(3));
const f2 = (n: number | undefined) => (n === undefined || !Number.isFinite(n) ? "" : n.toFixed(2));
const ratio = (a: number | undefined, b: number | undefined) => (a === undefined || !b ? undefined : a / b);

function find(r: BenchResults, location: Location, system: PathResult["system"], protocol: PathResult["protocol"]) {
  return r.paths.find((p) => p.location === location && p.system === system && p.protocol === protocol);
}

/** HAProxy's path in the mode that does the same work as a nodemesh path, if there is one. */
function haproxyPeer(r: BenchResults, p: PathResult): PathResult | undefined {
  if (p.system !== "nodemesh") return undefined;
  const mode = p.protocol === "opaque TCP" ? "tcp" : p.protocol === "HTTP/1.1" ? "http" : undefined;
  return mode ? find(r, p.location, "HAProxy", mode) : undefined;
}

function bulkOf(r: BenchResults, location: Location, system: BulkResult["system"]) {
  return r.bulk.find((b) => b.location === location && b.system === system)?.gbitPerS;
}

function perPodKB(rss: BenchResults["agentRss"]): number {
  return ((rss.withPodsMB - rss.idleMB) * 1000) / rss.pods;
}

export function goalsReport(r: BenchResults): GoalResult[] {
  const goals: GoalResult[] = [];
  const add = (
    goal: string,
    location: Location | undefined,
    measured: number | undefined,
    target: number,
    unit: string,
    atMost = true,
  ) => {
    if (measured === undefined || !Number.isFinite(measured)) return;
    goals.push({
      goal,
      ...(location ? { location } : {}),
      measured,
      target,
      unit,
      comparison: atMost ? "≤" : "≥",
      met: atMost ? measured <= target : measured >= target,
    });
  };
  for (const location of ["same-node", "cross-node"] as const) {
    const tcp = find(r, location, "nodemesh", "opaque TCP");
    const http = find(r, location, "nodemesh", "HTTP/1.1");
    const haTcp = find(r, location, "HAProxy", "tcp");
    const haHttp = find(r, location, "HAProxy", "http");
    add("opaque TCP added p50", location, tcp?.added?.p50, 0.1, "ms");
    add("opaque TCP added p99", location, tcp?.added?.p99, 0.3, "ms");
    // A ratio to HAProxy's added latency means something only when HAProxy measurably adds some.
    const haTcpAdded = haTcp?.added?.p50;
    if (haTcpAdded !== undefined && haTcpAdded > MEASURABLE_MS) {
      add("opaque TCP added p50 / HAProxy tcp added p50", location, ratio(tcp?.added?.p50, haTcpAdded), 1.5, "×");
    }
    add(
      "bulk TCP / direct",
      location,
      ratio(bulkOf(r, location, "nodemesh"), bulkOf(r, location, "direct")),
      0.5,
      "×",
      false,
    );
    // Issue 16's targets for the L7 path.
    add("HTTP/1.1 added p50", location, http?.added?.p50, 1.0, "ms");
    add("HTTP/1.1 added p99", location, http?.added?.p99, 2.5, "ms");
    add("HTTP/1.1 p99.9 / p99", location, ratio(http?.latency.p999, http?.latency.p99), 3, "×");
    add(
      "HTTP/1.1 saturation / HAProxy http",
      location,
      ratio(http?.saturationRps, haHttp?.saturationRps),
      0.6,
      "×",
      false,
    );
    add("CPU per 1000 requests, opaque TCP", location, tcp?.cpuPer1000, 0.15, "s");
    add("CPU per 1000 requests, HTTP/1.1", location, http?.cpuPer1000, 0.25, "s");
    const grpc = find(r, location, "nodemesh", "gRPC");
    add("gRPC added p99", location, grpc?.added?.p99, 4, "ms");
    const directGrpc = find(r, location, "direct", "gRPC");
    add(
      "gRPC saturation / direct gRPC",
      location,
      ratio(grpc?.saturationRps, directGrpc?.saturationRps),
      0.5,
      "×",
      false,
    );
  }
  // mTLS against the same agents in plaintext (issue 12: at most 20 % more CPU per request, and
  // no handshake per new connection).
  for (const location of ["same-node", "cross-node"] as const) {
    for (const protocol of ["HTTP/1.1", "opaque TCP"] as const) {
      const mtls = find(r, location, "nodemesh", protocol)?.cpuPer1000;
      const plain = find(r, location, "nodemesh plaintext", protocol)?.cpuPer1000;
      add(`mTLS CPU per request / plaintext, ${protocol}`, location, ratio(mtls, plain), 1.2, "×");
    }
    const fresh = r.newConnections?.find((n) => n.location === location && n.system === "nodemesh");
    if (fresh) add("mTLS handshakes per new connection", location, fresh.handshakes / fresh.connections, 0.01, "");
  }
  const rss = r.agentRss;
  add("agent RSS idle", undefined, rss.idleMB, 90, "MB");
  add("agent RSS peak under load", undefined, rss.loadedMB, 200, "MB");
  if (rss.pods > 0) add("agent RSS per enrolled pod", undefined, perPodKB(rss), 10, "kB");
  return goals;
}

export function markdownReport(r: BenchResults): string {
  const o = r.options;
  const lines = [
    `${r.date.slice(0, 10)} · ${r.machine.cpus} × ${r.machine.model} · Linux ${r.machine.kernel} · Node ${r.machine.node}`,
    "",
    `Latency at ${o.rate} req/s over ${o.connections} connections for ${o.durationS} s (h2load --rps, paced per connection, 1 KiB` +
      ` responses); saturation: ${o.connections} connections back to back for ${o.saturationS} s. Added = minus direct.` +
      " CPU: both hops' proxy processes, at the fixed rate." +
      (o.agentArgs ? ` Agents started with \`${o.agentArgs}\`.` : ""),
    "",
    "| location | path | p50 ms | p90 | p99 | p99.9 | added p50 | added p90 | added p99 | added p99.9 | saturation req/s | × direct | × HAProxy | CPU s / 1000 req | CPU × HAProxy |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
  ];
  for (const p of r.paths) {
    const direct = r.paths.find(
      (d) => d.location === p.location && d.system === "direct" && (d.protocol === "gRPC") === (p.protocol === "gRPC"),
    );
    const peer = haproxyPeer(r, p);
    const l = p.latency;
    const a = p.added;
    lines.push(
      `| ${p.location} | ${p.system} ${p.protocol} | ${f3(l.p50)} | ${f3(l.p90)} | ${f3(l.p99)} | ${f3(l.p999)} | ` +
        `${f3(a?.p50)} | ${f3(a?.p90)} | ${f3(a?.p99)} | ${f3(a?.p999)} | ${p.saturationRps.toFixed(0)} | ` +
        `${p.system === "direct" ? "" : f2(ratio(p.saturationRps, direct?.saturationRps))} | ` +
        `${f2(ratio(p.saturationRps, peer?.saturationRps))} | ${f3(p.cpuPer1000)} | ${f2(ratio(p.cpuPer1000, peer?.cpuPer1000))} |`,
    );
  }
  lines.push(
    "",
    "nodemesh's HAProxy peer: opaque TCP ↔ `mode tcp`, HTTP/1.1 ↔ `mode http` (× HAProxy = nodemesh / HAProxy).",
    "",
    `Single-stream bulk TCP (iperf3, ${o.bulkS} s):`,
    "",
    "| location | path | Gbit/s | × direct | × HAProxy tcp |",
    "|---|---|---|---|---|",
  );
  for (const b of r.bulk) {
    const direct = bulkOf(r, b.location, "direct");
    const haproxy = bulkOf(r, b.location, "HAProxy");
    lines.push(
      `| ${b.location} | ${b.system} | ${f2(b.gbitPerS)} | ${b.system === "direct" ? "" : f2(ratio(b.gbitPerS, direct))} | ${b.system === "nodemesh" ? f2(ratio(b.gbitPerS, haproxy)) : ""} |`,
    );
  }
  lines.push(...mtlsReport(r));
  const rss = r.agentRss;
  lines.push(
    "",
    `Agent RSS: idle ${rss.idleMB.toFixed(1)} MB, under load ${rss.loadedMB.toFixed(1)} MB (peak), ` +
      (rss.afterLoadMB !== undefined ? `${rss.afterLoadMB.toFixed(1)} MB settled after the load, ` : "") +
      `${rss.withPodsMB.toFixed(1)} MB idle with ${rss.pods} pods enrolled ` +
      `(${f2(perPodKB(rss))} kB per pod).`,
    "",
    "| goal | location | measured | target | met |",
    "|---|---|---|---|---|",
  );
  for (const g of goalsReport(r)) {
    lines.push(
      `| ${g.goal} | ${g.location ?? ""} | ${f3(g.measured)} ${g.unit} | ${g.comparison} ${g.target} ${g.unit} | ${g.met ? "yes" : "**no**"} |`,
    );
  }
  return `${lines.join("\n")}\n`;
}

/** The mTLS paths beside the same agents in plaintext (PeerAuthentication DISABLE), as ratios. */
function mtlsReport(r: BenchResults): string[] {
  const rows: string[] = [];
  for (const p of r.paths) {
    if (p.system !== "nodemesh") continue;
    const plain = find(r, p.location, "nodemesh plaintext", p.protocol);
    if (!plain) continue;
    rows.push(
      `| ${p.location} | ${p.protocol} | ${f3(p.added?.p50)} | ${f3(plain.added?.p50)} | ${f3(p.added?.p99)} | ` +
        `${f3(plain.added?.p99)} | ${p.saturationRps.toFixed(0)} | ${plain.saturationRps.toFixed(0)} | ` +
        `${f2(ratio(p.saturationRps, plain.saturationRps))} | ${f3(p.cpuPer1000)} | ${f3(plain.cpuPer1000)} | ` +
        `${f2(ratio(p.cpuPer1000, plain.cpuPer1000))} |`,
    );
  }
  for (const location of ["same-node", "cross-node"] as const) {
    const mtls = bulkOf(r, location, "nodemesh");
    const plain = bulkOf(r, location, "nodemesh plaintext");
    if (mtls !== undefined && plain !== undefined)
      rows.push(
        `| ${location} | bulk TCP, Gbit/s | | | | | ${f2(mtls)} | ${f2(plain)} | ${f2(ratio(mtls, plain))} | | | |`,
      );
  }
  const fresh = (r.newConnections ?? []).map((n) => {
    const perConnection = n.connections ? n.handshakes / n.connections : undefined;
    return `| ${n.location} | ${n.system} | ${n.perS.toFixed(0)} | ${n.connections} | ${n.handshakes} | ${f3(perConnection)} |`;
  });
  if (rows.length === 0 && fresh.length === 0) return [];
  return [
    "",
    "mTLS (as nodemesh ships) beside the same agents in plaintext (PeerAuthentication DISABLE), same run:",
    "",
    "| location | path | added p50 mTLS | plaintext | added p99 mTLS | plaintext | saturation mTLS | plaintext | × | CPU s / 1000 req mTLS | plaintext | × |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ...rows,
    "",
    "New connections through an opaque TCP port (each request on a connection of its own), with the TLS handshakes the source agent made:",
    "",
    "| location | path | connections/s | connections | TLS handshakes | per connection |",
    "|---|---|---|---|---|---|",
    ...fresh,
  ];
}
