// `nodemesh init`: the init container of a meshed pod. It runs in the pod's network namespace,
// installs the redirect rules (rules.ts, applied by iptables.ts) and enrolls the pod with the
// node agent (enroll.ts). Everything is checked before anything is changed: parseInitArgs is pure.
//
// Install order is rules, then enrollment. If enrollment fails the rules stay and we exit 1: the
// pod's app containers do not start, kubelet reruns us, and the rerun is idempotent. Traffic never
// bypasses the mesh (fail closed), and the message says so, with the command that undoes it.
// Uninstall is the other way round: the rules go first and unenrolling waits only a short while,
// since an absent agent must not hold up a pod that is leaving the mesh.
//
// --mode ebpf (ebpf.ts) loads the programs of bpf/ onto the pod's cgroup for the outbound side and
// keeps the iptables rules for the inbound side only; the eBPF install comes first, so a machine
// that cannot run it is refused before anything changed, and a failure of the rules after it
// rolls it back.
import { existsSync } from "node:fs";
import os from "node:os";
import { parseArgs } from "node:util";
import { DEFAULT_ENROLLMENT_SOCKET, INBOUND_PORT, OUTBOUND_PORT } from "../api/dataplane.ts";
import type { PodEnrollment } from "../api/enrollment.ts";
import { validateEnrollment } from "../api/enrollment-schema.ts";
import { cgroup2Root, installEbpf, NODE_PIN_DIR, PODS_PIN_DIR, uninstallEbpf } from "./ebpf.ts";
import { podConfigValue } from "./ebpf-maps.ts";
import {
  type AgentOptions,
  askInterception,
  DEFAULT_ENROLL_TIMEOUT_MS,
  DEFAULT_UNENROLL_TIMEOUT_MS,
  enroll,
  unenroll,
} from "./enroll.ts";
import { INIT_ERROR_CODES, InitError } from "./errors.ts";
import { applyRedirect, saveTables } from "./iptables.ts";
import { parentCgroup } from "./pod-cgroup.ts";
import { buildTables, parseExclusions, type RedirectConfig } from "./rules.ts";

export const HELP = `Usage: nodemesh init [flags]

Runs inside a pod's network namespace (as its init container). Redirects the pod's TCP traffic
to the node agent (outbound to :${OUTBOUND_PORT}, inbound to :${INBOUND_PORT}; the tunnel port, loopback
and the agent's own marked sockets pass untouched), then enrolls the pod with the agent. Safe to
run again.

Interception:
  --mode iptables             (default) iptables rules for both directions, restored as the
                              whole nat table at once, and one raw rule that keeps the agent's
                              own connections in a conntrack zone of their own (so that none of
                              them can let an app connection skip the redirect)
  --mode node                 what the node's agent says (nodemesh agent --interception, asked on
                              the enrollment socket before anything is installed)
  --mode ebpf                 outbound by eBPF programs attached to the pod's cgroup
                              (cgroup/connect4, sockops; SO_ORIGINAL_DST answered by a node-wide
                              cgroup/getsockopt program), inbound by the iptables rules; loaded
                              with bpftool and pinned under /sys/fs/bpf/nodemesh/ (bpf/README.md).
                              Needs Linux 5.15+, kernel BTF, cgroup v2 and bpftool; where they
                              are missing it fails, changing nothing, and names what is missing
  --cgroup PATH               the pod's cgroup v2 directory (required with --mode ebpf; given
                              with --uninstall or --mode iptables, its eBPF programs are removed).
                              --cgroup parent: the parent of this process's cgroup, which in
                              Kubernetes is the pod's (each container has its own under it)
  --cgroup-root PATH          where the node's cgroup v2 hierarchy is mounted, for --cgroup parent
                              (default: the first cgroup2 mount; in a container with a cgroup
                              namespace of its own, mount the node's /sys/fs/cgroup, e.g. at
                              /host/sys/fs/cgroup)
  --agent-cgroup PATH         where the agent runs (its getsockopt calls are answered there);
                              default: the root of the cgroup v2 hierarchy

Pod (flags win over the downward-API environment variables):
  --pod-name NAME             env POD_NAME; required unless --no-enroll or --dry-run
  --pod-namespace NS          env POD_NAMESPACE; default "default"
  --pod-ip IP                 env POD_IP; default: the first non-loopback IPv4 address here
  --label KEY=VALUE           pod label for the agent; repeatable
  --service-account NAME      default "default"

Agent:
  --enrollment-socket PATH    the agent's enrollment socket (nodemesh agent --enrollment-socket);
                              default ${DEFAULT_ENROLLMENT_SOCKET}. --agent-socket: deprecated alias
  --enroll-timeout DURATION   keep retrying until then: 30s, 2m, 500ms, or seconds
                              (default: ${DEFAULT_ENROLL_TIMEOUT_MS / 1000}s to enroll, ${DEFAULT_UNENROLL_TIMEOUT_MS / 1000}s to unenroll with --uninstall)
  --netns-path PATH           sent to the agent as the pod's network namespace; it must be
                              this process's own unless run as root in the node's network
                              namespace (default: the agent uses the namespace of this process)
  --no-enroll                 only install (or remove) the rules

Exclusions (comma-separated; each flag may be repeated):
  --exclude-outbound-ports LIST   ports or ranges not redirected, e.g. 22,8000:8100
  --exclude-inbound-ports LIST    ports or ranges not redirected, e.g. 9090 (also sent to the
                                  agent, whose tunnel then never connects to them)
  --exclude-outbound-cidrs LIST   destinations not redirected, e.g. 10.0.0.0/8,169.254.169.254

Modes:
  --dry-run                   print the nat and raw tables that would be restored and change
                              nothing; needs no pod flags (given ones are checked and shown)
  --uninstall                 remove the rules (both tables are restored without them) and,
                              with --cgroup, the pod's eBPF programs (the node's go with the
                              last pod's), then unenroll; failing to unenroll is only a warning
  -h, --help                  show this text

If enrollment fails, the rules stay (fail closed): the pod's traffic is blocked until the agent
accepts the pod. Run init again once the agent is up, or remove the rules with --uninstall.

Exit status: 0 done, 1 failed, 2 bad flags.
`;

