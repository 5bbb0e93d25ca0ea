// `nodemesh check` and `nodemesh explain`: the operator's questions "is this pod meshed as it
// should be?" and "where would this request go, and why?". Two sources answer them:
// - the controller's REST API (as `nodemesh status` reads it): its health, each agent's link and
//   configuration version, and every object's status conditions (controller/config/analysis.ts);
// - the agent of the pod's node, on its admin port (`--agent`, the node's loopback only):
//   `/debug/check` (rules, listeners, enrollment in the pod's namespace) and `/debug/explain`
//   (the request decided by the data plane's own code against its live snapshot).
// Neither being down crashes a check: it becomes a finding.

import type { AgentCheck, Explanation, Finding } from "../../api/diagnosis.ts";
import { apiVersionOf, KINDS } from "../../api/resources.ts";
import { policiesSelectingNothing } from "../config/analysis.ts";
import { CliError, type Client, call } from "./connection.ts";

export const DEFAULT_AGENT = "http://127.0.0.1:15020";

/** Where the agent's admin port is, for messages. */
export const REACH_AGENT = `The agent answers /debug/* on its node's loopback only. On Kubernetes:
  kubectl -n nodemesh-system port-forward pod/<the agent pod on the pod's node> 15020:15020
  (kubectl -n nodemesh-system get pods -o wide shows which agent pod runs on which node), then
  nodemesh … --agent http://127.0.0.1:15020 with the controller port-forwarded too (--server).
In the network-namespace demo, run the CLI in the node's namespace:
  ip netns exec <node> nodemesh …`;

interface AgentView {
  node: string;
  connected: boolean;
  disconnectedAt?: string;
  appliedVersion?: string;
  currentVersion: string;
  lastNack?: { version: string; error: string; at: string };
  rejected?: { kind: string; namespace: string; name: string; reason: string }[];
  pods?: { name: string; namespace: string; ip: string; labels: Record<string, string> }[];
}

interface Condition {
  type: string;
  status: string;
  reason?: string;
  message?: string;
}

interface Listed {
  kind: string;
  metadata: { name: string; namespace: string };
  spec: unknown;
  status?: { conditions?: Condition[] };
}

export type CheckScope = { pod: { namespace: string; name: string } } | { namespace: string } | { all: true };

