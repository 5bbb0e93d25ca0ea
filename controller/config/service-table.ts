// The pure part of the configuration stream: Service resources plus the pods the agents have
// enrolled (and in Kubernetes mode the EndpointSlices' addresses), and the traffic objects
// (routes, policies) → one immutable, versioned service table.
// No I/O, no clock: same input, same table.

import { hash } from "node:crypto";
import type { Peer } from "../../api/agent-service.ts";
import { serviceKey } from "../../api/agent-service.ts";
import { canonicalJson } from "../../api/canonical-json.ts";
import { workloadName } from "../../api/enrollment.ts";
import { kindOf, type Resource, type ServiceSpec } from "../../api/resources.ts";
import type { Service, ServiceEndpoint } from "../../api/services.ts";
import { type TrafficObject, trafficKey } from "../../api/traffic.ts";
import { labelKey, type NodePod, PodIndex, selectorMatches } from "./pod-index.ts";

/**
 * A ready endpoint of a Service as Kubernetes' EndpointSlices list it (Kubernetes mode): its
 * address, and its pod ("namespace/name") and node when the slice names them.
 */
export interface ClusterEndpoint {
  readonly ip: string;
  readonly pod?: string;
  readonly node?: string;
}

/** The resource an entry was built from, for propagation tracking. */
export interface ResourceRef {
  readonly key: string;
  readonly generation: number;
}

export interface TableEntry {
  readonly service: Service;
  /** Digest of `service`'s canonical JSON: two entries are the same iff their fingerprints are equal. */
  readonly fingerprint: string;
  readonly resource: ResourceRef;
  /** The (validated) Service resource the entry was built from: a rebuild reuses the entry while it is the same object. */
  readonly source: Resource<ServiceSpec>;
}

export interface TrafficEntry {
  readonly object: TrafficObject;
  /** Digest of the spec's canonical JSON: two entries of one key are the same iff their fingerprints are equal. */
  readonly fingerprint: string;
  readonly resource: ResourceRef;
  readonly source: Resource;
}

export interface ConfigTable {
  readonly version: string;
  /** Keyed by serviceKey ("namespace/name"). */
  readonly services: ReadonlyMap<string, TableEntry>;
  /** Keyed by trafficKey ("kind/namespace/name"); every agent gets all of them. */
  readonly traffic: ReadonlyMap<string, TrafficEntry>;
  /** Every known node, sorted by name (each agent gets the list without itself). */
  readonly peers: readonly Peer[];
  /** Kubernetes mode: the EndpointSlices' endpoints the table was built from (a new map: every Service's endpoints are recomputed). */
  readonly clusterEndpoints?: ReadonlyMap<string, readonly ClusterEndpoint[]>;
}

export interface TableInput {
  version: string;
  services: readonly Resource<ServiceSpec>[];
  /** The enrolled pods: the publisher's index kept across rebuilds, or a list (indexed for this build). */
  pods: PodIndex | readonly NodePod[];
  /**
   * The pods added, removed or changed since `previous` was built (PodIndex.update): only the
   * Services selecting one of them get their endpoints recomputed. Absent: any pod may have changed.
   */
  changedPods?: readonly NodePod[];
  nodes: readonly Peer[];
  /**
   * Kubernetes mode: each Service's ready endpoints from its EndpointSlices, by serviceKey (a
   * Service without any has none). They are the Service's endpoints, meshed where an agent
   * enrolled the pod at that address. Absent (standalone): the enrolled pods the selector picks.
   */
  clusterEndpoints?: ReadonlyMap<string, readonly ClusterEndpoint[]>;
  /** HTTPRoutes, GRPCRoutes and TrafficPolicies, validated with their defaults filled in. */
  traffic?: readonly Resource[];
  /**
   * The table built before: an entry whose resource is the same object and whose endpoints did not
   * change is reused as is, which keeps rebuilds cheap and lets diffs compare entries by identity.
   */
  previous?: ConfigTable;
  /**
   * The Services and pods are those `previous` was built from (only traffic objects or nodes
   * changed): its service entries are kept as they are and `services` and `pods` are not read.
   */
  servicesUnchanged?: boolean;
}

