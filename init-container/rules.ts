// The pod's redirect rules, as a pure function of the current tables and the exclusions.
//
// We restore the whole `nat` and `raw` tables atomically (iptables-restore without --noflush
// replaces only the tables named in its input): take the current `iptables-save -t nat` and
// `-t raw` dumps, drop every nodemesh chain (NODEMESH_*) and every rule that jumps to one, then
// add ours unless uninstalling. So one function covers install, reinstall (idempotent: the output
// does not depend on whether our rules were already there) and uninstall (config = null), and
// rules of other tools survive untouched, counters included when the dump carries them (`-c`).
//
// nat redirects the pod's connections to the agent. raw gives the agent's own connections from
// the pod (marked, so nat lets them pass) a conntrack zone of their own for their original
// direction: otherwise a dial of the agent's that failed (SYN_SENT, kept for two minutes) is an
// entry without NAT in the pod's one table, and an app connection that happens to pick the same
// source port to the same destination matches it as a retransmission, skips REDIRECT and leaves
// the pod unseen by the mesh. Replies still find the agent's entries (the zone covers only the
// original direction).
//
// The output is written in iptables-save's own canonical form (built-in chains first, then user
// chains sorted by name, rules grouped by chain, `-d` before `-p`, `-m tcp` spelled out, `/32`
// on host addresses, `80` rather than `80:80`), so that what iptables-save prints after applying
// it is the same text: a second run computes the same tables, and a diff of the dump against
// `--dry-run` shows only real changes.
import { AGENT_SOCKET_MARK, INBOUND_PORT, OUTBOUND_PORT, TUNNEL_PORT } from "../api/dataplane.ts";
import { isIPv4, type PortRange } from "../api/enrollment.ts";
import { INIT_ERROR_CODES, InitError } from "./errors.ts";

/** Every chain we own starts with this; anything else in the table belongs to someone else. */
export const CHAIN_PREFIX = "NODEMESH_";
export const OUTBOUND_CHAIN = "NODEMESH_OUTPUT";
export const INBOUND_CHAIN = "NODEMESH_INBOUND";
/** In the raw table: puts the agent's own connections in AGENT_CONNTRACK_ZONE. */
export const AGENT_CONNTRACK_CHAIN = "NODEMESH_AGENT_CT";
/** Any zone but 0, the default that every other connection of the pod is tracked in. */
export const AGENT_CONNTRACK_ZONE = 1337;
/** ztunnel's mask: the agent owns the low 12 bits of the mark, other users keep the rest. */
export const AGENT_MARK_MASK = 0xfff;

/** The tables we write, with their built-in chains in the order iptables-save prints them. */
const BUILTIN_CHAINS = {
  nat: ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
  raw: ["PREROUTING", "OUTPUT"],
} as const;
export type TableName = keyof typeof BUILTIN_CHAINS;
/** The order of the tables in what we hand to iptables-restore. */
export const TABLES: readonly TableName[] = ["nat", "raw"];

export interface Cidr {
  /** Network address (host bits cleared). */
  address: string;
  prefixLength: number;
}

export interface RedirectConfig {
  excludeOutboundPorts: readonly PortRange[];
  excludeInboundPorts: readonly PortRange[];
  excludeOutboundCidrs: readonly Cidr[];
}

/** Comma-separated lists, as given in flags or the pod's `nodemesh.io/exclude-*` annotations. */
export interface ExclusionLists {
  outboundPorts?: string;
  inboundPorts?: string;
  outboundCidrs?: string;
}

export function parseExclusions(lists: ExclusionLists): RedirectConfig {
  return {
    excludeOutboundPorts: parsePorts(lists.outboundPorts ?? "", "exclude-outbound-ports"),
    excludeInboundPorts: parsePorts(lists.inboundPorts ?? "", "exclude-inbound-ports"),
    excludeOutboundCidrs: parseCidrs(lists.outboundCidrs ?? "", "exclude-outbound-cidrs"),
  };
}

