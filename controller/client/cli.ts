// `nodemesh apply | get | delete | nodes | status | top | edges | check | explain`: a small
// kubectl for the controller's REST API (connection.ts finds it and speaks to it); check and
// explain also ask the agent of the pod's node (diagnose.ts).
// Errors print the server's message (a Kubernetes Status), each bad field once. Exit codes: 0 done,
// 1 failed, 2 bad flags or arguments.

import { readFileSync } from "node:fs";
import { type ParseArgsOptionsConfig, parseArgs } from "node:util";
import { parseAllDocuments, stringify } from "yaml";
import type { PeerSummary } from "../../api/agent-service.ts";
import { canonicalJson } from "../../api/canonical-json.ts";
import { apiVersionOf, KINDS, type KindInfo } from "../../api/resources.ts";
import type { ServiceGraph } from "../../api/service-graph.ts";
import { RetryPolicy } from "../../api/traffic.ts";
import { ApiError, CliError, type Client, call, DEFAULT_SERVER, resolveClient } from "./connection.ts";
import {
  type CheckScope,
  check,
  DEFAULT_AGENT,
  explain,
  parseHeader,
  printExplanation,
  printFindings,
  REACH_AGENT,
} from "./diagnose.ts";

const GRAPH_PATH = "/apis/nodemesh.io/v1alpha1/servicegraph";

const CONNECTION = `Connection (the first that is set wins):
  --server URL          controller REST address; else $NODEMESH_SERVER, else the current
                        context of the context file, else ${DEFAULT_SERVER}
  --token TOKEN         bearer token; else $NODEMESH_TOKEN, else the context's token (sent only
                        to the context's own server)
  --context NAME        use this context of the context file instead of its current-context
Context file (YAML): $NODEMESH_CONFIG, else ~/.config/nodemesh/config ($XDG_CONFIG_HOME if set):
  current-context: lab
  contexts:
    lab: { server: "http://10.250.0.2:8080", token: "..." }
Without --tokens the controller listens on 127.0.0.1 only: from another host, start it with
--address 0.0.0.0 --tokens FILE.`;
const NAMESPACE = `  -n, --namespace NS    namespace (default: "default")`;
const HELP_FLAG = "  -h, --help            show this help";

