// The pure part of the configuration stream: Service resources plus the pods the agents have
// enrolled, and the traffic objects (routes, policies) → one immutable, versioned service table.
// No I/O, no clock: same input, same table.

import type { Peer, WirePod } from "../../api/agent-service.ts";
import { serviceKey } from "../../api/agent-service.ts";
import { canonicalJson } from "../../api/canonical-json.ts";
import { kindOf, type Resource, type ServiceSpec } from "../../api/resources.ts";
import { type Service, type ServiceEndpoint, workloadName } from "../../api/services.ts";
import { type TrafficObject, trafficKey } from "../../api/traffic.ts";

/** A pod some agent reported as enrolled, with the node it runs on. */
export interface NodePod extends WirePod {
  node: string;
}

/** The resource an entry was built from, for propagation tracking. */
export interface ResourceRef {
  readonly key: string;
  readonly generation: number;
}

export interface TableEntry {
  readonly service: Service;
  /** Canonical JSON of `service`: two entries are the same iff their fingerprints are equal. */
  readonly fingerprint: string;
  readonly resource: ResourceRef;
}

export interface TrafficEntry {
  readonly object: TrafficObject;
  /** Canonical JSON of the spec: two entries of one key are the same iff their fingerprints are equal. */
  readonly fingerprint: string;
  readonly resource: ResourceRef;
}

export interface ConfigTable {
  readonly version: string;
  /** Keyed by serviceKey ("namespace/name"). */
  readonly services: ReadonlyMap<string, TableEntry>;
  /** Keyed by trafficKey ("kind/namespace/name"); every agent gets all of them. */
  readonly traffic: ReadonlyMap<string, TrafficEntry>;
  /** Every known node, sorted by name (each agent gets the list without itself). */
  readonly peers: readonly Peer[];
}

export interface TableInput {
  version: string;
  services: readonly Resource<ServiceSpec>[];
  pods: readonly NodePod[];
  nodes: readonly Peer[];
  /** HTTPRoutes, GRPCRoutes and TrafficPolicies, validated with their defaults filled in. */
  traffic?: readonly Resource[];
}

/** The propagation-tracking key of a stored object: "<plural>/<namespace>/<name>". */
export function resourceKey(plural: string, namespace: string, name: string): string {
  return `${plural}/${namespace}/${name}`;
}

/** Kubernetes equality-based selection: the pod carries every label of the selector. */
export function selectorMatches(selector: Readonly<Record<string, string>>, labels: Readonly<Record<string, string>>) {
  for (const [k, v] of Object.entries(selector)) if (labels[k] !== v) return false;
  return true;
}

function byPodAddress(a: ServiceEndpoint, b: ServiceEndpoint): number {
  return a.ip === b.ip ? (a.pod ?? "").localeCompare(b.pod ?? "") : a.ip.localeCompare(b.ip);
}

function podsByNamespace(pods: readonly NodePod[]): Map<string, NodePod[]> {
  const index = new Map<string, NodePod[]>();
  for (const pod of pods) {
    const list = index.get(pod.namespace);
    if (list) list.push(pod);
    else index.set(pod.namespace, [pod]);
  }
  return index;
}

function buildService(resource: Resource<ServiceSpec>, candidates: readonly NodePod[]): Service {
  const { name, namespace } = resource.metadata;
  const { spec } = resource;
  const endpoints: ServiceEndpoint[] = candidates
    .filter((pod) => selectorMatches(spec.selector, pod.labels))
    // Every pod we know of is enrolled with an agent, hence meshed. The endpoint's port is left to
    // the service port (targetPort ?? port), which also keeps multi-port services right.
    .map((pod) => ({
      ip: pod.ip,
      node: pod.node,
      pod: `${pod.namespace}/${pod.name}`,
      meshed: true,
      workload: workloadName(pod),
    }))
    .sort(byPodAddress);
  return {
    name,
    namespace,
    vip: spec.vip,
    ports: spec.ports.map((p) => ({
      ...(p.name !== undefined ? { name: p.name } : {}),
      port: p.port,
      ...(p.targetPort !== undefined ? { targetPort: p.targetPort } : {}),
      ...(p.protocol !== undefined ? { protocol: p.protocol } : {}),
    })),
    endpoints,
  };
}

export function buildServiceTable(input: TableInput): ConfigTable {
  const pods = podsByNamespace(input.pods);
  const services = new Map<string, TableEntry>();
  for (const resource of input.services) {
    const service = buildService(resource, pods.get(resource.metadata.namespace) ?? []);
    services.set(serviceKey(service), {
      service,
      fingerprint: JSON.stringify(service),
      resource: {
        key: resourceKey("services", service.namespace, service.name),
        generation: resource.metadata.generation,
      },
    });
  }
  const traffic = new Map<string, TrafficEntry>();
  for (const resource of input.traffic ?? []) {
    const { name, namespace, generation } = resource.metadata;
    const object = { kind: resource.kind, name, namespace, spec: resource.spec } as TrafficObject;
    const plural = kindOf(resource)!.plural;
    traffic.set(trafficKey(object), {
      object,
      fingerprint: canonicalJson(object.spec),
      resource: { key: resourceKey(plural, namespace, name), generation },
    });
  }
  const peers = [...input.nodes].sort((a, b) => a.name.localeCompare(b.name));
  return { version: input.version, services, traffic, peers };
}