/** "80, 443,8000:8100" → ranges; empty items are ignored, duplicates dropped. */
export function parsePorts(list: string, what: string): PortRange[] {
  const ranges = items(list).map((item) => {
    const m = /^(\d+)(?:[:-](\d+))?$/.exec(item);
    if (!m) throw invalid(`${what}: "${item}" is not a port or a range like 8000:8100`);
    const first = port(m[1], item, what);
    const last = m[2] === undefined ? first : port(m[2], item, what);
    if (first > last) throw invalid(`${what}: range "${item}" ends before it starts`);
    return { first, last };
  });
  return unique(ranges, formatPorts);
}

/** "10.0.0.0/8,192.168.1.1" → CIDRs (a bare address is a /32; host bits are cleared, as iptables does). */
export function parseCidrs(list: string, what: string): Cidr[] {
  const cidrs = items(list).map((item) => {
    const [address, prefix, ...rest] = item.split("/");
    const prefixLength = prefix === undefined ? 32 : Number(prefix);
    if (!isIPv4(address) || rest.length > 0 || !/^\d{1,2}$/.test(prefix ?? "32") || prefixLength > 32) {
      throw invalid(`${what}: "${item}" is not an IPv4 address or CIDR like 10.0.0.0/8`);
    }
    return { address: networkAddress(address, prefixLength), prefixLength };
  });
  return unique(cidrs, formatCidr);
}

/**
 * Which directions the rules intercept: "all" (the iptables mode), or "inbound" only (the eBPF
 * mode, whose cgroup/connect4 program redirects the outbound side; bpf/README.md says why the
 * inbound side stays with these rules).
 */
export type RuleScope = "all" | "inbound";

/**
 * The nat and raw tables to hand to `iptables-restore`: `currentDump` (what `iptables-save -t nat`
 * and `-t raw` print, one after the other; either may be missing or empty) without any nodemesh
 * rule, plus ours unless `config` is null (uninstall).
 */
export function buildTables(currentDump: string, config: RedirectConfig | null, scope: RuleScope = "all"): string {
  const tables = parseDump(currentDump);
  for (const table of tables.values()) removeNodemesh(table);
  if (config) addNodemesh(tables, config, scope);
  return TABLES.map((name) => renderTable(name, tables.get(name)!)).join("");
}

// ---------------------------------------------------------------------------------------------
// The rules

function addNodemesh(tables: Tables, config: RedirectConfig, scope: RuleScope): void {
  const nat = tables.get("nat")!;
  const out: string[] = [
    `${AGENT_MARK_MATCH} ${comment("skip agent sockets")} -j RETURN`,
    `-o lo ${comment("skip loopback")} -j RETURN`,
    `-d 127.0.0.0/8 ${comment("skip loopback")} -j RETURN`,
    ...config.excludeOutboundPorts.map((p) => returnForPort(p, "excluded outbound port")),
    ...config.excludeOutboundCidrs.map((c) => returnForCidr(c)),
    `-p tcp ${comment("to agent outbound listener")} -j REDIRECT --to-ports ${OUTBOUND_PORT}`,
  ];
  const inbound: string[] = [
    // The agent-to-agent tunnel is the agent's own inbound path: let it reach its listener.
    returnForPort({ first: TUNNEL_PORT, last: TUNNEL_PORT }, "agent tunnel"),
    ...config.excludeInboundPorts.map((p) => returnForPort(p, "excluded inbound port")),
    `-p tcp ${comment("to agent inbound listener")} -j REDIRECT --to-ports ${INBOUND_PORT}`,
  ];
  addChain(nat, INBOUND_CHAIN, inbound);
  // First in the built-in chains: the mesh sees the pod's traffic before other nat rules, and
  // the agent's own (marked) connections fall through to them.
  jumpFirst(nat, "PREROUTING", `-p tcp ${comment("intercept inbound tcp")} -j ${INBOUND_CHAIN}`);
  // The eBPF mode redirects at connect(), before any packet: no entry of the agent's can be
  // mistaken for an app's connection there.
  if (scope === "inbound") return;
  addChain(nat, OUTBOUND_CHAIN, out);
  jumpFirst(nat, "OUTPUT", `-p tcp ${comment("intercept outbound tcp")} -j ${OUTBOUND_CHAIN}`);
  // Every packet of the agent's, not only the first: each must be looked up in the same zone.
  const raw = tables.get("raw")!;
  addChain(raw, AGENT_CONNTRACK_CHAIN, [
    `${comment("own conntrack zone, original direction")} -j CT --zone-orig ${AGENT_CONNTRACK_ZONE}`,
  ]);
  jumpFirst(raw, "OUTPUT", `-p tcp ${AGENT_MARK_MATCH} ${comment("agent sockets")} -j ${AGENT_CONNTRACK_CHAIN}`);
}