export const HELP: Record<ClientCommand, string> = {
  apply: `Usage: nodemesh apply -f FILE [options]\n\nCreates or updates every object in FILE (YAML or JSON, one or many documents; - reads stdin).\nEvery document is checked, by the controller too (a server dry run), before any is written.\n  -f, --filename FILE   the objects\n  --dry-run[=server]    send them with ?dryRun=All: the controller validates them, checks them\n                        against the other objects and writes nothing; prints what would not be\n                        accepted and what each agent's table would gain (+), change (~) or lose\n  --dry-run=none        a plain apply (kubectl's spelling)\n${NAMESPACE}\n${HELP_FLAG}\n\n${CONNECTION}\n`,
  get: `Usage: nodemesh get KIND [NAME] [options]\n\nLists objects of KIND (${KINDS.map((k) => k.plural).join(", ")}), or shows one.\n  -A, --all-namespaces  list across namespaces\n  -o, --output FORMAT   table (default), wide, yaml or json; wide adds a TrafficPolicy's\n                        effective retry settings (defaults filled in)\n${NAMESPACE}\n${HELP_FLAG}\n\n${CONNECTION}\n`,
  delete: `Usage: nodemesh delete KIND NAME [options]\n\n${NAMESPACE}\n${HELP_FLAG}\n\n${CONNECTION}\n`,
  nodes: `Usage: nodemesh nodes [options]\n       nodemesh nodes release NODE [options]\n\nThe nodes' agents: facts and the node-to-node RTT matrix (for a mesh of more than 40 nodes, each\nnode's probes summed up instead: how many peers, unreachable, with loss, median and slowest RTT;\n-o json lists every probe).\n  -o, --output FORMAT   table (default) or json\n${HELP_FLAG}\n\n\`release NODE\` frees the node name from the agent credential it is bound to (needs the write role)\nand ends that node's stream: the next agent to connect as NODE binds it. For a reinstalled node\nwhose state dir (and so its node secret) was lost. The node certificates issued under that binding\nnever let a stream in again: the agent bootstraps with the token.\n\n${CONNECTION}\n`,
  top: `Usage: nodemesh top [options]\n\nLive golden signals per service (like linkerd viz stat): success rate, requests per second,\np50 and p99 latency over the window, from the agents' traffic reports.\n  --window SECONDS      window, 10 to 900 (default: 60)\n  -w, --watch           refresh every 2 s until Ctrl-C\n  -o, --output FORMAT   table (default) or json\n${HELP_FLAG}\n\n${CONNECTION}\n`,
  edges: `Usage: nodemesh edges [options]\n\nWho talks to whom: every edge of the service graph (workload → service → workload) with its\nrequest rate, success rate, latency and mTLS state over the window.\n  --window SECONDS      window, 10 to 900 (default: 60)\n  -o, --output FORMAT   table (default) or json\n${HELP_FLAG}\n\n${CONNECTION}\n`,
  ca: `Usage: nodemesh ca [options]\n       nodemesh ca rotate [options]\n\nThe workload CA's roots (SHA-256 fingerprints, the signing one first) and a root rotation under way.\n\`rotate\` starts one (needs the write role): a new root is trusted at once, signs certificates one\ncertificate lifetime later, and the old root is dropped one lifetime after that, so that every\nagent renewed its certificates before each step (docs/security.md).\n  -o, --output FORMAT   table (default) or json\n${HELP_FLAG}\n\n${CONNECTION}\n`,
  check: `Usage: nodemesh check [POD | -n NS | --all] [options]\n\nChecks the mesh as it is now, each finding a line: its verdict (ok, warning, error), what was checked\nand, when not ok, a fix (a command, or the field to change). Exit code 1 when any is an error.\n  POD                   a pod, as NAME (in -n NS) or NS/NAME: its rules, listeners and enrollment,\n                        its node's agent, and the objects of its namespace\n  -n, --namespace NS    every enrolled pod of NS, and the objects of NS\n  --all                 every enrolled pod, every node's agent, every object (also without arguments)\n  --agent URL           the admin port of the agent of the pods' node (default: ${DEFAULT_AGENT});\n                        repeat it for pods on several nodes\n  -o, --output FORMAT   table (default) or json\n${HELP_FLAG}\n\nFrom the controller: it is healthy and ready; each agent connected and on its latest configuration,\nand the objects it left out; objects whose references name missing Services (routes' parents and\nbackends, policies' targets), route rules that never match, policies that select no enrolled pod.\nFrom the agent: the pod enrolled; its interception rules present, first, and as nodemesh init\nwrites them; the agent's listeners (15001, 15006, 15008) listening in the pod's namespace; the\nagent's link to the controller. A controller or an agent that does not answer is a finding too.\n\n${REACH_AGENT}\n\n${CONNECTION}\n`,
  explain: `Usage: nodemesh explain --from POD METHOD URL [-H 'name: value']... [options]\n\nWhat the agent of POD's node would do with this request, decided by the data plane's own code\nagainst its live configuration (nothing is sent, no balancer pick or rate-limit token is taken):\ninterception (the pod's rules: an excluded port or CIDR is not intercepted) → Service (VIP:port;\nan address no Service owns is passthrough) → route rules in order, the one taken and which\ncondition failed in each earlier one → backend and weights (a split lists every weight and\nfollows the heaviest) → policy (timeouts, retries, circuit breaker, rate limit, faults) →\nendpoints with their nodes, and the one the balancer picks next when that is knowable.\n  --from POD            the pod the request leaves from: NAME (in -n NS) or NS/NAME\n  METHOD URL            e.g. GET http://10.96.0.10/v2 (an IPv4 address: a Service VIP or any other)\n  -H, --header 'N: V'   a request header (repeatable), e.g. -H 'end-user: jason'\n  --agent URL           the admin port of the agent of POD's node (default: ${DEFAULT_AGENT})\n${NAMESPACE}\n  -o, --output FORMAT   table (default) or json\n${HELP_FLAG}\n\n${REACH_AGENT}\n`,
  status: `Usage: nodemesh status [options]\n\nAgents: connected, applied configuration version against the controller's, last NACK.\n  -o, --output FORMAT   table (default) or json\n${HELP_FLAG}\n\n${CONNECTION}\n`,
};

const COMMON_OPTIONS = {
  server: { type: "string" },
  token: { type: "string" },
  context: { type: "string" },
  help: { type: "boolean", short: "h" },
} as const satisfies ParseArgsOptionsConfig;
const namespace = { namespace: { type: "string", short: "n" } } as const;
const output = { output: { type: "string", short: "o", default: "table" } } as const;
const window = { window: { type: "string", default: "60" } } as const;

