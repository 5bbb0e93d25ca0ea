// Kubernetes objects → the resources the controller's service table is built from, pure.
// - core/v1 Service of an opted-in namespace → a nodemesh Service: ClusterIP as the VIP, TCP
//   ports, `appProtocol` as the declared protocol, the selector. Services of other namespaces are
//   left out: traffic to them passes through the agent to its original destination (kube-proxy's
//   ClusterIP).
// - discovery.k8s.io/v1 EndpointSlices → each Service's ready endpoints (sliceEndpoints): the
//   endpoints of its nodemesh Service, meshed where an agent enrolled the pod.
// - HTTPRoute, GRPCRoute (Gateway API) and TrafficPolicy → the same kinds, validated by the same
//   zod schemas as the REST API; an invalid one is reported (its status says why), never applied.

import { fieldPath } from "../../api/field-path.ts";
import { INTERCEPT_ANNOTATION } from "../../api/kubernetes.ts";
import { KINDS, type KindInfo, type Resource, ServiceSpec } from "../../api/resources.ts";

type Json = Record<string, unknown>;

export interface KubeMeta {
  name?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  creationTimestamp?: string | Date;
}

export interface KubeObjectLike {
  apiVersion?: string;
  kind?: string;
  metadata?: KubeMeta;
  spec?: unknown;
  status?: unknown;
}

export type Translation = { ok: true; resource: Resource } | { ok: false; reason: string };

export function namespaceIntercepted(ns: { metadata?: KubeMeta } | undefined): boolean {
  return ns?.metadata?.annotations?.[INTERCEPT_ANNOTATION] === "enabled";
}

/** The `appProtocol` values (IANA names and Kubernetes' own) that declare a protocol nodemesh knows. */
const APP_PROTOCOLS: Readonly<Record<string, "tcp" | "http" | "http2" | "grpc">> = {
  tcp: "tcp",
  http: "http",
  "kubernetes.io/h2c": "http2",
  h2c: "http2",
  http2: "http2",
  grpc: "grpc",
};

/** The metadata the mirror keeps; uid, generation and resourceVersion are restamped by the mirror store. */
function metadataOf(meta: KubeMeta): Resource["metadata"] {
  const created = meta.creationTimestamp;
  return {
    name: meta.name ?? "",
    namespace: meta.namespace ?? "",
    uid: meta.uid ?? "",
    resourceVersion: meta.resourceVersion ?? "",
    generation: meta.generation ?? 1,
    ...(meta.labels ? { labels: meta.labels } : {}),
    ...(meta.annotations ? { annotations: meta.annotations } : {}),
    creationTimestamp: created instanceof Date ? created.toISOString() : (created ?? ""),
  };
}

interface KubeServicePort {
  name?: string;
  port?: number;
  targetPort?: number | string;
  protocol?: string;
  appProtocol?: string;
}

/** A core/v1 Service → a nodemesh Service. */
export function translateService(svc: KubeObjectLike): Translation {
  const spec = (svc.spec ?? {}) as {
    type?: string;
    clusterIP?: string;
    selector?: Record<string, string>;
    ports?: KubeServicePort[];
  };
  if (spec.type === "ExternalName") return { ok: false, reason: "ExternalName Service" };
  if (!spec.clusterIP || spec.clusterIP === "None") return { ok: false, reason: "headless Service (no ClusterIP)" };
  if (!spec.selector || Object.keys(spec.selector).length === 0)
    return { ok: false, reason: "Service without a selector (its endpoints are not pods nodemesh knows)" };
  const ports = (spec.ports ?? [])
    // UDP and SCTP are not intercepted; a named targetPort resolves per pod, which the table cannot say.
    .filter((p) => (p.protocol ?? "TCP") === "TCP" && typeof p.targetPort !== "string")
    .map((p) => {
      const protocol = p.appProtocol ? APP_PROTOCOLS[p.appProtocol.toLowerCase()] : undefined;
      return {
        ...(p.name ? { name: p.name } : {}),
        port: p.port,
        ...(typeof p.targetPort === "number" && p.targetPort !== p.port ? { targetPort: p.targetPort } : {}),
        ...(protocol ? { protocol } : {}),
      };
    });
  if (ports.length === 0) return { ok: false, reason: "no TCP port with a numeric targetPort" };
  const parsed = ServiceSpec.safeParse({ vip: spec.clusterIP, ports, selector: spec.selector });
  if (!parsed.success) return { ok: false, reason: describeIssues(parsed.error.issues) };
  return {
    ok: true,
    resource: {
      apiVersion: "nodemesh.io/v1alpha1",
      kind: "Service",
      metadata: metadataOf(svc.metadata ?? {}),
      spec: parsed.data,
    },
  };
}

