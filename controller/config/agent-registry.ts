// What the controller knows about each node's agent: facts from its Hello, the pods it has
// enrolled, the config version it applied or refused, and its last report. In memory only: agents
// say all of it again when they reconnect.
//
// A disconnected node's pods stay endpoints for `forgetAfterMs`: a control-plane blip (or a
// controller restart) must not pull endpoints that are still serving traffic.
//
// In Kubernetes mode a reported pod counts only as the API server knows it (`verifyPod`): the
// same pod on that node, at that address, with that service account, and with the API's labels.
// So neither its endpoints nor the identities the controller signs for a node rest on the
// agent's word alone.

import {
  type Hello,
  MATRIX_MAX_NODES,
  type NodeFacts,
  type Peer,
  type PeerProbe,
  type PeerSummary,
  type RejectedObject,
  type Report,
  type WirePod,
} from "../../api/agent-service.ts";
import { isIPv4, podKey } from "../../api/enrollment.ts";
import { PeerProbes } from "./peer-probes.ts";
import type { NodePod } from "./pod-index.ts";

export interface AgentStatus {
  node: string;
  connected: boolean;
  agentVersion: string;
  underlayIp: string;
  facts: NodeFacts;
  connectedAt?: string;
  disconnectedAt?: string;
  /** The newest config version the agent ACKed. */
  appliedVersion?: string;
  appliedAt?: string;
  /** The objects of the applied version the agent left out, and why (capped). */
  rejected?: RejectedObject[];
  /** The last refusal; cleared by a later ACK of a newer version. */
  lastNack?: { version: string; error: string; at: string };
  /** The report's own fields; its pods and probes are `pods` and `peers`, its edges the service graph's. */
  lastReport?: Omit<Report, "edges" | "pods" | "peers" | "peersChangedOnly" | "podsOmitted"> & { at: string };
  /** The agent's latest probes of the other nodes (RTT, loss); left out when only the summary is asked for. */
  peers?: PeerProbe[];
  peerSummary: PeerSummary;
  /** The node's verified pods; left out when only their count is asked for. */
  pods?: WirePod[];
  podCount: number;
}

/** What a list of agents carries of each node's probes and pods (GET …/agents?peers=&pods=). */
export interface AgentsDetail {
  /**
   * "summary": each node's probes summed up, not listed (they grow as nodes²); "matrix": listed in
   * a mesh of up to MATRIX_MAX_NODES nodes, summed up in a larger one.
   */
  peers: "all" | "summary" | "matrix";
  /** "count": how many pods each node has, not the pods. */
  pods: "all" | "count";
}

export const ALL_DETAIL: AgentsDetail = { peers: "all", pods: "all" };

/**
 * Kubernetes mode: the pod as the API server has it, or why the report does not match it. The
 * labels returned replace the reported ones.
 */
export type PodVerifier = (node: string, pod: WirePod) => { ok: true; pod: WirePod } | { ok: false; reason: string };

interface NodeRecord {
  status: Omit<AgentStatus, "peers" | "peerSummary" | "pods" | "podCount"> & { pods: WirePod[] };
  /** status.peers and status.peerSummary, held compactly. */
  probes: PeerProbes;
  /**
   * What the agent reported (valid pods) by "namespace/name", before verification: verified again
   * when the API changes.
   */
  reported: Map<string, WirePod>;
  /** Why reported pods were refused, by "namespace/name": each refusal is told once. */
  refusals: Map<string, string>;
  /** status.pods with the node, built when the pods change rather than at every table rebuild. */
  nodePods: NodePod[];
  /** The stream that registered the node; a replaced stream's late disconnect is ignored. */
  stream: object;
  forgetTimer?: NodeJS.Timeout;
}

export class AgentRegistry {
  private readonly nodes = new Map<string, NodeRecord>();
  private readonly forgetAfterMs: number;
  /** Called when the endpoints or the node set changed (a new table is due). */
  private readonly onTopologyChange: () => void;
  private readonly verifyPod: PodVerifier | undefined;
  private readonly onRefused: (node: string, pod: WirePod, reason: string) => void;