/** Each command's flags: a flag that would do nothing is refused, not silently ignored. */
export const OPTIONS = {
  apply: {
    ...COMMON_OPTIONS,
    ...namespace,
    filename: { type: "string", short: "f" },
    "dry-run": { type: "string" },
  },
  get: { ...COMMON_OPTIONS, ...namespace, ...output, "all-namespaces": { type: "boolean", short: "A" } },
  delete: { ...COMMON_OPTIONS, ...namespace },
  nodes: { ...COMMON_OPTIONS, ...output },
  ca: { ...COMMON_OPTIONS, ...output },
  status: { ...COMMON_OPTIONS, ...output },
  top: { ...COMMON_OPTIONS, ...output, ...window, watch: { type: "boolean", short: "w" } },
  edges: { ...COMMON_OPTIONS, ...output, ...window },
  check: {
    ...COMMON_OPTIONS,
    ...namespace,
    ...output,
    all: { type: "boolean" },
    agent: { type: "string", multiple: true },
  },
  explain: {
    help: COMMON_OPTIONS.help,
    ...namespace,
    ...output,
    from: { type: "string" },
    header: { type: "string", short: "H", multiple: true },
    agent: { type: "string" },
  },
} as const satisfies Record<string, ParseArgsOptionsConfig>;
export type ClientCommand = keyof typeof OPTIONS;

const OUTPUTS: Record<ClientCommand, readonly string[]> = {
  apply: [],
  delete: [],
  get: ["table", "wide", "yaml", "json"],
  nodes: ["table", "json"],
  ca: ["table", "json"],
  status: ["table", "json"],
  top: ["table", "json"],
  edges: ["table", "json"],
  check: ["table", "json"],
  explain: ["table", "json"],
};

/** Bad flags or arguments: exit code 2, as for the other commands. */
class UsageError extends CliError {}

function kindFor(name: string): KindInfo {
  const lower = name.toLowerCase();
  const kind = KINDS.find(
    (k) => k.plural === lower || k.kind.toLowerCase() === lower || `${k.kind.toLowerCase()}s` === lower,
  );
  if (!kind) throw new CliError(`unknown kind "${name}"; known: ${KINDS.map((k) => k.plural).join(", ")}`);
  return kind;
}

function collectionPath(kind: KindInfo, namespace: string | undefined): string {
  const base = `/apis/${apiVersionOf(kind)}`;
  return kind.namespaced && namespace ? `${base}/namespaces/${namespace}/${kind.plural}` : `${base}/${kind.plural}`;
}

type Obj = {
  kind?: string;
  metadata?: { name?: string; namespace?: string; resourceVersion?: string };
  spec?: unknown;
};

/** The stored spec has the schema's defaults filled in; compare the file's spec the same way. */
function sameSpec(kind: KindInfo, stored: unknown, wanted: unknown): boolean {
  const parsed = kind.spec.safeParse(wanted);
  return parsed.success && canonicalJson(stored) === canonicalJson(parsed.data);
}

interface Document {
  obj: Obj & { metadata: { name: string; namespace: string } };
  kind: KindInfo;
}

/** Every document of the file, checked before anything is sent: a bad one stops the whole apply. */
function readDocuments(file: string, namespace: string): Document[] {
  const text = readFileSync(file === "-" ? 0 : file, "utf8");
  const docs: Document[] = [];
  parseAllDocuments(text).forEach((doc, i) => {
    const where = `${file}, document ${i + 1}`;
    if (doc.errors.length > 0) throw new CliError(`${where}: ${doc.errors[0].message}`);
    const obj = doc.toJS() as Obj | null;
    if (!obj) return;
    if (typeof obj.kind !== "string" || !obj.metadata?.name)
      throw new CliError(`${where}: every document needs kind and metadata.name`);
    const kind = kindFor(obj.kind);
    obj.metadata.namespace ??= namespace;
    docs.push({ obj: obj as Document["obj"], kind });
  });
  return docs;
}

const DRY_RUN = "?dryRun=All";

/**
 * Whether the controller's API declares the `dryRun` parameter on creating and replacing each of
 * these kinds (read from /openapi/v3, as kubectl does): one that does not would write for real.
 */
async function offersServerDryRun(c: Client, kinds: KindInfo[]): Promise<KindInfo | undefined> {
  type Operation = { parameters?: { name?: string; in?: string }[] };
  type PathItem = Operation & { post?: Operation; put?: Operation };
  const doc = (await call(c, "GET", "/openapi/v3")) as { paths?: Record<string, PathItem> };
  const hasDryRun = (path: string, method: "post" | "put") => {
    const item = doc.paths?.[path];
    const params = [...(item?.parameters ?? []), ...(item?.[method]?.parameters ?? [])];
    return params.some((p) => p.name === "dryRun" && p.in === "query");
  };
  for (const kind of new Set(kinds)) {
    const collection = collectionPath(kind, "{namespace}");
    if (!hasDryRun(collection, "post") || !hasDryRun(`${collection}/{name}`, "put")) return kind;
  }
  return undefined;
}

