// The agent's half of `nodemesh check` and `nodemesh explain` (admin port, node loopback only):
// what only the pod's node can see — the pod's interception rules and listeners in its network
// namespace, its enrollment, this agent's link to the controller — and a request explained
// against the live snapshot by the data plane's own code (dataplane/explain.ts).
//
// The rules are read as the init container writes them (`iptables-save -t nat` and `-t raw` in
// the pod's namespace) and compared with what its rule builder (init-container/rules.ts) would
// make of those very tables: any rule missing, added or out of order in our chains shows as a
// difference. The outbound exclusions are not recorded anywhere else (the enrollment carries
// only the inbound ones), so they are read from the rules themselves and reported.

import { readFileSync } from "node:fs";
import { INBOUND_PORT, OUTBOUND_PORT, TUNNEL_PORT } from "../../api/dataplane.ts";
import type { AgentCheck, ExplainRequest, Finding } from "../../api/diagnosis.ts";
import { type EnrolledPod, inPortRanges, isIPv4, type PortRange, workloadName } from "../../api/enrollment.ts";
import type { TrafficObject } from "../../api/traffic.ts";
import { saveTables } from "../../init-container/iptables.ts";
import {
  AGENT_CONNTRACK_ZONE,
  buildTables,
  type Cidr,
  INBOUND_CHAIN,
  OUTBOUND_CHAIN,
  parseExclusions,
  type RedirectConfig,
} from "../../init-container/rules.ts";
import { EndpointPicker } from "../dataplane/balancer.ts";
import type { Endpoint } from "../dataplane/endpoint.ts";
import { type DetailedExplanation, explainRequest } from "../dataplane/explain.ts";
import type { PodContext } from "../dataplane/pod.ts";
import type { SharedState } from "../dataplane/shared-state.ts";
import type { Backend, Snapshot } from "../dataplane/snapshot.ts";
import { Netns, withNetns } from "../sys/linux.ts";
import { HttpError } from "./http.ts";
import type { StoredPod } from "./pods.ts";

/** What the diagnosis reads from the running agent. */
export interface DiagnosisSources {
  node: string;
  pod(namespace: string, name: string): StoredPod | undefined;
  configInForce(): { version: string; source: string };
  controller?: () => { address: string; connected: boolean; lastError?: { error: string; hint?: string } };
  /** The snapshot the workers run (compiled from the same message), and its traffic objects. */
  snapshot(): { snapshot: Snapshot; traffic: readonly TrafficObject[] };
  /** Problems the workers report for this pod's listeners (WorkerPool.health). */
  health(): Promise<string[]>;
  shared: () => SharedState | undefined;
  /** The pod's nat and raw tables (iptables-save -t nat, -t raw in its namespace); tests may stand in. */
  ruleTables?: (netnsPath: string) => Promise<string>;
}

const LISTENER_PORTS = [OUTBOUND_PORT, INBOUND_PORT, TUNNEL_PORT];

export async function checkPod(src: DiagnosisSources, podKey: string): Promise<AgentCheck> {
  const [namespace, name] = splitPod(podKey);
  const subject = `pod ${namespace}/${name}`;
  const findings: Finding[] = [agentLinkFinding(src)];
  const pod = src.pod(namespace, name);
  const reenroll = initFix(namespace, name);
  if (!pod) {
    findings.push({
      verdict: "error",
      check: "enrolled",
      subject,
      message: `not enrolled with the agent of node ${src.node}`,
      fix: `check that the pod runs on node ${src.node} (a pod is checked by its own node's agent); else ${reenroll}`,
    });
    return { node: src.node, config: src.configInForce(), controller: linkOf(src), findings };
  }
  findings.push({
    verdict: "ok",
    check: "enrolled",
    subject,
    message: `enrolled with the agent of node ${src.node} as ${pod.ip} since ${pod.enrolledAt}`,
  });
  let dump: string | undefined;
  try {
    dump = await (src.ruleTables ?? ((path) => saveTables({ netnsPath: path })))(pod.netnsPath);
  } catch (err) {
    findings.push({
      verdict: "error",
      check: "rules",
      subject,
      message: `cannot read the pod's iptables rules: ${(err as Error).message}`,
      fix: "run the agent as root with iptables-save and nsenter on its PATH (the nodemesh image has both)",
    });
  }
  if (dump !== undefined) findings.push(...rulesFindings(dump, pod, subject));
  findings.push(...(await listenerFindings(src, pod, subject)));
  return { node: src.node, config: src.configInForce(), controller: linkOf(src), findings };
}