  constructor(opts: {
    forgetAfterMs: number;
    onTopologyChange: () => void;
    verifyPod?: PodVerifier;
    /** A reported pod the verifier refused (logged, counted). */
    onRefused?: (node: string, pod: WirePod, reason: string) => void;
  }) {
    this.forgetAfterMs = opts.forgetAfterMs;
    this.onTopologyChange = opts.onTopologyChange;
    this.verifyPod = opts.verifyPod;
    this.onRefused = opts.onRefused ?? (() => {});
  }

  connected(hello: Hello, stream: object, now: Date): void {
    const previous = this.nodes.get(hello.nodeName);
    clearTimeout(previous?.forgetTimer);
    const isNewPeer = !previous || previous.status.underlayIp !== hello.underlayIp;
    this.nodes.set(hello.nodeName, {
      stream,
      reported: previous?.reported ?? new Map(),
      refusals: previous?.refusals ?? new Map(),
      nodePods: previous?.nodePods ?? [],
      probes: previous?.probes ?? PeerProbes.NONE,
      status: {
        node: hello.nodeName,
        connected: true,
        agentVersion: hello.agentVersion,
        underlayIp: hello.underlayIp,
        facts: hello.facts,
        connectedAt: now.toISOString(),
        pods: previous?.status.pods ?? [],
      },
    });
    if (isNewPeer) this.onTopologyChange();
  }

  disconnected(node: string, stream: object, now: Date): void {
    const record = this.nodes.get(node);
    if (!record || record.stream !== stream) return;
    record.status.connected = false;
    record.status.disconnectedAt = now.toISOString();
    record.forgetTimer = setTimeout(() => this.forget(node), this.forgetAfterMs);
    record.forgetTimer.unref();
  }

  private forget(node: string): void {
    const record = this.nodes.get(node);
    if (!record || record.status.connected) return;
    this.nodes.delete(node);
    this.onTopologyChange();
  }

  /**
   * The node's whole list of pods. Pods that could not be endpoints are dropped: one bad report
   * must not make every agent NACK.
   */
  podsChanged(node: string, reported: readonly WirePod[]): void {
    const record = this.nodes.get(node);
    if (!record) return;
    // An older agent's every report repeats the list: an unchanged one is not taken, so its copies
    // die young instead of each replacing the last (a fleet's reports promoted a copy of every pod).
    if (sameReported(record.reported, reported)) return;
    record.reported = new Map();
    for (const pod of reported) if (isValidPod(pod)) record.reported.set(podKey(pod), pod);
    if (this.verify(node, record)) this.onTopologyChange();
  }

  /** Changes to the node's list: `removed` by "namespace/name". An invalid upserted pod is dropped. */
  podsDelta(node: string, upserted: readonly WirePod[], removed: readonly string[]): void {
    const record = this.nodes.get(node);
    if (!record) return;
    for (const key of removed) record.reported.delete(key);
    for (const pod of upserted) {
      if (isValidPod(pod)) record.reported.set(podKey(pod), pod);
      else record.reported.delete(podKey(pod));
    }
    if (this.verify(node, record)) this.onTopologyChange();
  }

  /** Kubernetes mode: the API's pods changed; every node's report is checked again. */
  reverify(): void {
    let changed = false;
    for (const [node, record] of this.nodes) changed = this.verify(node, record) || changed;
    if (changed) this.onTopologyChange();
  }

  /** Sets the node's pods from its report as verified; true when they changed. */
  private verify(node: string, record: NodeRecord): boolean {
    const pods: WirePod[] = [];
    const refusals = new Map<string, string>();
    for (const pod of record.reported.values()) {
      const verdict = this.verifyPod ? this.verifyPod(node, pod) : { ok: true as const, pod };
      if (verdict.ok) {
        pods.push(verdict.pod);
        continue;
      }
      const key = podKey(pod);
      refusals.set(key, verdict.reason);
      if (record.refusals.get(key) !== verdict.reason) this.onRefused(node, pod, verdict.reason);
    }
    record.refusals = refusals;
    if (samePods(record.status.pods, pods)) return false;
    record.status.pods = pods;
    record.nodePods = pods.map((pod) => ({ ...pod, node }));
    return true;
  }

  acked(node: string, version: string, rejected: readonly RejectedObject[], now: Date): void {
    const status = this.nodes.get(node)?.status;
    if (!status) return;
    status.appliedVersion = version;
    status.appliedAt = now.toISOString();
    status.lastNack = undefined;
    status.rejected = rejected.length > 0 ? [...rejected] : undefined;
  }