async function apply(c: Client, file: string, namespace: string, dryRun: boolean): Promise<void> {
  const docs = readDocuments(file, namespace);
  const lacking =
    docs.length > 1 || dryRun
      ? await offersServerDryRun(
          c,
          docs.map((d) => d.kind),
        )
      : undefined;
  if (dryRun) {
    if (lacking) {
      throw new CliError(
        `--dry-run: server-side dry run is not available yet (the controller at ${c.server} offers no dryRun ` +
          `parameter for ${lacking.plural}); nothing was applied`,
      );
    }
    await send(c, docs, "dry run");
    return;
  }
  // Several documents: each goes through the controller's own checks first (a server dry run,
  // which writes nothing), so one it refuses stops the apply before any is written. Checks between
  // the documents themselves (two Services on one VIP) come at the writes.
  if (docs.length > 1 && !lacking) await send(c, docs, "check");
  await send(c, docs, "write");
}

/** Creates or replaces each document: for real, as a dry run that prints its outcome, or as a silent check. */
async function send(c: Client, docs: Document[], mode: "write" | "dry run" | "check"): Promise<void> {
  const query = mode === "write" ? "" : DRY_RUN;
  const suffix = mode === "dry run" ? " (server dry run)" : "";
  const report = (line: string, answer?: unknown) => {
    if (mode === "check") return;
    console.log(`${line}${suffix}`);
    if (mode === "dry run" && answer) printDryRun(answer as Obj);
  };
  for (const { obj, kind } of docs) {
    const ns = obj.metadata.namespace;
    const path = `${collectionPath(kind, ns)}/${obj.metadata.name}`;
    const existing = (await call(c, "GET", path).catch((err: Error) => {
      if (err instanceof ApiError && err.status === 404) return undefined;
      throw err;
    })) as Obj | undefined;
    const label = `${kind.kind.toLowerCase()}/${obj.metadata.name}`;
    if (!existing) {
      report(`${label} created`, await call(c, "POST", `${collectionPath(kind, ns)}${query}`, obj));
    } else if (sameSpec(kind, existing.spec, obj.spec)) {
      report(`${label} unchanged`);
    } else {
      // Replace with the version we read: a concurrent writer makes this fail with 409, not lose a change.
      const replacement = {
        ...obj,
        metadata: { ...obj.metadata, resourceVersion: existing.metadata?.resourceVersion },
      };
      report(`${label} configured`, await call(c, "PUT", `${path}${query}`, replacement));
    }
  }
}

function dryRunFlag(value: string | undefined): boolean {
  if (value === undefined || value === "none") return false;
  if (value === "server") return true;
  throw new UsageError(`--dry-run=${value}: the choices are server and none (see nodemesh apply --help)`);
}

/** Under a dry run's line: the conditions that are not True, and what the agents would receive. */
function printDryRun(answer: Obj): void {
  const status = (answer as { status?: DryRunStatus }).status;
  for (const c of status?.conditions ?? []) {
    if (c.status !== "True") console.log(`  ${c.type}: ${c.status} (${c.reason}) ${c.message ?? ""}`.trimEnd());
  }
  const dry = status?.dryRun;
  if (!dry) return;
  const who = dry.agents.length > 0 ? dry.agents.join(", ") : "no connected agent";
  if (dry.changes.length === 0) console.log(`  ${who}: no table change`);
  else console.log(`  ${who} would receive: ${dry.changes.join(", ")}`);
}

type DryRunStatus = {
  conditions?: { type: string; status: string; reason?: string; message?: string }[];
  dryRun?: { agents: string[]; changes: string[] };
};

function age(timestamp: string | undefined): string {
  if (!timestamp) return "";
  const s = Math.max(0, Math.round((Date.now() - Date.parse(timestamp)) / 1000));
  return s < 120 ? `${s}s` : s < 7200 ? `${Math.round(s / 60)}m` : `${Math.round(s / 3600)}h`;
}

function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return rows
    .map((r) =>
      r
        .map((cell, i) => (cell ?? "").padEnd(widths[i]))
        .join("   ")
        .trimEnd(),
    )
    .join("\n");
}

type Listed = {
  metadata: { name: string; namespace: string; creationTimestamp?: string };
  // biome-ignore lint/suspicious/noExplicitAny: each kind's spec, read for its own columns
  spec?: any;
  status?: { agentsApplied?: number; agentsTotal?: number; agentsRejected?: number };
};