function linkOf(src: DiagnosisSources): AgentCheck["controller"] {
  const link = src.controller?.();
  return link && { address: link.address, connected: link.connected };
}

function agentLinkFinding(src: DiagnosisSources): Finding {
  const subject = `node ${src.node}`;
  const config = src.configInForce();
  const link = src.controller?.();
  if (!link) {
    return {
      verdict: "ok",
      check: "agent",
      subject,
      message: `runs without a controller; configuration ${config.version} from ${config.source}`,
    };
  }
  if (!link.connected) {
    return {
      verdict: "error",
      check: "agent",
      subject,
      message: `not connected to the controller at ${link.address}${link.lastError ? ` (${link.lastError.error})` : ""}; forwarding with configuration ${config.version} from ${config.source}`,
      fix: "check the agent's --controller address, token and CA (its log says why), and that the controller runs",
    };
  }
  return {
    verdict: "ok",
    check: "agent",
    subject,
    message: `connected to the controller at ${link.address}; configuration ${config.version} in force`,
  };
}

function initFix(namespace: string, name: string): string {
  return `re-run the pod's init container: on Kubernetes, kubectl delete pod -n ${namespace} ${name} (it restarts with its rules); in a network namespace, nodemesh init --pod-name ${name} --pod-namespace ${namespace} inside it`;
}

export function splitPod(key: string): [string, string] {
  const parts = key.split("/");
  if (parts.length !== 2 || !parts[0] || !parts[1]) {
    throw new HttpError(400, "BAD_POD", `pod must be NAMESPACE/NAME, not "${key}"`, "pod");
  }
  return parts as [string, string];
}

// ---------------------------------------------------------------- rules

/** iptables-save without counters and comments: what the rule builder renders. */
function withoutCounters(dump: string): string {
  return dump
    .split("\n")
    .filter((l) => !l.startsWith("#"))
    .map((l) => l.replace(/^\[\d+:\d+\] /, "").replace(/^(:\S+ \S+) \[\d+:\d+\]$/, "$1 [0:0]"))
    .join("\n")
    .trim();
}

/** The exclusions our chains carry (the rule builder's comments name each kind). */
export function exclusionsOfRules(dump: string): RedirectConfig {
  const lists = { outboundPorts: [] as string[], inboundPorts: [] as string[], outboundCidrs: [] as string[] };
  for (const line of withoutCounters(dump).split("\n")) {
    const port = /--dport (\S+)/.exec(line)?.[1];
    if (line.includes('"nodemesh: excluded outbound port"') && port) lists.outboundPorts.push(port);
    else if (line.includes('"nodemesh: excluded inbound port"') && port) lists.inboundPorts.push(port);
    else if (line.includes('"nodemesh: excluded outbound cidr"')) {
      lists.outboundCidrs.push(/-d (\S+)/.exec(line)?.[1] ?? "0.0.0.0/0");
    }
  }
  return parseExclusions({
    outboundPorts: lists.outboundPorts.join(","),
    inboundPorts: lists.inboundPorts.join(","),
    outboundCidrs: lists.outboundCidrs.join(","),
  });
}

const hasChain = (dump: string, chain: string) => new RegExp(`^:${chain} `, "m").test(dump);
const ports = (ranges: readonly PortRange[]) =>
  ranges.map((r) => (r.first === r.last ? `${r.first}` : `${r.first}:${r.last}`)).join(",") || "none";
