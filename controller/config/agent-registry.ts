// What the controller knows about each node's agent: facts from its Hello, the pods it has
// enrolled, the config version it applied or refused, and its last report. In memory only: agents
// say all of it again when they reconnect.
//
// A disconnected node's pods stay endpoints for `forgetAfterMs`: a control-plane blip (or a
// controller restart) must not pull endpoints that are still serving traffic.

import type { Hello, NodeFacts, Peer, PeerProbe, Report, WirePod } from "../../api/agent-service.ts";
import { isIPv4 } from "../../api/enrollment.ts";
import type { NodePod } from "./service-table.ts";

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
  /** The last refusal; cleared by a later ACK of a newer version. */
  lastNack?: { version: string; error: string; at: string };
  lastReport?: Omit<Report, "edges"> & { at: string };
  /** The agent's latest probes of the other nodes (RTT, loss). */
  peers: PeerProbe[];
  pods: WirePod[];
}

interface NodeRecord {
  status: AgentStatus;
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

  constructor(opts: { forgetAfterMs: number; onTopologyChange: () => void }) {
    this.forgetAfterMs = opts.forgetAfterMs;
    this.onTopologyChange = opts.onTopologyChange;
  }

  connected(hello: Hello, stream: object, now: Date): void {
    const previous = this.nodes.get(hello.nodeName);
    clearTimeout(previous?.forgetTimer);
    const isNewPeer = !previous || previous.status.underlayIp !== hello.underlayIp;
    this.nodes.set(hello.nodeName, {
      stream,
      nodePods: previous?.nodePods ?? [],
      status: {
        node: hello.nodeName,
        connected: true,
        agentVersion: hello.agentVersion,
        underlayIp: hello.underlayIp,
        facts: hello.facts,
        connectedAt: now.toISOString(),
        peers: previous?.status.peers ?? [],
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

  /** Pods that could not be endpoints are dropped: one bad report must not make every agent NACK. */
  podsChanged(node: string, reported: WirePod[]): void {
    const record = this.nodes.get(node);
    const pods = reported.filter(isValidPod);
    if (!record || samePods(record.status.pods, pods)) return;
    record.status.pods = pods;
    record.nodePods = pods.map((pod) => ({ ...pod, node }));
    this.onTopologyChange();
  }

  acked(node: string, version: string, now: Date): void {
    const status = this.nodes.get(node)?.status;
    if (!status) return;
    status.appliedVersion = version;
    status.appliedAt = now.toISOString();
    status.lastNack = undefined;
  }

  nacked(node: string, version: string, error: string, now: Date): void {
    const status = this.nodes.get(node)?.status;
    if (status) status.lastNack = { version, error, at: now.toISOString() };
  }

  reported(node: string, report: Report, now: Date): void {
    const status = this.nodes.get(node)?.status;
    if (!status) return;
    // Edges go to the traffic window; the status keeps the report's small parts only.
    const { edges: _edges, ...rest } = report;
    status.lastReport = { ...rest, at: now.toISOString() };
    status.peers = report.peers;
    // Reports carry the pods too: a missed PodsChanged heals at the next report.
    this.podsChanged(node, report.pods);
  }

  /** Enrolled pods of every known node (connected, or disconnected for less than forgetAfterMs). */
  pods(): NodePod[] {
    return [...this.nodes.values()].flatMap((record) => record.nodePods);
  }

  peers(): Peer[] {
    return [...this.nodes.values()].map(({ status }) => ({ name: status.node, underlayIp: status.underlayIp }));
  }

  list(): AgentStatus[] {
    return [...this.nodes.values()].map((r) => structuredClone(r.status)).sort((a, b) => a.node.localeCompare(b.node));
  }

  close(): void {
    for (const record of this.nodes.values()) clearTimeout(record.forgetTimer);
  }
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

function isValidPod(pod: WirePod): boolean {
  return DNS_LABEL.test(pod.name) && DNS_LABEL.test(pod.namespace) && isIPv4(pod.ip);
}

function podIdentity(pod: WirePod): string {
  const labels = Object.entries(pod.labels).sort(([a], [b]) => a.localeCompare(b));
  return JSON.stringify([pod.namespace, pod.name, pod.ip, labels]);
}

function samePods(a: readonly WirePod[], b: readonly WirePod[]): boolean {
  if (a.length !== b.length) return false;
  const left = a.map(podIdentity).sort();
  const right = b.map(podIdentity).sort();
  return left.every((id, i) => id === right[i]);
}