type Ref = { name: string; namespace?: string; port?: number };
const refs = (list: Ref[] | undefined) =>
  (list ?? []).map((r) => `${r.namespace ? `${r.namespace}/` : ""}${r.name}${r.port ? `:${r.port}` : ""}`).join(",");

interface Columns {
  headers: string[];
  cells(spec: Listed["spec"]): string[];
}
const ROUTE_COLUMNS: Columns = {
  headers: ["PARENTS", "RULES"],
  cells: (spec) => [refs(spec?.parentRefs), String(spec?.rules?.length ?? 0)],
};

/** The columns between NAME and APPLIED, per kind. */
const COLUMNS: Record<string, Columns> = {
  Service: {
    headers: ["VIP", "PORTS"],
    cells: (spec) => [
      spec?.vip ?? "",
      // No protocol: the agent detects it.
      (spec?.ports ?? [])
        .map((p: { port: number; protocol?: string }) => `${p.port}/${p.protocol ?? "auto"}`)
        .join(","),
    ],
  },
  HTTPRoute: ROUTE_COLUMNS,
  GRPCRoute: ROUTE_COLUMNS,
  TrafficPolicy: { headers: ["TARGETS"], cells: (spec) => [refs(spec?.targetRefs)] },
};

/**
 * What `-o wide` adds after a kind's columns. A TrafficPolicy's retries as the agents apply them:
 * the schema fills in what the object leaves out, so a bare `retries: {}` shows its defaults.
 */
const WIDE_COLUMNS: Record<string, Columns> = {
  TrafficPolicy: {
    headers: ["ATTEMPTS", "RETRY ON", "BACKOFF", "BUDGET"],
    cells: (spec) => {
      if (spec?.retries === undefined) return ["none", "-", "-", "-"]; // no retries block: no retries
      const parsed = RetryPolicy.safeParse(spec.retries);
      if (!parsed.success) return ["?", "?", "?", "?"];
      const r = parsed.data;
      return [
        String(r.attempts),
        r.retryOn.join(","),
        `${r.backoff.baseInterval}..${r.backoff.maxInterval}`,
        `${r.budget.percent}% (min ${r.budget.minConcurrency})`,
      ];
    },
  },
};

const NO_COLUMNS: Columns = { headers: [], cells: () => [] };

async function get(c: Client, kindName: string, name: string | undefined, ns: string | undefined, output: string) {
  const kind = kindFor(kindName);
  const data = (await call(c, "GET", name ? `${collectionPath(kind, ns)}/${name}` : collectionPath(kind, ns))) as {
    items?: unknown[];
  };
  if (output === "json") return console.log(JSON.stringify(data, null, 2));
  if (output === "yaml") return process.stdout.write(stringify(data));
  const items = (name ? [data] : (data.items ?? [])) as Listed[];
  if (items.length === 0) return console.log(`No ${kind.plural} found.`);
  const columns = COLUMNS[kind.kind] ?? NO_COLUMNS;
  const wide = output === "wide" ? (WIDE_COLUMNS[kind.kind] ?? NO_COLUMNS) : NO_COLUMNS;
  const rows = [["NAMESPACE", "NAME", ...columns.headers, ...wide.headers, "APPLIED", "AGE"]];
  for (const o of items) {
    const rejected = o.status?.agentsRejected ? `, ${o.status.agentsRejected} rejected` : "";
    const applied =
      o.status?.agentsTotal !== undefined ? `${o.status.agentsApplied ?? 0}/${o.status.agentsTotal}${rejected}` : "";
    rows.push([
      o.metadata.namespace,
      o.metadata.name,
      ...columns.cells(o.spec),
      ...wide.cells(o.spec),
      applied,
      age(o.metadata.creationTimestamp),
    ]);
  }
  console.log(table(rows));
}

/** What the controller serves at /apis/nodemesh.io/v1alpha1/agents (controller/config AgentStatus). */
interface NodeView {
  node: string;
  connected: boolean;
  appliedVersion?: string;
  appliedAt?: string;
  currentVersion: string;
  lastNack?: { version: string; error: string; at: string };
  rejected?: { kind: string; namespace: string; name: string; reason: string }[];
  facts?: { cpuModel?: string; cpuCores?: number; memoryBytes?: number; os?: string; kernel?: string };
  /** Absent when only summaries were asked for (`?peers=summary`). */
  peers?: Array<{ nodeName: string; rttMs: number; lossRatio: number; error: string }>;
  peerSummary?: PeerSummary;
}