const cidrs = (list: readonly Cidr[]) => list.map((c) => `${c.address}/${c.prefixLength}`).join(",") || "none";

/** The verdicts on a pod's tables: our chains there, first, and exactly as `nodemesh init` writes them. */
export function rulesFindings(dump: string, pod: Pick<EnrolledPod, "excludeInboundPorts">, subject: string): Finding[] {
  const actual = withoutCounters(dump);
  const outbound = hasChain(actual, OUTBOUND_CHAIN);
  const inbound = hasChain(actual, INBOUND_CHAIN);
  const [namespace, name] = subject.replace(/^pod /, "").split("/") as [string, string];
  const fix = initFix(namespace, name);
  if (!outbound && !inbound) {
    return [
      {
        verdict: "error",
        check: "rules",
        subject,
        message: `no interception rules in the pod's nat table (no ${OUTBOUND_CHAIN}, no ${INBOUND_CHAIN}): its traffic bypasses the mesh`,
        fix,
      },
    ];
  }
  const config = exclusionsOfRules(actual);
  const scope = outbound ? "all" : "inbound";
  const expected = withoutCounters(buildTables(actual, config, scope));
  const findings: Finding[] = [];
  if (expected !== actual) {
    const want = expected.split("\n");
    const have = actual.split("\n");
    const missing = want.filter((l) => !have.includes(l));
    const extra = have.filter((l) => !want.includes(l) && /NODEMESH_/.test(l));
    const at = want.findIndex((l, i) => l !== have[i]);
    const what = [
      ...(missing.length ? [`missing or moved: ${missing.join(" | ")}`] : []),
      ...(extra.length ? [`unexpected: ${extra.join(" | ")}`] : []),
    ];
    // Same rules, another order: say where the first one out of place is.
    if (what.length === 0) what.push(`out of order: "${want[at]}" belongs where the pod has "${have[at]}"`);
    findings.push({
      verdict: "error",
      check: "rules",
      subject,
      message: `the pod's rules differ from what nodemesh init installs (${what.join("; ")})`,
      fix,
    });
  } else {
    findings.push({
      verdict: "ok",
      check: "rules",
      subject,
      message: `${scope === "all" ? `${OUTBOUND_CHAIN} first in OUTPUT, the agent's connections in conntrack zone ${AGENT_CONNTRACK_ZONE}, ` : ""}${INBOUND_CHAIN} first in PREROUTING, in nodemesh init's order (excluded: outbound ports ${ports(config.excludeOutboundPorts)}, outbound CIDRs ${cidrs(config.excludeOutboundCidrs)}, inbound ports ${ports(config.excludeInboundPorts)})`,
    });
  }
  if (!outbound) {
    findings.push({
      verdict: "warning",
      check: "rules",
      subject,
      message: `no ${OUTBOUND_CHAIN}: outbound interception is not by iptables (the eBPF mode's programs are not checked here)`,
      fix: "bpftool cgroup show <the pod's cgroup> should list connect4 nodemesh programs (bpf/README.md)",
    });
  }
  const enrolled = ports(pod.excludeInboundPorts ?? []);
  if (enrolled !== ports(config.excludeInboundPorts)) {
    findings.push({
      verdict: "warning",
      check: "rules",
      subject,
      message: `the rules exclude inbound ports ${ports(config.excludeInboundPorts)}, the enrollment says ${enrolled}`,
      fix,
    });
  }
  return findings;
}

/** Would the pod's rules send a connection to ip:port to the agent? Read from the rules themselves. */
export function interceptionOf(dump: string, ip: string, port: number): { intercepted: boolean; reason: string } {
  const actual = withoutCounters(dump);
  if (!hasChain(actual, OUTBOUND_CHAIN)) {
    return hasChain(actual, INBOUND_CHAIN)
      ? {
          intercepted: true,
          reason: `no ${OUTBOUND_CHAIN} rules: outbound goes by the eBPF programs (assumed to send ${ip}:${port} to the agent)`,
        }
      : {
          intercepted: false,
          reason: `not intercepted: the pod has no interception rules, ${ip}:${port} is reached directly, outside the mesh`,
        };
  }
  if (ip.startsWith("127.")) return { intercepted: false, reason: `not intercepted: ${ip} is loopback (RETURN)` };
  const config = exclusionsOfRules(actual);
  if (inPortRanges(port, config.excludeOutboundPorts)) {
    return { intercepted: false, reason: `not intercepted: port ${port} is an excluded outbound port (RETURN)` };
  }
  const cidr = config.excludeOutboundCidrs.find((c) => inCidr(ip, c));
  if (cidr) {
    return {
      intercepted: false,
      reason: `not intercepted: ${ip} is in the excluded outbound CIDR ${cidr.address}/${cidr.prefixLength} (RETURN)`,
    };
  }
  return { intercepted: true, reason: `${OUTBOUND_CHAIN} redirects ${ip}:${port} to the agent's :${OUTBOUND_PORT}` };
}

function inCidr(ip: string, { address, prefixLength }: Cidr): boolean {
  const n = (a: string) => a.split(".").reduce((acc, o) => acc * 256 + Number(o), 0);
  const mask = prefixLength === 0 ? 0 : (0xffffffff << (32 - prefixLength)) >>> 0;
  return (n(ip) & mask) >>> 0 === (n(address) & mask) >>> 0;
}

// ---------------------------------------------------------------- listeners

/** Ports in state LISTEN in a /proc/net/tcp table. */
export function listeningPorts(procNetTcp: string): Set<number> {
  const out = new Set<number>();
  for (const line of procNetTcp.split("\n").slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f[3] === "0A" && f[1]) out.add(Number.parseInt(f[1].split(":")[1] ?? "", 16));
  }
  return out;
}