/** A JSON answer of an agent's admin port, or why there is none. */
async function agentCall(agent: string, path: string, body?: unknown): Promise<{ status: number; data: unknown }> {
  let res: Response;
  try {
    res = await fetch(`${agent.replace(/\/$/, "")}${path}`, {
      method: body === undefined ? "GET" : "POST",
      headers: body === undefined ? {} : { "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
    });
  } catch (err) {
    const cause = (err as Error & { cause?: Error & { code?: string } }).cause;
    throw new AgentUnreachable(cause?.message || cause?.code || (err as Error).message);
  }
  const text = await res.text();
  try {
    return { status: res.status, data: JSON.parse(text) };
  } catch {
    return { status: res.status, data: { error: { message: text } } };
  }
}

class AgentUnreachable extends Error {}

const agentError = (data: unknown) => (data as { error?: { message?: string } })?.error?.message ?? "no message";

// ---------------------------------------------------------------- check

export async function check(c: Client, scope: CheckScope, agents: readonly string[]): Promise<Finding[]> {
  const findings: Finding[] = [];
  const controllerUp = await controllerFindings(c, findings);
  const nodes = controllerUp ? await agentViews(c, findings) : undefined;
  const allPods = (nodes ?? []).flatMap((n) => (n.pods ?? []).map((p) => ({ ...p, node: n.node })));

  // The pods to check, and the nodes they are on (as the agents report them to the controller).
  let pods: { namespace: string; name: string; node?: string }[];
  if ("pod" in scope) {
    const found = allPods.find((p) => p.namespace === scope.pod.namespace && p.name === scope.pod.name);
    pods = [{ ...scope.pod, node: found?.node }];
    if (nodes && !found) {
      findings.push({
        verdict: "error",
        check: "enrolled",
        subject: `pod ${scope.pod.namespace}/${scope.pod.name}`,
        message: "no agent reports this pod to the controller: it is not enrolled (or its agent is disconnected)",
        fix: `nodemesh init --pod-name ${scope.pod.name} --pod-namespace ${scope.pod.namespace} in the pod's network namespace (on Kubernetes: the namespace needs nodemesh.io/intercept=enabled, then delete the pod)`,
      });
    }
  } else {
    pods = allPods.filter((p) => "all" in scope || p.namespace === scope.namespace);
  }
  const podNodes = new Set(pods.map((p) => p.node).filter((n): n is string => n !== undefined));
  for (const n of nodes ?? []) {
    if ("all" in scope || podNodes.has(n.node)) findings.push(...nodeFindings(n));
  }

  // Each pod, by its node's agent (one of --agent); an agent that does not answer is a finding.
  const answered = new Map<string, string>(); // node → agent URL
  for (const agent of agents) {
    try {
      const { status, data } = await agentCall(agent, "/readyz");
      const node = (data as { node?: string }).node;
      if (!node) throw new AgentUnreachable(`answered ${status} without a node name: is it a nodemesh agent?`);
      answered.set(node, agent);
    } catch (err) {
      if (!(err instanceof AgentUnreachable)) throw err;
      findings.push({
        verdict: "error",
        check: "agent",
        subject: `agent ${agent}`,
        message: `the agent's admin port does not answer (${err.message}): the agent is down, or this is not its node`,
        fix: "start the agent (on Kubernetes: kubectl -n nodemesh-system get pods -o wide, and the agent pod's logs); see nodemesh check --help to reach its admin port",
      });
    }
  }
  for (const pod of pods) {
    const subject = `pod ${pod.namespace}/${pod.name}`;
    // Without the controller's word on the node, every answering agent is asked (one pod only).
    const agent = pod.node !== undefined ? answered.get(pod.node) : [...answered.values()][0];
    if (!agent) {
      // One pod asked for and not checked is an error; in a namespace's or the mesh's check, a pod
      // of another node is a warning saying where to ask.
      findings.push({
        verdict: answered.size === 0 || "pod" in scope ? "error" : "warning",
        check: "rules",
        subject,
        message:
          answered.size === 0
            ? `rules and listeners not checked: ${pod.node ? `node ${pod.node}'s agent` : "the agent"} did not answer`
            : `rules and listeners not checked from here: the pod is on node ${pod.node}, the agents asked are ${[...answered.keys()].join(", ")}'s`,
        fix: `run the check on node ${pod.node ?? "of the pod"}, or add --agent with its agent's admin address`,
      });
      continue;
    }
    const { status, data } = await agentCall(
      agent,
      `/debug/check?pod=${encodeURIComponent(`${pod.namespace}/${pod.name}`)}`,
    ).catch((err: Error) => ({ status: 0, data: { error: { message: err.message } } }));
    if (status !== 200) {
      findings.push({
        verdict: "error",
        check: "agent",
        subject,
        message: `the agent at ${agent} did not check it (${status || "no answer"}: ${agentError(data)})`,
        fix: status === 403 ? REACH_AGENT.split("\n")[0]! : "see the agent's log",
      });
      continue;
    }
    const answer = data as AgentCheck;
    // The agent's own view of its link, unless the controller's is already there.
    findings.push(...answer.findings.filter((f) => f.check !== "agent" || !nodes || f.verdict !== "ok"));
  }

  if (controllerUp) findings.push(...(await objectFindings(c, scope, allPods)));
  return findings;
}

async function controllerFindings(c: Client, findings: Finding[]): Promise<boolean> {
  const subject = `controller ${c.server}`;
  try {
    await call(c, "GET", "/healthz");
  } catch (err) {
    if (!(err instanceof CliError)) throw err;
    findings.push({
      verdict: "error",
      check: "controller",
      subject,
      message: err.message.split("\n")[0]!,
      fix: "start the controller, or point the CLI at it: --server URL --token TOKEN (nodemesh check --help)",
    });
    return false;
  }
  try {
    await call(c, "GET", "/readyz");
    findings.push({ verdict: "ok", check: "controller", subject, message: "healthy and ready" });
  } catch (err) {
    if (!(err instanceof CliError)) throw err;
    findings.push({
      verdict: "error",
      check: "controller",
      subject,
      message: `healthy but not ready: ${err.message}`,
      fix: "the controller's log says what it waits for (its store, the Kubernetes API, leadership)",
    });
  }
  return true;
}

async function agentViews(c: Client, findings: Finding[]): Promise<AgentView[] | undefined> {
  try {
    // The checks read no probe: summaries only (a large mesh's probes are nodes²).
    const path = "/apis/nodemesh.io/v1alpha1/agents?peers=summary";
    return ((await call(c, "GET", path)) as { items: AgentView[] }).items;
  } catch (err) {
    if (!(err instanceof CliError)) throw err;
    findings.push({
      verdict: "error",
      check: "controller",
      subject: `controller ${c.server}`,
      message: `cannot list the agents: ${err.message}`,
      fix: "a token with the read role (--token)",
    });
    return undefined;
  }
}

/** What the controller knows of a node's agent: link, version, refusals. */
function nodeFindings(n: AgentView): Finding[] {
  const subject = `node ${n.node}`;
  if (!n.connected) {
    return [
      {
        verdict: "error",
        check: "agent",
        subject,
        message: `the agent is not connected to the controller${n.disconnectedAt ? ` (since ${n.disconnectedAt})` : ""}; its pods keep the last configuration it applied, ${n.appliedVersion ?? "none"}`,
        fix: `restart the agent of ${n.node} (on Kubernetes: kubectl -n nodemesh-system delete pod <its agent pod>; its log says why it left)`,
      },
    ];
  }
  if (n.lastNack && n.appliedVersion !== n.currentVersion) {
    return [
      {
        verdict: "error",
        check: "agent",
        subject,
        message: `refused configuration ${n.lastNack.version}: ${n.lastNack.error}; it applies ${n.appliedVersion ?? "none"}, the controller's is ${n.currentVersion}`,
        fix: "fix the object the refusal names (nodemesh status shows it)",
      },
    ];
  }
  if (n.appliedVersion !== n.currentVersion) {
    return [
      {
        verdict: "warning",
        check: "agent",
        subject,
        message: `applies configuration ${n.appliedVersion ?? "none"}, the controller's is ${n.currentVersion} (an update on its way?)`,
        fix: "check again in a few seconds; nodemesh status shows the versions",
      },
    ];
  }
  const findings: Finding[] = [
    {
      verdict: "ok",
      check: "agent",
      subject,
      message: `connected to the controller, on its latest configuration ${n.currentVersion}`,
    },
  ];
  for (const r of n.rejected ?? []) {
    findings.push({
      verdict: "error",
      check: "objects",
      subject: `${r.kind} ${r.namespace}/${r.name}`,
      message: `the agent of ${n.node} left it out: ${r.reason}`,
      fix: `change the field the reason names (nodemesh get ${r.kind.toLowerCase()}s ${r.name} -n ${r.namespace} -o yaml)`,
    });
  }
  return findings;
}

/** How bad a condition that is not True is, and what to change. */
function conditionVerdict(kind: string, c: Condition): { verdict: Finding["verdict"]; fix: string } | undefined {
  if (c.status === "True") {
    // Accepted in part: some parents or targets are missing.
    return c.message?.startsWith("accepted in part")
      ? {
          verdict: "warning",
          fix: `spec.${kind.endsWith("Route") ? "parentRefs" : "targetRefs"}: remove or create what is missing`,
        }
      : undefined;
  }
  switch (c.reason) {
    case "BackendNotFound":
      return {
        verdict: "error",
        fix: "spec.rules[].backendRefs (or a RequestMirror's backendRef): name an existing Service, or create it",
      };
    case "NoMatchingParent":
      return { verdict: "error", fix: "spec.parentRefs: name an existing Service (and one of its ports)" };
    case "TargetNotFound":
      return { verdict: "error", fix: "spec.targetRefs: name an existing Service of the policy's namespace" };
    case "NeverMatches":
      return {
        verdict: "warning",
        fix: "spec.rules: remove the rule that never matches, or make it more specific than the one taken first",
      };
    case "Conflicted":
      return kind === "Service"
        ? { verdict: "error", fix: "spec.vip or spec.ports: another Service holds this VIP:port" }
        : { verdict: "warning", fix: "merge it into the policy that applies there, or target another Service" };
    case "Rejected":
      return { verdict: "error", fix: "nodemesh status names the agents that refused it and why" };
    case "Pending":
    case "NoAgents":
      return { verdict: "warning", fix: "check again in a few seconds; nodemesh status shows the agents" };
    default:
      return { verdict: "warning", fix: `see the ${c.type} condition: nodemesh get ${kind.toLowerCase()}s -o yaml` };
  }
}

/** Every object's status conditions, and the policies that select no enrolled pod. */
async function objectFindings(
  c: Client,
  scope: CheckScope,
  pods: readonly { namespace: string; labels: Record<string, string> }[],
): Promise<Finding[]> {
  const namespace = "pod" in scope ? scope.pod.namespace : "namespace" in scope ? scope.namespace : undefined;
  const findings: Finding[] = [];
  const objects: Listed[] = [];
  for (const kind of KINDS) {
    const base = `/apis/${apiVersionOf(kind)}`;
    const path = namespace ? `${base}/namespaces/${namespace}/${kind.plural}` : `${base}/${kind.plural}`;
    const items = ((await call(c, "GET", path)) as { items?: Listed[] }).items ?? [];
    objects.push(...items.map((o) => ({ ...o, kind: kind.kind })));
  }
  let problems = 0;
  for (const o of objects) {
    const subject = `${o.kind} ${o.metadata.namespace}/${o.metadata.name}`;
    for (const condition of o.status?.conditions ?? []) {
      const verdict = conditionVerdict(o.kind, condition);
      if (!verdict) continue;
      problems++;
      findings.push({
        verdict: verdict.verdict,
        check: "objects",
        subject,
        message: `${condition.type} ${condition.status} (${condition.reason}): ${condition.message ?? ""}`,
        fix: verdict.fix,
      });
    }
  }
  const idle = policiesSelectingNothing({
    services: objects.filter((o) => o.kind === "Service"),
    traffic: objects.filter((o) => o.kind !== "Service"),
    pods,
  });
  for (const p of idle) {
    problems++;
    findings.push({
      verdict: "warning",
      check: "objects",
      subject: `${p.kind} ${p.namespace}/${p.name}`,
      message: `selects nothing: ${p.message}`,
      fix: "spec.targetRefs: a Service whose selector picks meshed pods (or enroll the pods it is meant for)",
    });
  }
  if (problems === 0) {
    findings.push({
      verdict: "ok",
      check: "objects",
      subject: namespace ? `namespace ${namespace}` : "all namespaces",
      message: `${objects.length} objects: every reference resolves, every rule can match, every policy selects pods`,
    });
  }
  return findings;
}

export function printFindings(findings: readonly Finding[]): void {
  const width = Math.max(...findings.map((f) => f.check.length));
  for (const f of findings) {
    console.log(`${f.verdict.padEnd(7)}  ${f.check.padEnd(width)}  ${f.subject}: ${f.message}`);
    if (f.fix && f.verdict !== "ok") console.log(`${" ".repeat(9 + width + 2)}fix: ${f.fix}`);
  }
  const errors = findings.filter((f) => f.verdict === "error").length;
  const warnings = findings.filter((f) => f.verdict === "warning").length;
  console.log(`\n${errors} error(s), ${warnings} warning(s), ${findings.length - errors - warnings} ok`);
}

// ---------------------------------------------------------------- explain

export async function explain(
  agent: string,
  pod: string,
  method: string,
  url: string,
  headers: Record<string, string>,
): Promise<Explanation> {
  let answer: { status: number; data: unknown };
  try {
    answer = await agentCall(agent, "/debug/explain", { pod, method, url, headers });
  } catch (err) {
    if (!(err instanceof AgentUnreachable)) throw err;
    throw new CliError(`cannot reach the agent at ${agent}: ${err.message}\n${REACH_AGENT}`);
  }
  if (answer.status === 404 && (answer.data as { error?: { code?: string } }).error?.code === "POD_NOT_ENROLLED") {
    throw new CliError(`${agentError(answer.data)}: ask the agent of the pod's own node (--agent)`);
  }
  if (answer.status !== 200)
    throw new CliError(`the agent at ${agent} answered ${answer.status}: ${agentError(answer.data)}`);
  return answer.data as Explanation;
}

export function printExplanation(e: Explanation): void {
  const headers = Object.entries(e.request.headers).map(([k, v]) => ` -H '${k}: ${v}'`);
  console.log(`${e.request.method} ${e.request.url}${headers.join("")} from pod ${e.pod}`);
  console.log(`agent of ${e.node}, configuration ${e.configVersion}: ${e.outcome}\n`);
  for (const s of e.steps) {
    console.log(`${s.step.padEnd(13)} ${s.summary}`);
    for (const d of s.details ?? []) console.log(`${" ".repeat(14)}${d}`);
  }
}

/** "name: value" or "name:value" → [lower-case name, value]. */
export function parseHeader(text: string): [string, string] {
  const colon = text.indexOf(":");
  const name = colon > 0 ? text.slice(0, colon).trim() : "";
  if (!/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(name)) {
    throw new CliError(`-H '${text}': a header is 'name: value'`);
  }
  return [name.toLowerCase(), text.slice(colon + 1).trim()];
}