/**
 * `peers`: "summary" leaves out each node's probes but their summary (a large mesh's matrix is
 * nodes²), "matrix" does so only for a mesh too large to draw one; `pods`: "count" leaves out each
 * node's pods but their number.
 */
async function agents(c: Client, peers: "all" | "summary" | "matrix", pods: "all" | "count"): Promise<NodeView[]> {
  const path = `/apis/nodemesh.io/v1alpha1/agents?peers=${peers}&pods=${pods}`;
  return ((await call(c, "GET", path)) as { items: NodeView[] }).items;
}

async function nodes(c: Client, output: string): Promise<void> {
  // JSON lists everything. The tables show no pods, and every probe only in a small mesh's matrix.
  if (output === "json") return console.log(JSON.stringify(await agents(c, "all", "all"), null, 2));
  const list = await agents(c, "matrix", "count");
  if (list.length === 0) return console.log("No agents have connected.");
  const rows = [["NODE", "CONNECTED", "CPU", "CORES", "MEMORY", "OS", "KERNEL"]];
  for (const n of list) {
    const f = n.facts ?? {};
    const mem = f.memoryBytes ? `${(f.memoryBytes / 2 ** 30).toFixed(1)}Gi` : "";
    rows.push([
      n.node,
      String(n.connected),
      f.cpuModel ?? "",
      String(f.cpuCores ?? ""),
      mem,
      f.os ?? "",
      f.kernel ?? "",
    ]);
  }
  console.log(table(rows));
  // The controller left the probes out: too many nodes for a matrix.
  if (list.some((n) => !n.peers)) return console.log(`\n${table(peerSummaries(list))}`);
  const names = list.map((n) => n.node);
  const matrix = [["RTT ms (from \\ to)", ...names]];
  for (const n of list) {
    matrix.push([
      n.node,
      ...names.map((to) => {
        if (to === n.node) return "-";
        const p = n.peers?.find((peer) => peer.nodeName === to);
        if (!p) return "?";
        if (p.error) return `error: ${p.error}`;
        if (p.lossRatio >= 1) return "lost";
        return `${p.rttMs.toFixed(3)}${p.lossRatio ? ` (${Math.round(p.lossRatio * 100)}% loss)` : ""}`;
      }),
    ]);
  }
  console.log(`\n${table(matrix)}`);
}

/** Each node's latest probes summed up, one row per node (a mesh too large for the matrix). */
function peerSummaries(list: NodeView[]): string[][] {
  const ms = (v: number | null | undefined) => (v === null || v === undefined ? "" : v.toFixed(3));
  const rows = [["RTT FROM", "PEERS PROBED", "UNREACHABLE", "WITH LOSS", "MEDIAN MS", "SLOWEST MS", "SLOWEST PEER"]];
  for (const n of list) {
    const s = n.peerSummary;
    rows.push([
      n.node,
      String(s?.probed ?? ""),
      String(s?.unreachable ?? ""),
      String(s?.lossy ?? ""),
      ms(s?.rttMedianMs),
      ms(s?.rttMaxMs),
      s?.slowestPeer ?? "",
    ]);
  }
  return rows;
}

async function status(c: Client, output: string): Promise<void> {
  // The table shows no pods; its JSON keeps them, as it always had.
  const list = await agents(c, "summary", output === "json" ? "all" : "count");
  if (output === "json") return console.log(JSON.stringify(list, null, 2));
  if (list.length === 0) return console.log("No agents have connected.");
  const rows = [["NODE", "CONNECTED", "APPLIED VERSION", "CONTROLLER VERSION", "IN SYNC", "REJECTED", "LAST NACK"]];
  for (const n of list) {
    const inSync = n.appliedVersion === n.currentVersion ? "yes" : "no";
    const nack = n.lastNack ? `${n.lastNack.version}: ${n.lastNack.error}` : "";
    // The objects of the applied version the agent left out (each object's status says why).
    const rejected = (n.rejected ?? []).map((r) => `${r.kind}/${r.namespace}/${r.name}`).join(",");
    rows.push([n.node, String(n.connected), n.appliedVersion ?? "", n.currentVersion, inSync, rejected, nack]);
  }
  console.log(table(rows));
}

const ms = (v: number | null) => (v === null ? "-" : `${v.toFixed(v < 10 ? 2 : 0)}ms`);
const percent = (errorRate: number, rps: number) => (rps > 0 ? `${((1 - errorRate) * 100).toFixed(2)}%` : "-");