/** The packets of the agent's own sockets, in both tables. */
const AGENT_MARK_MATCH = `-m mark --mark ${hex(AGENT_SOCKET_MARK)}/${hex(AGENT_MARK_MASK)}`;

function returnForPort(range: PortRange, why: string): string {
  return `-p tcp -m tcp --dport ${formatPorts(range)} ${comment(why)} -j RETURN`;
}

function returnForCidr(cidr: Cidr): string {
  // iptables-save omits a match-everything destination, so we do too.
  const match = cidr.prefixLength === 0 ? "" : `-d ${formatCidr(cidr)} `;
  return `${match}${comment("excluded outbound cidr")} -j RETURN`;
}

/** Our comments contain a space and no quote or backslash, so iptables-save quotes them exactly so. */
function comment(text: string): string {
  return `-m comment --comment "nodemesh: ${text}"`;
}

function hex(n: number): string {
  return `0x${n.toString(16)}`;
}

function formatPorts({ first, last }: PortRange): string {
  return first === last ? `${first}` : `${first}:${last}`;
}

function formatCidr({ address, prefixLength }: Cidr): string {
  return `${address}/${prefixLength}`;
}

// ---------------------------------------------------------------------------------------------
// The dump: a small model of the iptables-save tables we write

interface Chain {
  /** ACCEPT/DROP for built-in chains, "-" for user chains. */
  policy: string;
  /** "[packets:bytes]" as printed by iptables-save. */
  counters: string;
  rules: Rule[];
}

interface Rule {
  /** "[packets:bytes] " when the dump carried counters (iptables-save -c), else "". */
  counters: string;
  /** The rule after `-A CHAIN`, verbatim. */
  spec: string;
}

type Table = Map<string, Chain>;
type Tables = Map<TableName, Table>;

function isOurs(name: string): name is TableName {
  return (TABLES as readonly string[]).includes(name);
}

function parseDump(dump: string): Tables {
  const tables: Tables = new Map();
  let section: string | undefined; // the table being read, while inside `*name` … `COMMIT`
  dump.split("\n").forEach((raw, index) => {
    const line = raw.trimEnd();
    const where = `line ${index + 1}`;
    if (line === "" || line.startsWith("#")) return;
    if (line.startsWith("*")) {
      if (section) throw badDump(`${where}: table "${line}" starts before "*${section}" is committed`);
      section = line.slice(1);
      if (isOurs(section)) {
        if (tables.has(section)) throw badDump(`${where}: table "${line}" appears twice`);
        tables.set(section, new Map());
      }
      return;
    }
    if (!section) throw badDump(`${where}: "${line}" is outside of any table`);
    if (line === "COMMIT") {
      section = undefined;
      return;
    }
    const table = isOurs(section) ? tables.get(section)! : undefined;
    if (!table) return; // a full dump: only our tables concern us
    const chain = /^:(\S+) (\S+)(?: (\[\d+:\d+\]))?$/.exec(line);
    if (chain) {
      table.set(chain[1], { policy: chain[2], counters: chain[3] ?? "[0:0]", rules: [] });
      return;
    }
    const rule = /^(\[\d+:\d+\] )?-A (\S+)(?: (.+))?$/.exec(line);
    if (!rule) throw badDump(`${where}: cannot read "${line}"`);
    const owner = table.get(rule[2]);
    if (!owner) throw badDump(`${where}: rule for undeclared chain "${rule[2]}"`);
    owner.rules.push({ counters: rule[1] ?? "", spec: rule[3] ?? "" });
  });
  if (section) throw badDump(`table "*${section}" is not committed (truncated dump?)`);
  // Older iptables print nothing at all for a table that was never used.
  for (const name of TABLES) {
    if (tables.has(name)) continue;
    tables.set(name, new Map(BUILTIN_CHAINS[name].map((c) => [c, { policy: "ACCEPT", counters: "[0:0]", rules: [] }])));
  }
  return tables;
}