  nacked(node: string, version: string, error: string, now: Date): void {
    const status = this.nodes.get(node)?.status;
    if (status) status.lastNack = { version, error, at: now.toISOString() };
  }

  reported(node: string, report: Report, now: Date): void {
    const record = this.nodes.get(node);
    if (!record) return;
    // Edges go to the traffic window; the status keeps the report's small parts only.
    const { edges: _edges, pods, podsOmitted, peers, peersChangedOnly, ...rest } = report;
    record.status.lastReport = { ...rest, at: now.toISOString() };
    const intern = (name: string) => this.nodes.get(name)?.status.node ?? name;
    record.probes = peersChangedOnly
      ? record.probes.merged(peers, intern)
      : PeerProbes.from(peers, intern, record.probes);
    // An older agent's reports carry every pod; a newer one's leave them to PodsChanged and PodsDelta.
    if (!podsOmitted) this.podsChanged(node, pods);
  }

  /**
   * Enrolled pods of every known node (connected, or disconnected for less than forgetAfterMs), by
   * node; a node's array is replaced whenever its pods change (PodIndex.update relies on it).
   */
  podsByNode(): Map<string, readonly NodePod[]> {
    return new Map([...this.nodes].map(([node, record]) => [node, record.nodePods]));
  }

  /** Whether `node` runs an enrolled pod of the service account (a workload certificate's precondition). */
  hostsServiceAccount(node: string, namespace: string, serviceAccount: string): boolean {
    const pods = this.nodes.get(node)?.nodePods ?? [];
    return pods.some((p) => p.namespace === namespace && (p.serviceAccount || "default") === serviceAccount);
  }

  peers(): Peer[] {
    return [...this.nodes.values()].map(({ status }) => ({ name: status.node, underlayIp: status.underlayIp }));
  }

  /** Every node's status, with as much of its probes and pods as `detail` asks for. */
  list(detail: AgentsDetail = ALL_DETAIL): AgentStatus[] {
    const probes = detail.peers === "all" || (detail.peers === "matrix" && this.nodes.size <= MATRIX_MAX_NODES);
    return [...this.nodes.values()]
      .map((r): AgentStatus => {
        const { pods, ...rest } = r.status;
        return {
          ...structuredClone(rest),
          ...(detail.pods === "all" ? { pods: structuredClone(pods) } : {}),
          podCount: pods.length,
          ...(probes ? { peers: r.probes.list() } : {}),
          peerSummary: r.probes.summary(),
        };
      })
      .sort((a, b) => a.node.localeCompare(b.node));
  }

  close(): void {
    for (const record of this.nodes.values()) clearTimeout(record.forgetTimer);
  }
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

function isValidPod(pod: WirePod): boolean {
  return DNS_LABEL.test(pod.name) && DNS_LABEL.test(pod.namespace) && isIPv4(pod.ip);
}

/** Whether two reports of one pod agree on every field its endpoint is built from. */
function samePod(a: WirePod, b: WirePod): boolean {
  return a.ip === b.ip && (a.serviceAccount ?? "") === (b.serviceAccount ?? "") && sameLabels(a.labels, b.labels);
}

function sameLabels(a: Readonly<Record<string, string>>, b: Readonly<Record<string, string>>): boolean {
  const keys = Object.keys(a);
  return keys.length === Object.keys(b).length && keys.every((k) => a[k] === b[k]);
}

/** Whether the valid pods of `pods` are those held, field for field. */
function sameReported(held: ReadonlyMap<string, WirePod>, pods: readonly WirePod[]): boolean {
  let valid = 0;
  for (const pod of pods) {
    if (!isValidPod(pod)) continue;
    valid++;
    const known = held.get(podKey(pod));
    if (!known || !samePod(known, pod)) return false;
  }
  return valid === held.size;
}

/** Whether two lists hold the same pods (by namespace and name, once each: both come from maps by key), field for field. */
function samePods(a: readonly WirePod[], b: readonly WirePod[]): boolean {
  if (a.length !== b.length) return false;
  const byKey = new Map(a.map((pod) => [podKey(pod), pod]));
  return b.every((pod) => {
    const known = byKey.get(podKey(pod));
    return known !== undefined && samePod(known, pod);
  });
}