async function graph(c: Client, windowSeconds: string): Promise<ServiceGraph> {
  return (await call(c, "GET", `${GRAPH_PATH}?window=${encodeURIComponent(windowSeconds)}`)) as ServiceGraph;
}

async function top(c: Client, windowSeconds: string, output: string): Promise<void> {
  const g = await graph(c, windowSeconds);
  if (output === "json") return console.log(JSON.stringify(g.services, null, 2));
  if (g.services.length === 0) return console.log(`No traffic in the last ${g.windowSeconds} s.`);
  const rows = [["SERVICE", "NAMESPACE", "PROTOCOL", "SUCCESS", "RPS", "P50", "P99"]];
  for (const s of g.services) {
    rows.push([
      s.name,
      s.namespace,
      s.protocol,
      percent(s.errorRate, s.requestsPerSecond),
      s.requestsPerSecond.toFixed(1),
      ms(s.p50Ms),
      ms(s.p99Ms),
    ]);
  }
  console.log(table(rows));
}

async function edges(c: Client, windowSeconds: string, output: string): Promise<void> {
  const g = await graph(c, windowSeconds);
  if (output === "json") return console.log(JSON.stringify(g.edges, null, 2));
  if (g.edges.length === 0) return console.log(`No traffic in the last ${g.windowSeconds} s.`);
  const name = (id: string) => id.replace(/^(svc|wl):/, "");
  const rows = [["SOURCE", "DESTINATION", "PROTOCOL", "SUCCESS", "RPS", "P50", "P99", "MTLS"]];
  for (const e of g.edges) {
    rows.push([
      `${e.source.startsWith("svc:") ? "service" : "workload"}/${name(e.source)}`,
      `${e.target.startsWith("svc:") ? "service" : "workload"}/${name(e.target)}`,
      e.protocol,
      percent(e.errorRate, e.requestsPerSecond),
      e.requestsPerSecond.toFixed(1),
      ms(e.p50Ms),
      ms(e.p99Ms),
      e.mtls ? "yes" : "no",
    ]);
  }
  console.log(table(rows));
}

/** The flags of every command, as parsed (each command accepts only its own). */
interface Values {
  server?: string;
  token?: string;
  context?: string;
  help?: boolean;
  namespace?: string;
  output: string;
  window: string;
  watch?: boolean;
  filename?: string;
  "dry-run"?: string;
  "all-namespaces"?: boolean;
  all?: boolean;
  agent?: string | string[];
  from?: string;
  header?: string[];
}

function readFlags(command: ClientCommand, argv: string[]): { values: Values; positionals: string[] } {
  try {
    // A bare --dry-run means the server's, the only one there is (kubectl: --dry-run=server).
    const args = argv.map((a) => (a === "--dry-run" ? "--dry-run=server" : a));
    const parsed = parseArgs({ args, allowPositionals: true, options: OPTIONS[command] });
    return { values: parsed.values as Values, positionals: parsed.positionals };
  } catch (err) {
    // Node's text for an unknown option goes on about positionals; the option is what matters.
    const unknown = /^Unknown option '([^']+)'/.exec((err as Error).message)?.[1];
    const problem = unknown ? `${command} has no option ${unknown}` : (err as Error).message;
    throw new UsageError(`${problem} (see nodemesh ${command} --help)`);
  }
}

/** NAME in -n NS, or NS/NAME. */
function podKey(pod: string, namespace: string | undefined): string {
  if (pod.includes("/")) {
    if (namespace !== undefined) throw new UsageError(`${pod} names its namespace: leave out -n`);
    return pod;
  }
  return `${namespace ?? "default"}/${pod}`;
}

function checkScope(positionals: string[], values: Values): CheckScope {
  if (positionals.length > 1) throw new UsageError("check takes at most one POD");
  const [pod] = positionals;
  if (pod !== undefined) {
    if (values.all) throw new UsageError("check: a POD or --all, not both");
    const [namespace, name] = podKey(pod, values.namespace).split("/") as [string, string];
    return { pod: { namespace, name } };
  }
  if (values.namespace !== undefined) {
    if (values.all) throw new UsageError("check: -n NS or --all, not both");
    return { namespace: values.namespace };
  }
  return { all: true };
}

function agentsOf(given: string | string[] | undefined): string[] {
  const list = given === undefined ? [DEFAULT_AGENT] : Array.isArray(given) ? given : [given];
  for (const a of list) {
    if (!URL.canParse(a) || !/^https?:$/.test(new URL(a).protocol)) {
      throw new UsageError(`--agent ${a}: an http:// URL, e.g. ${DEFAULT_AGENT}`);
    }
  }
  return list;
}