async function listenerFindings(src: DiagnosisSources, pod: StoredPod, subject: string): Promise<Finding[]> {
  let listening: Set<number>;
  try {
    const ns = Netns.open(pod.netnsPath);
    try {
      // /proc/thread-self/net is the namespace of the thread that opens it: this one, inside the pod's.
      listening = listeningPorts(withNetns(ns, () => readFileSync("/proc/thread-self/net/tcp", "utf8")));
    } finally {
      ns.close();
    }
  } catch (err) {
    return [
      {
        verdict: "error",
        check: "listeners",
        subject,
        message: `cannot open the pod's network namespace ${pod.netnsPath}: ${(err as Error).message}`,
        fix: "the pod is gone or was recreated: re-enroll it (or delete it on Kubernetes)",
      },
    ];
  }
  const missing = LISTENER_PORTS.filter((p) => !listening.has(p));
  const workerProblems = (await src.health()).filter((p) => p.includes(`pod ${pod.namespace}/${pod.name}`));
  const fix = "restart the agent (it reopens the listeners of every enrolled pod), or re-run the pod's init container";
  if (missing.length > 0 || workerProblems.length > 0) {
    return [
      {
        verdict: "error",
        check: "listeners",
        subject,
        message: [
          ...(missing.length > 0 ? [`nothing listens on ${missing.join(", ")} in the pod's namespace`] : []),
          ...workerProblems,
        ].join("; "),
        fix,
      },
    ];
  }
  return [
    {
      verdict: "ok",
      check: "listeners",
      subject,
      message: `the agent's listeners ${LISTENER_PORTS.join(", ")} listen in the pod's namespace`,
    },
  ];
}

// ---------------------------------------------------------------- explain