function removeNodemesh(table: Table): void {
  for (const [name, chain] of table) {
    if (name.startsWith(CHAIN_PREFIX)) table.delete(name);
    else chain.rules = chain.rules.filter((rule) => !jumpTarget(rule.spec)?.startsWith(CHAIN_PREFIX));
  }
}

function addChain(table: Table, name: string, specs: string[]): void {
  table.set(name, { policy: "-", counters: "[0:0]", rules: specs.map((spec) => ({ counters: "", spec })) });
}

function jumpFirst(table: Table, builtin: string, spec: string): void {
  let chain = table.get(builtin);
  if (!chain) {
    // Some iptables versions create built-in chains lazily; restore creates it for us.
    chain = { policy: "ACCEPT", counters: "[0:0]", rules: [] };
    table.set(builtin, chain);
  }
  chain.rules.unshift({ counters: "", spec });
}

/** The chain a rule jumps or goes to: iptables-save prints the target last, so take the last -j/-g. */
function jumpTarget(spec: string): string | undefined {
  const words = tokenize(spec);
  for (let i = words.length - 2; i >= 0; i--) {
    if (["-j", "--jump", "-g", "--goto"].includes(words[i])) return words[i + 1];
  }
  return undefined;
}

/** Splits a rule like a shell would for iptables-save's quoting: "…" with \-escapes. */
function tokenize(spec: string): string[] {
  const words: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|(\S+)/g;
  for (let m = re.exec(spec); m; m = re.exec(spec)) words.push(m[1] ?? m[2]);
  return words;
}

function renderTable(tableName: TableName, table: Table): string {
  const builtinNames: readonly string[] = BUILTIN_CHAINS[tableName];
  const builtins = builtinNames.filter((name) => table.has(name));
  // Built-ins in their fixed order, then user chains by name: the order iptables-save prints.
  const users = [...table.keys()].filter((name) => !builtinNames.includes(name)).sort(byCodeUnit);
  const order = [...builtins, ...users];
  const lines = [`*${tableName}`];
  for (const name of order) {
    const chain = table.get(name)!;
    lines.push(`:${name} ${chain.policy} ${chain.counters}`);
  }
  for (const name of order) {
    for (const { counters, spec } of table.get(name)!.rules) lines.push(`${counters}-A ${name}${spec && ` ${spec}`}`);
  }
  lines.push("COMMIT", "");
  return lines.join("\n");
}

// ---------------------------------------------------------------------------------------------
// Small helpers

function items(list: string): string[] {
  return list
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
}

function port(text: string, item: string, what: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1 || n > 65535) throw invalid(`${what}: "${item}" is not a port (1-65535)`);
  return n;
}

function networkAddress(address: string, prefixLength: number): string {
  const n = address.split(".").reduce((acc, octet) => acc * 256 + Number(octet), 0);
  const mask = prefixLength === 0 ? 0 : (0xffffffff << (32 - prefixLength)) >>> 0;
  const net = (n & mask) >>> 0;
  return [24, 16, 8, 0].map((shift) => (net >>> shift) & 0xff).join(".");
}

function unique<T>(values: T[], key: (v: T) => string): T[] {
  const seen = new Set<string>();
  return values.filter((v) => {
    const k = key(v);
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

function byCodeUnit(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function invalid(message: string): InitError {
  return new InitError(INIT_ERROR_CODES.INVALID_ARGUMENT, message);
}

function badDump(message: string): InitError {
  return new InitError(INIT_ERROR_CODES.BAD_DUMP, `unexpected iptables-save output: ${message}`);
}