export async function runClient(command: ClientCommand, argv: string[]): Promise<number> {
  try {
    const { values, positionals } = readFlags(command, argv);
    if (values.help) {
      process.stdout.write(HELP[command]);
      return 0;
    }
    const outputs = OUTPUTS[command];
    if (outputs.length > 0 && !outputs.includes(values.output)) {
      throw new UsageError(`-o ${values.output}: the output format is one of ${outputs.join(", ")}`);
    }
    const c = resolveClient(values);
    const namespace = values.namespace ?? "default";
    switch (command) {
      case "apply":
        if (!values.filename) throw new UsageError("apply needs -f FILE");
        await apply(c, values.filename, namespace, dryRunFlag(values["dry-run"]));
        return 0;
      case "get":
        if (!positionals[0]) throw new UsageError("get needs a KIND, e.g. nodemesh get services");
        await get(c, positionals[0], positionals[1], values["all-namespaces"] ? undefined : namespace, values.output);
        return 0;
      case "delete": {
        if (positionals.length < 2) throw new UsageError("delete needs KIND and NAME");
        const kind = kindFor(positionals[0]);
        await call(c, "DELETE", `${collectionPath(kind, namespace)}/${positionals[1]}`);
        console.log(`${kind.kind.toLowerCase()}/${positionals[1]} deleted`);
        return 0;
      }
      case "nodes":
        if (positionals[0] === "release") {
          if (!positionals[1]) throw new CliError("nodes release needs a NODE");
          await call(c, "DELETE", `/apis/nodemesh.io/v1alpha1/nodebindings/${encodeURIComponent(positionals[1])}`);
          console.log(`node ${positionals[1]} released: the next agent to connect as ${positionals[1]} binds it`);
          return 0;
        }
        if (positionals.length > 0) throw new CliError(`unknown nodes subcommand ${positionals[0]} (try release)`);
        await nodes(c, values.output);
        return 0;
      case "ca": {
        if (positionals.length > 0 && positionals[0] !== "rotate")
          throw new CliError(`unknown ca subcommand ${positionals[0]} (try rotate)`);
        const path = "/apis/nodemesh.io/v1alpha1/rootrotations";
        const rotation = (
          positionals[0] === "rotate"
            ? await call(c, "POST", path)
            : ((await call(c, "GET", path)) as { items: unknown[] }).items[0]
        ) as { phase?: string; nextStepAt?: string; roots: string[] };
        if (values.output === "json") console.log(JSON.stringify(rotation, null, 2));
        else {
          console.log(
            rotation.phase ? `rotation: ${rotation.phase} (next step at ${rotation.nextStepAt})` : "rotation: none",
          );
          for (const [i, root] of rotation.roots.entries()) console.log(`${i === 0 ? "signing " : "trusted "} ${root}`);
        }
        return 0;
      }
      case "status":
        await status(c, values.output);
        return 0;
      case "top":
        await top(c, values.window, values.output);
        while (values.watch) {
          await new Promise((resolve) => setTimeout(resolve, 2000));
          process.stdout.write("\x1b[2J\x1b[H"); // clear the screen, as top does
          await top(c, values.window, values.output);
        }
        return 0;
      case "edges":
        await edges(c, values.window, values.output);
        return 0;
      case "check": {
        const findings = await check(c, checkScope(positionals, values), agentsOf(values.agent));
        if (values.output === "json") console.log(JSON.stringify(findings, null, 2));
        else printFindings(findings);
        return findings.some((f) => f.verdict === "error") ? 1 : 0;
      }
      case "explain": {
        if (!values.from) throw new UsageError("explain needs --from POD (the pod the request leaves from)");
        if (positionals.length !== 2) throw new UsageError("explain needs METHOD and URL, e.g. GET http://10.96.0.10/");
        const headers: Record<string, string> = {};
        for (const h of values.header ?? []) {
          try {
            const [name, value] = parseHeader(h);
            headers[name] = value;
          } catch (err) {
            throw new UsageError((err as Error).message);
          }
        }
        const [method, url] = positionals as [string, string];
        const pod = podKey(values.from, values.namespace);
        const e = await explain(agentsOf(values.agent)[0]!, pod, method.toUpperCase(), url, headers);
        if (values.output === "json") console.log(JSON.stringify(e, null, 2));
        else printExplanation(e);
        return 0;
      }
    }
  } catch (err) {
    if (!(err instanceof CliError)) throw err;
    process.stderr.write(`nodemesh ${command}: ${err.message}\n`);
    return err instanceof UsageError ? 2 : 1;
  }
}
