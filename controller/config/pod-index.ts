// The enrolled pods by namespace and label, kept up to date node by node. A table rebuild asks it
// for the pods a Service's selector picks, and for the pods that changed since the last rebuild,
// so that a pod coming or going recomputes the endpoints of the Services that select it, not of
// every Service (10,000 of them × 50,000 pods on every change during a fleet's connect storm).

import type { WirePod } from "../../api/agent-service.ts";

/** A pod some agent reported as enrolled, with the node it runs on. */
export interface NodePod extends WirePod {
  node: string;
}

/** Kubernetes equality-based selection: the pod carries every label of the selector. */
export function selectorMatches(selector: Readonly<Record<string, string>>, labels: Readonly<Record<string, string>>) {
  for (const [k, v] of Object.entries(selector)) if (labels[k] !== v) return false;
  return true;
}

/** "key\0value": one label as a map key. */
export function labelKey(key: string, value: string): string {
  return `${key}\0${value}`;
}

interface NamespacePods {
  readonly all: Set<NodePod>;
  readonly byLabel: Map<string, Set<NodePod>>;
}

interface NodeEntry {
  /** The array the registry last gave for this node: replaced whenever the node's pods change. */
  readonly reported: readonly NodePod[];
  /** The node's pods in the index, by "namespace/name". */
  readonly pods: Map<string, NodePod>;
}

/**
 * Whether two reports of one pod make the same endpoint (address, node, identity, labels).
 * Compared field by field rather than through a kept fingerprint string: 50,000 of those were
 * 3.6 MB of the controller's heap.
 */
function sameEndpointPod(a: NodePod, b: NodePod): boolean {
  if (a.ip !== b.ip || a.node !== b.node || (a.serviceAccount ?? "") !== (b.serviceAccount ?? "")) return false;
  const labels = Object.keys(a.labels);
  if (labels.length !== Object.keys(b.labels).length) return false;
  for (const k of labels) if (!Object.hasOwn(b.labels, k) || a.labels[k] !== b.labels[k]) return false;
  return true;
}

export class PodIndex {
  private readonly nodes = new Map<string, NodeEntry>();
  private readonly namespaces = new Map<string, NamespacePods>();

  /** An index of `pods` (one-off builds: tests, previews); a node's pods in one go. */
  static of(pods: readonly NodePod[]): PodIndex {
    const byNode = new Map<string, NodePod[]>();
    for (const pod of pods) {
      const list = byNode.get(pod.node);
      if (list) list.push(pod);
      else byNode.set(pod.node, [pod]);
    }
    const index = new PodIndex();
    index.update(byNode);
    return index;
  }

  /**
   * Brings the index to `byNode` (every known node's pods; the registry replaces a node's array
   * when its pods change, so unchanged nodes cost one comparison). Returns the pods added, removed
   * or changed, each as it was and as it is now: the Services selecting any of them need new endpoints.
   */
  update(byNode: ReadonlyMap<string, readonly NodePod[]>): NodePod[] {
    const changed: NodePod[] = [];
    for (const [node, entry] of this.nodes) {
      if (byNode.has(node)) continue;
      for (const pod of entry.pods.values()) this.remove(pod, changed);
      this.nodes.delete(node);
    }
    for (const [node, reported] of byNode) {
      const entry = this.nodes.get(node);
      if (entry?.reported === reported) continue;
      const pods = new Map<string, NodePod>();
      for (const pod of reported) {
        const key = `${pod.namespace}/${pod.name}`;
        const before = entry?.pods.get(key);
        if (before && sameEndpointPod(before, pod)) {
          pods.set(key, before);
          continue;
        }
        if (before) this.remove(before, changed);
        this.add(pod);
        changed.push(pod);
        pods.set(key, pod);
      }
      for (const [key, pod] of entry?.pods ?? []) if (!pods.has(key)) this.remove(pod, changed);
      this.nodes.set(node, { reported, pods });
    }
    return changed;
  }

  /** The pods `selector` picks in `namespace` (an empty selector picks them all). */
  select(namespace: string, selector: Readonly<Record<string, string>>): NodePod[] {
    const pods = this.namespaces.get(namespace);
    if (!pods) return [];
    // The selector's rarest label narrows the candidates; each is then checked against all of it.
    let candidates: ReadonlySet<NodePod> | undefined;
    for (const [k, v] of Object.entries(selector)) {
      const withLabel = pods.byLabel.get(labelKey(k, v));
      if (!withLabel) return [];
      if (!candidates || withLabel.size < candidates.size) candidates = withLabel;
    }
    const picked: NodePod[] = [];
    for (const pod of candidates ?? pods.all) if (selectorMatches(selector, pod.labels)) picked.push(pod);
    return picked;
  }

  private add(pod: NodePod): void {
    let ns = this.namespaces.get(pod.namespace);
    if (!ns) {
      ns = { all: new Set(), byLabel: new Map() };
      this.namespaces.set(pod.namespace, ns);
    }
    ns.all.add(pod);
    for (const [k, v] of Object.entries(pod.labels)) {
      const key = labelKey(k, v);
      const set = ns.byLabel.get(key);
      if (set) set.add(pod);
      else ns.byLabel.set(key, new Set([pod]));
    }
  }

  private remove(pod: NodePod, changed: NodePod[]): void {
    changed.push(pod);
    const ns = this.namespaces.get(pod.namespace);
    if (!ns) return;
    ns.all.delete(pod);
    for (const [k, v] of Object.entries(pod.labels)) {
      const key = labelKey(k, v);
      const set = ns.byLabel.get(key);
      set?.delete(pod);
      if (set?.size === 0) ns.byLabel.delete(key);
    }
    if (ns.all.size === 0) this.namespaces.delete(pod.namespace);
  }
}