export const OPTIONS = {
  "pod-name": { type: "string" },
  "pod-namespace": { type: "string" },
  "pod-ip": { type: "string" },
  label: { type: "string", multiple: true },
  "service-account": { type: "string" },
  "enrollment-socket": { type: "string" },
  /** Deprecated alias of --enrollment-socket (the agent's flag has always been that). */
  "agent-socket": { type: "string" },
  "enroll-timeout": { type: "string" },
  "netns-path": { type: "string" },
  "no-enroll": { type: "boolean" },
  "exclude-outbound-ports": { type: "string", multiple: true },
  "exclude-inbound-ports": { type: "string", multiple: true },
  "exclude-outbound-cidrs": { type: "string", multiple: true },
  mode: { type: "string" },
  cgroup: { type: "string" },
  "cgroup-root": { type: "string" },
  "agent-cgroup": { type: "string" },
  "dry-run": { type: "boolean" },
  uninstall: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

export type InterceptionMode = "iptables" | "ebpf";

export interface InitPlan {
  help: boolean;
  uninstall: boolean;
  dryRun: boolean;
  /** "node": asked of the agent (resolvePlan). */
  mode: InterceptionMode | "node";
  /** The pod's cgroup v2 directory (--cgroup): where the eBPF programs are attached or removed; "parent": see resolvePlan. */
  cgroup?: string;
  cgroupRoot?: string;
  agentCgroup?: string;
  /** Rules to install; ignored when uninstalling. */
  config: RedirectConfig;
  /** The pod to enroll (or unenroll): undefined with --no-enroll, or a dry run without pod flags. */
  pod?: PodEnrollment;
  agent: AgentOptions;
  /** Printed before anything is done, e.g. for a deprecated flag. */
  warnings: string[];
}

/** Flags + environment → what to do, or an InitError(invalid_argument). No side effects. */
export function parseInitArgs(
  argv: string[],
  env: NodeJS.ProcessEnv = process.env,
  interfaces: () => ReturnType<typeof os.networkInterfaces> = os.networkInterfaces,
): InitPlan {
  let values: ReturnType<typeof readFlags>;
  try {
    values = readFlags(argv);
  } catch (err) {
    throw invalid(`${(err as Error).message} (see --help)`);
  }
  const config = parseExclusions({
    outboundPorts: values["exclude-outbound-ports"]?.join(","),
    inboundPorts: values["exclude-inbound-ports"]?.join(","),
    outboundCidrs: values["exclude-outbound-cidrs"]?.join(","),
  });
  const warnings: string[] = [];
  if (values["agent-socket"] !== undefined) {
    if (values["enrollment-socket"] !== undefined)
      throw invalid("give --enrollment-socket only (--agent-socket is its old name)");
    warnings.push("--agent-socket is deprecated; use --enrollment-socket (the same flag as nodemesh agent's)");
  }
  const uninstall = values.uninstall ?? false;
  const timeout = values["enroll-timeout"];
  const agent = {
    socketPath: values["enrollment-socket"] ?? values["agent-socket"] ?? DEFAULT_ENROLLMENT_SOCKET,
    timeoutMs:
      timeout !== undefined ? duration(timeout) : uninstall ? DEFAULT_UNENROLL_TIMEOUT_MS : DEFAULT_ENROLL_TIMEOUT_MS,
  };
  const mode = values.mode ?? "iptables";
  if (mode !== "iptables" && mode !== "ebpf" && mode !== "node") {
    throw invalid(`--mode: "${mode}" is not iptables, ebpf or node`);
  }
  if (mode === "node" && values["no-enroll"]) throw invalid("--mode node asks the agent: not with --no-enroll");
  const dryRun = values["dry-run"] ?? false;
  if (mode === "ebpf" && values.cgroup === undefined && !dryRun && !values.help) {
    throw invalid("--mode ebpf needs --cgroup PATH, the pod's cgroup v2 directory");
  }
  if (values["cgroup-root"] !== undefined && values.cgroup !== "parent") {
    throw invalid("--cgroup-root goes with --cgroup parent");
  }
  const plan = {
    help: values.help ?? false,
    uninstall,
    dryRun,
    mode: mode as InitPlan["mode"],
    ...(values.cgroup === undefined ? {} : { cgroup: values.cgroup }),
    ...(values["cgroup-root"] === undefined ? {} : { cgroupRoot: values["cgroup-root"] }),
    ...(values["agent-cgroup"] === undefined ? {} : { agentCgroup: values["agent-cgroup"] }),
    warnings,
  };
  if (plan.help || values["no-enroll"]) return { ...plan, config, agent };

  const name = values["pod-name"] ?? env.POD_NAME;
  // A dry run enrolls nothing, so it needs no pod; one that names a pod shows what it would do.
  if (!name && plan.dryRun) return { ...plan, config, agent };
  if (!name) throw invalid("--pod-name (or POD_NAME) is required to enroll the pod; use --no-enroll for rules only");
  const namespace = values["pod-namespace"] ?? env.POD_NAMESPACE ?? "default";
  const ip = values["pod-ip"] ?? env.POD_IP ?? firstIPv4(interfaces);
  const netnsPath = values["netns-path"];
  const candidate = {
    name,
    namespace,
    ip,
    ...(netnsPath === undefined ? {} : { netnsPath }),
    labels: labels(values.label ?? []),
    serviceAccount: values["service-account"] ?? "default",
    // The agent's tunnel must not reach what the rules leave out: it learns these at enrollment.
    ...(config.excludeInboundPorts.length ? { excludeInboundPorts: [...config.excludeInboundPorts] } : {}),
  };
  const checked = validateEnrollment(candidate);
  if (!checked.ok) throw invalid(`${FLAG_OF_FIELD[checked.field] ?? checked.field}: ${checked.message}`);
  return { ...plan, config, agent, pod: checked.value };
}

/** Runs `nodemesh init`; returns the exit code (never calls process.exit). */
export async function runInit(argv: string[]): Promise<number> {
  try {
    const parsed = parseInitArgs(argv);
    if (parsed.help) {
      process.stdout.write(HELP);
      return 0;
    }
    for (const warning of parsed.warnings) log(`warning: ${warning}`);
    const plan = await resolvePlan(parsed);
    const config = plan.uninstall ? null : plan.config;
    const scope = plan.mode === "ebpf" ? "inbound" : "all";
    if (plan.dryRun) {
      process.stdout.write(buildTables(await saveTables(), config, scope));
      if (plan.mode === "ebpf" && config) {
        podConfigValue(config, localAddresses(plan)); // refuses what the programs' maps cannot hold
        log(
          `dry run: would load bpf/redirect.bpf.o under ${PODS_PIN_DIR}/<cgroup id>/ and attach it to ` +
            `${plan.cgroup ?? "the --cgroup"}, and bpf/origdst.bpf.o under ${NODE_PIN_DIR}/ (if not there) ` +
            `attached to ${plan.agentCgroup ?? "the root of the cgroup v2 hierarchy"}`,
        );
      }
      if (plan.pod) log(`dry run: would ${plan.uninstall ? "unenroll" : "enroll"} ${describePod(plan.pod)}`);
      return 0;
    }
    if (plan.uninstall) {
      await applyRedirect(null);
      log("redirect rules removed");
      if (plan.cgroup !== undefined) {
        const had = await uninstallEbpf(plan.cgroup);
        if (!existsSync(plan.cgroup)) {
          log(
            `${plan.cgroup} is gone (and its attachments with it); ${had ? "stale eBPF pins removed" : "no stale eBPF pins"}`,
          );
        } else {
          log(had ? `eBPF programs detached from ${plan.cgroup} and unpinned` : `no eBPF programs for ${plan.cgroup}`);
        }
      }
      if (plan.pod) await unenrollWarning(plan.pod, plan.agent);
      return 0;
    }
    if (plan.mode === "ebpf") {
      await installWithEbpf(plan, plan.config);
    } else {
      await applyRedirect(plan.config);
      // A pod switched from the eBPF mode: its programs go once the rules are in place.
      if (plan.cgroup !== undefined && (await uninstallEbpf(plan.cgroup)))
        log(`eBPF programs of ${plan.cgroup} removed`);
      log(`redirect rules installed (outbound to :${OUTBOUND_PORT}, inbound to :${INBOUND_PORT})`);
    }
    if (plan.pod) {
      try {
        await enroll(plan.pod, plan.agent);
      } catch (err) {
        const code = reportFailure(err);
        log(blockedMessage(plan.pod, plan.agent.socketPath, plan.cgroup));
        return code;
      }
      log(`enrolled ${describePod(plan.pod)} with the agent at ${plan.agent.socketPath}`);
    }
    return 0;
  } catch (err) {
    return reportFailure(err);
  }
}

/**
 * `--mode node` asks the agent which mode this node uses; `--cgroup parent` finds the pod's
 * cgroup. Both before anything is changed.
 */
async function resolvePlan(plan: InitPlan): Promise<InitPlan & { mode: InterceptionMode }> {
  let mode = plan.mode;
  if (mode === "node" && plan.uninstall) mode = "iptables"; // removes whatever is there: no need to ask
  if (mode === "node") {
    mode = await askInterception(plan.agent);
    log(`this node's interception mode (nodemesh agent --interception): ${mode}`);
  }
  const cgroup = plan.cgroup === "parent" ? parentCgroup({ hierarchy: plan.cgroupRoot ?? cgroup2Root() }) : plan.cgroup;
  if (mode === "ebpf" && cgroup === undefined && !plan.dryRun) {
    throw invalid("the eBPF mode needs --cgroup PATH (or --cgroup parent), the pod's cgroup v2 directory");
  }
  return { ...plan, mode, ...(cgroup === undefined ? {} : { cgroup }) };
}

/** The eBPF programs first (a machine without support is refused untouched), then the inbound rules. */
async function installWithEbpf(plan: InitPlan, config: RedirectConfig): Promise<void> {
  const cgroup = plan.cgroup!;
  const installed = await installEbpf(config, localAddresses(plan), {
    cgroup,
    ...(plan.agentCgroup === undefined ? {} : { agentCgroup: plan.agentCgroup }),
  });
  try {
    await applyRedirect(config, {}, "inbound");
  } catch (err) {
    if (installed.loaded) await uninstallEbpf(cgroup).catch(() => {});
    throw err;
  }
  log(
    `eBPF programs ${installed.loaded ? "attached to" : "already on"} ${cgroup} (outbound to 127.0.0.1:${OUTBOUND_PORT}, ` +
      `pinned in ${installed.podDir}; SO_ORIGINAL_DST answered in ${plan.agentCgroup ?? cgroup2Root()}); ` +
      `inbound rules installed (to :${INBOUND_PORT})`,
  );
}

/** This namespace's own IPv4 addresses: the eBPF programs leave connections to them local. */
function localAddresses(plan: InitPlan): string[] {
  const found = new Set<string>();
  for (const addresses of Object.values(os.networkInterfaces())) {
    for (const a of addresses ?? []) if (a.family === "IPv4" && !a.internal) found.add(a.address);
  }
  if (plan.pod) found.add(plan.pod.ip);
  return [...found];
}

/** Logs an InitError and returns the exit code; anything else is a bug and propagates. */
function reportFailure(err: unknown): number {
  if (!(err instanceof InitError)) throw err;
  log(`error [${err.code}]: ${err.message}`);
  return err.code === INIT_ERROR_CODES.INVALID_ARGUMENT ? 2 : 1;
}

/**
 * Said after a failed enrollment: the rules stay (fail closed), so the pod is cut off until the agent
 * accepts it; the last words are the command that undoes the install.
 */
export function blockedMessage(pod: PodEnrollment, socketPath: string, cgroup?: string): string {
  const socket =
    (socketPath === DEFAULT_ENROLLMENT_SOCKET ? "" : ` --enrollment-socket ${socketPath}`) +
    (cgroup === undefined ? "" : ` --cgroup ${cgroup}`);
  return (
    `pod ${pod.namespace}/${pod.name} is cut off: its redirect rules stay installed (fail closed), so its ` +
    `traffic is blocked until the agent at ${socketPath} accepts the pod. Run nodemesh init again once the ` +
    `agent is up, or remove the rules with: nodemesh init --uninstall --pod-name ${pod.name} ` +
    `--pod-namespace ${pod.namespace}${socket}`
  );
}

async function unenrollWarning(pod: PodEnrollment, agent: AgentOptions): Promise<void> {
  try {
    await unenroll(pod.namespace, pod.name, agent);
    log(`unenrolled ${pod.namespace}/${pod.name}`);
  } catch (err) {
    // The rules are gone, which is what the pod needs; a leftover enrollment is the agent's to clean up.
    if (!(err instanceof InitError)) throw err;
    log(`warning [${err.code}]: ${err.message}`);
  }
}

function readFlags(argv: string[]) {
  return parseArgs({ args: argv, options: OPTIONS, strict: true, allowPositionals: false }).values;
}

const FLAG_OF_FIELD: Record<string, string> = {
  name: "--pod-name",
  namespace: "--pod-namespace",
  ip: "--pod-ip",
  netnsPath: "--netns-path",
  labels: "--label",
  serviceAccount: "--service-account",
  excludeInboundPorts: "--exclude-inbound-ports",
};

function firstIPv4(interfaces: () => ReturnType<typeof os.networkInterfaces>): string {
  for (const addresses of Object.values(interfaces())) {
    const found = addresses?.find((a) => a.family === "IPv4" && !a.internal);
    if (found) return found.address;
  }
  throw invalid("--pod-ip (or POD_IP) is required: this network namespace has no non-loopback IPv4 address");
}

function labels(pairs: string[]): Record<string, string> {
  const result: Record<string, string> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf("=");
    if (eq <= 0) throw invalid(`--label: "${pair}" is not KEY=VALUE`);
    result[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return result;
}

const MS_PER_UNIT: Record<string, number> = { ms: 1, s: 1_000, m: 60_000 };

/** "30s", "2m", "500ms" or a plain number of seconds → milliseconds. */
function duration(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(text.trim());
  const ms = m ? Number(m[1]) * MS_PER_UNIT[m[2] ?? "s"] : Number.NaN;
  if (!(ms > 0)) throw invalid(`--enroll-timeout: "${text}" is not a duration like 30s, 2m or 500ms`);
  return ms;
}

function describePod(pod: PodEnrollment): string {
  return `pod ${pod.namespace}/${pod.name} (ip ${pod.ip})`;
}

function invalid(message: string): InitError {
  return new InitError(INIT_ERROR_CODES.INVALID_ARGUMENT, message);
}

function log(line: string): void {
  process.stderr.write(`nodemesh init: ${line}\n`);
}

if (import.meta.main) process.exitCode = await runInit(process.argv.slice(2));