/** The propagation-tracking key of a stored object: "<plural>/<namespace>/<name>". */
export function resourceKey(plural: string, namespace: string, name: string): string {
  return `${plural}/${namespace}/${name}`;
}

function byPodAddress(a: ServiceEndpoint, b: ServiceEndpoint): number {
  return a.ip === b.ip ? (a.pod ?? "").localeCompare(b.pod ?? "") : a.ip.localeCompare(b.ip);
}

interface SelectorIndex {
  /** Each Service under one label of its selector ("namespace\0key\0value"): a pod it picks carries it. */
  readonly byLabel: Map<string, Resource<ServiceSpec>[]>;
  /** Services with an empty selector, by namespace: they pick every pod there. */
  readonly selectAll: Map<string, Resource<ServiceSpec>[]>;
}

// By the Services list it indexes: the publisher passes the same list until a Service is written.
const selectorIndexes = new WeakMap<readonly Resource<ServiceSpec>[], SelectorIndex>();

function selectorIndex(services: readonly Resource<ServiceSpec>[]): SelectorIndex {
  let index = selectorIndexes.get(services);
  if (index) return index;
  index = { byLabel: new Map(), selectAll: new Map() };
  for (const service of services) {
    const { namespace } = service.metadata;
    const first = Object.entries(service.spec.selector)[0];
    const [map, key] = first ? [index.byLabel, `${namespace}\0${labelKey(...first)}`] : [index.selectAll, namespace];
    const list = map.get(key);
    if (list) list.push(service);
    else map.set(key, [service]);
  }
  selectorIndexes.set(services, index);
  return index;
}

/**
 * The keys of the Services whose selector picks one of `pods` (in Kubernetes mode as in
 * standalone: an enrolled pod makes a cluster endpoint meshed).
 */
function servicesSelecting(services: readonly Resource<ServiceSpec>[], pods: readonly NodePod[]): Set<string> {
  const selecting = new Set<string>();
  if (pods.length === 0) return selecting;
  const { byLabel, selectAll } = selectorIndex(services);
  for (const pod of pods) {
    const candidates = [...(selectAll.get(pod.namespace) ?? [])];
    for (const [k, v] of Object.entries(pod.labels)) {
      candidates.push(...(byLabel.get(`${pod.namespace}\0${labelKey(k, v)}`) ?? []));
    }
    for (const service of candidates) {
      if (selectorMatches(service.spec.selector, pod.labels)) selecting.add(serviceKey(service.metadata));
    }
  }
  return selecting;
}

function toEndpoint(pod: NodePod): ServiceEndpoint {
  // Every pod we know of is enrolled with an agent, hence meshed. The endpoint's port is left to
  // the service port (targetPort ?? port), which also keeps multi-port services right.
  return {
    ip: pod.ip,
    node: pod.node,
    pod: `${pod.namespace}/${pod.name}`,
    meshed: true,
    workload: workloadName(pod),
    serviceAccount: pod.serviceAccount || "default",
  };
}

function sameEndpoints(a: readonly ServiceEndpoint[], b: readonly ServiceEndpoint[]): boolean {
  return (
    a.length === b.length &&
    a.every((e, i) => {
      const o = b[i];
      return (
        e.ip === o.ip &&
        e.node === o.node &&
        e.pod === o.pod &&
        e.workload === o.workload &&
        e.port === o.port &&
        e.meshed === o.meshed &&
        e.serviceAccount === o.serviceAccount
      );
    })
  );
}