/** Kinds read from Kubernetes as they are (same group, version and schema). */
export const WATCHED_TRAFFIC_KINDS: readonly KindInfo[] = KINDS.filter((k) =>
  ["HTTPRoute", "GRPCRoute", "TrafficPolicy"].includes(k.kind),
);

/**
 * A route with a Service among its parents (GAMMA) is the mesh's; one attached only to Gateways
 * belongs to a gateway controller and is none of ours (no table entry, no status). A missing kind
 * is a Gateway, as the Gateway API CRDs default it.
 */
export function isMeshParent(ref: { group?: string; kind?: string }): boolean {
  return ref.kind === "Service" && (ref.group ?? "") in { "": 1, core: 1 };
}

export function isMeshRoute(obj: KubeObjectLike): boolean {
  const parents = (obj.spec as { parentRefs?: unknown } | undefined)?.parentRefs;
  return Array.isArray(parents) && parents.some((p) => typeof p === "object" && p !== null && isMeshParent(p));
}

export function translateTraffic(kind: KindInfo, obj: KubeObjectLike): Translation {
  const parsed = kind.spec.safeParse(obj.spec);
  if (!parsed.success) return { ok: false, reason: describeIssues(parsed.error.issues, ["spec"]) };
  return {
    ok: true,
    resource: {
      apiVersion: `${kind.group}/${kind.version}`,
      kind: kind.kind,
      metadata: metadataOf(obj.metadata ?? {}),
      spec: parsed.data as Json,
    },
  };
}

function describeIssues(issues: readonly { path: PropertyKey[]; message: string }[], prefix: string[] = []): string {
  return issues
    .slice(0, 10)
    .map((i) => `${fieldPath([...prefix, ...(i.path as (string | number)[])]) || "spec"}: ${i.message}`)
    .join("; ");
}

/** The label that ties an EndpointSlice to its Service. */
export const SERVICE_NAME_LABEL = "kubernetes.io/service-name";

interface SliceEndpoint {
  addresses?: string[];
  conditions?: { ready?: boolean | null; serving?: boolean | null; terminating?: boolean | null };
  nodeName?: string;
  targetRef?: { kind?: string; name?: string; namespace?: string };
}

/** An IPv4 address the service table can carry (IPv6 Services are left out, docs/kubernetes.md). */
const IPV4 = /^(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)$/;

/**
 * The ready endpoints an EndpointSlice lists for its Service ("namespace/name" of the Service,
 * from the slice's label), as kube-proxy reads them: `ready` absent means ready; a terminating
 * endpoint is not. undefined: not a slice of an IPv4 Service.
 */
export function sliceEndpoints(
  slice: KubeObjectLike & { addressType?: string; endpoints?: SliceEndpoint[] },
): { service: string; endpoints: { ip: string; pod?: string; node?: string }[] } | undefined {
  const namespace = slice.metadata?.namespace;
  const service = slice.metadata?.labels?.[SERVICE_NAME_LABEL];
  if (!namespace || !service || slice.addressType !== "IPv4") return undefined;
  const endpoints: { ip: string; pod?: string; node?: string }[] = [];
  for (const e of slice.endpoints ?? []) {
    const ip = e.addresses?.[0];
    if (!ip || !IPV4.test(ip) || e.conditions?.ready === false || e.conditions?.terminating === true) continue;
    const pod = e.targetRef?.kind === "Pod" && e.targetRef.name ? `${namespace}/${e.targetRef.name}` : undefined;
    endpoints.push({ ip, ...(pod ? { pod } : {}), ...(e.nodeName ? { node: e.nodeName } : {}) });
  }
  return { service: `${namespace}/${service}`, endpoints };
}