export async function explain(src: DiagnosisSources, body: unknown): Promise<DetailedExplanation> {
  const req = explainRequestOf(body);
  const [namespace, name] = splitPod(req.pod);
  const pod = src.pod(namespace, name);
  if (!pod) {
    throw new HttpError(404, "POD_NOT_ENROLLED", `pod ${req.pod} is not enrolled with the agent of node ${src.node}`);
  }
  const url = new URL(req.url);
  const ip = url.hostname;
  const port = url.port === "" ? 80 : Number(url.port);
  let dump: string;
  try {
    dump = await (src.ruleTables ?? ((path) => saveTables({ netnsPath: path })))(pod.netnsPath);
  } catch (err) {
    throw new HttpError(500, "RULES_UNREADABLE", `cannot read the pod's iptables rules: ${(err as Error).message}`);
  }
  const { snapshot, traffic } = src.snapshot();
  const shared = src.shared();
  const from: PodContext = {
    key: `${pod.namespace}/${pod.name}`,
    pod,
    workload: { name: workloadName(pod), namespace: pod.namespace },
    // Never used by the decisions explained: they read the pod, not its sockets.
    netns: undefined as never,
    handshakes: undefined as never,
  };
  const now = Date.now();
  return explainRequest({
    snapshot,
    traffic,
    from,
    method: req.method,
    ip,
    port,
    target: `${url.pathname}${url.search}`,
    headers: req.headers,
    interception: interceptionOf(dump, ip, port),
    nextEndpoint: (backend, hashKey) => nextPick(shared, backend, hashKey, now),
    ejected: (e: Endpoint) => shared?.isEjected(e.slot, now) ?? false,
  });
}

/**
 * The balancer's next pick, taken by the balancer itself over a view of the shared counters whose
 * rotation is read, not advanced: the workers' next request gets the same one (unless another
 * request comes first). Least request draws two at random: not knowable beforehand.
 */
export function nextPick(
  shared: SharedState | undefined,
  backend: Backend,
  hashKey: string | undefined,
  nowMs: number,
): Endpoint | undefined | string {
  if (!shared) return "unknown (the data plane is not running)";
  if (backend.policy.lb.type === "LeastRequest") {
    return "one of two drawn at random, the one with the lower latency × requests in flight (least request: not knowable beforehand)";
  }
  const view = Object.create(shared) as SharedState;
  let step = 0;
  view.nextRoundRobin = (slot: number) => (shared.roundRobinPosition(slot) + step++) >>> 0;
  return new EndpointPicker(view).pick(backend, { tried: [], hashKey, nowMs });
}

const METHOD = /^[A-Z]{1,16}$/;

function explainRequestOf(body: unknown): ExplainRequest {
  const b = (body ?? {}) as Partial<Record<keyof ExplainRequest, unknown>>;
  if (typeof b.pod !== "string") throw new HttpError(400, "BAD_REQUEST", "pod: NAMESPACE/NAME is required", "pod");
  if (typeof b.method !== "string" || !METHOD.test(b.method)) {
    throw new HttpError(400, "BAD_REQUEST", "method: an HTTP method in capitals, e.g. GET", "method");
  }
  if (typeof b.url !== "string" || !URL.canParse(b.url)) {
    throw new HttpError(400, "BAD_REQUEST", "url: http://ADDRESS[:PORT]/PATH is required", "url");
  }
  const url = new URL(b.url);
  if (url.protocol !== "http:" || !isIPv4(url.hostname)) {
    throw new HttpError(
      400,
      "BAD_REQUEST",
      `url: http:// and an IPv4 address (the Service VIP or any other), not ${url.protocol}//${url.hostname}`,
      "url",
    );
  }
  const headers: Record<string, string> = {};
  const given = b.headers ?? {};
  if (typeof given !== "object" || Array.isArray(given)) {
    throw new HttpError(400, "BAD_REQUEST", "headers: an object of name → value", "headers");
  }
  for (const [k, v] of Object.entries(given as Record<string, unknown>)) {
    if (typeof v !== "string") throw new HttpError(400, "BAD_REQUEST", `headers.${k}: must be a string`, "headers");
    headers[k.toLowerCase()] = v;
  }
  return { pod: b.pod, method: b.method, url: b.url, headers };
}