function buildService(resource: Resource<ServiceSpec>, endpoints: ServiceEndpoint[]): Service {
  const { name, namespace } = resource.metadata;
  const { spec } = resource;
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

/**
 * Kubernetes mode: the slices' ready addresses; those of pods an agent enrolled go through the
 * mesh (tunnel, identity), the others (a pod opted out, not yet enrolled) are dialled directly.
 */
function clusterServiceEndpoints(cluster: readonly ClusterEndpoint[], enrolled: NodePod[]): ServiceEndpoint[] {
  const byIp = new Map(enrolled.map((pod) => [pod.ip, pod]));
  return cluster.map((e) => {
    const pod = byIp.get(e.ip);
    if (pod) return toEndpoint(pod);
    return { ip: e.ip, ...(e.node ? { node: e.node } : {}), ...(e.pod ? { pod: e.pod } : {}), meshed: false };
  });
}

/**
 * A table keeps one fingerprint per entry for as long as the entry lives: the JSON itself was 8 MB
 * of a 10,000-Service table's heap, its SHA-256 is 44 bytes. (SHA-256, not a faster hash: a
 * collision would keep a changed Service from the agents.)
 */
function fingerprintOf(canonical: string): string {
  return hash("sha256", canonical, "base64");
}

function serviceEntry(
  resource: Resource<ServiceSpec>,
  pods: PodIndex,
  cluster: readonly ClusterEndpoint[] | undefined,
  previous?: TableEntry,
): TableEntry {
  const selected = pods.select(resource.metadata.namespace, resource.spec.selector);
  const endpoints = (cluster ? clusterServiceEndpoints(cluster, selected) : selected.map(toEndpoint)).sort(
    byPodAddress,
  );
  if (previous?.source === resource && sameEndpoints(previous.service.endpoints, endpoints)) return previous;
  const service = buildService(resource, endpoints);
  const { namespace, name, generation } = resource.metadata;
  return {
    service,
    fingerprint: fingerprintOf(JSON.stringify(service)),
    resource: { key: resourceKey("services", namespace, name), generation },
    source: resource,
  };
}

function trafficEntry(resource: Resource, previous?: TrafficEntry): TrafficEntry {
  if (previous?.source === resource) return previous;
  const { name, namespace, generation } = resource.metadata;
  const object = { kind: resource.kind, name, namespace, spec: resource.spec } as TrafficObject;
  return {
    object,
    fingerprint: fingerprintOf(canonicalJson(object.spec)),
    resource: { key: resourceKey(kindOf(resource)!.plural, namespace, name), generation },
    source: resource,
  };
}

function buildServices(input: TableInput): ReadonlyMap<string, TableEntry> {
  const { previous } = input;
  if (input.servicesUnchanged && previous) return previous.services;
  const pods = input.pods instanceof PodIndex ? input.pods : PodIndex.of(input.pods);
  // What may have changed since `previous`: the Services whose resource is another object, those
  // selecting a pod that changed, and all of them when the EndpointSlices did or nothing says which pods.
  const recomputeAll = !previous || !input.changedPods || input.clusterEndpoints !== previous.clusterEndpoints;
  const selecting = recomputeAll ? undefined : servicesSelecting(input.services, input.changedPods!);
  const services = new Map<string, TableEntry>();
  for (const resource of input.services) {
    const key = serviceKey(resource.metadata);
    const before = previous?.services.get(key);
    if (before?.source === resource && selecting && !selecting.has(key)) {
      services.set(key, before);
      continue;
    }
    const cluster = input.clusterEndpoints && (input.clusterEndpoints.get(key) ?? []);
    services.set(key, serviceEntry(resource, pods, cluster, before));
  }
  return services;
}

export function buildServiceTable(input: TableInput): ConfigTable {
  const services = buildServices(input);
  const traffic = new Map<string, TrafficEntry>();
  for (const resource of input.traffic ?? []) {
    const key = trafficKey({ kind: resource.kind, ...resource.metadata });
    traffic.set(key, trafficEntry(resource, input.previous?.traffic.get(key)));
  }
  const peers = [...input.nodes].sort((a, b) => a.name.localeCompare(b.name));
  return {
    version: input.version,
    services,
    traffic,
    peers,
    ...(input.clusterEndpoints ? { clusterEndpoints: input.clusterEndpoints } : {}),
  };
}

/** Whether `b` holds what `a` does: the same entries (by identity: a rebuild reuses unchanged ones) and peers. */
export function sameTableContent(a: ConfigTable, b: ConfigTable): boolean {
  const sameEntries = <T>(x: ReadonlyMap<string, T>, y: ReadonlyMap<string, T>) =>
    x.size === y.size && [...y].every(([key, entry]) => x.get(key) === entry);
  return (
    sameEntries(a.services, b.services) &&
    sameEntries(a.traffic, b.traffic) &&
    a.peers.length === b.peers.length &&
    a.peers.every((p, i) => p.name === b.peers[i]!.name && p.underlayIp === b.peers[i]!.underlayIp)
  );
}
