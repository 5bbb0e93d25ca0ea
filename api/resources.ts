// Resources: Kubernetes-style objects, one schema source per kind. Each kind's zod schema gives
// the TypeScript type (z.infer), the REST validation (strict: unknown fields are refused, errors
// carry field paths) and, through z.toJSONSchema, the OpenAPI / CRD openAPIV3Schema.
//
// Adding a kind = a spec schema here (or in api/traffic.ts) plus an entry in KINDS.

import { z } from "zod";
import {
  AuthorizationPolicySpec,
  GATEWAY_GROUP,
  GATEWAY_VERSION,
  GRPCRouteSpec,
  HTTPRouteSpec,
  PeerAuthenticationSpec,
  RequestAuthenticationSpec,
  TrafficPolicySpec,
} from "./traffic.ts";

export const GROUP = "nodemesh.io";
export const VERSION = "v1alpha1";
export const API_VERSION = `${GROUP}/${VERSION}`;

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

export const Name = z.string().max(63).regex(DNS_LABEL, "must be a DNS label: lowercase letters, digits and '-'");
export const Port = z.number().int().min(1).max(65535);
export const LabelMap = z.record(z.string().max(253), z.string().max(63));

export const ObjectMeta = z.strictObject({
  name: Name,
  namespace: Name.optional(),
  uid: z.string().optional(),
  resourceVersion: z.string().optional(),
  generation: z.number().int().optional(),
  labels: LabelMap.optional(),
  annotations: z.record(z.string(), z.string()).optional(),
  creationTimestamp: z.string().optional(),
});
export type ObjectMeta = z.infer<typeof ObjectMeta>;

/** A Kubernetes condition (metav1.Condition), as the controller writes it on Kubernetes. */
export const Condition = z.strictObject({
  type: z.string(),
  status: z.enum(["True", "False", "Unknown"]),
  reason: z.string().optional(),
  message: z.string().optional(),
  observedGeneration: z.number().int().optional(),
  lastTransitionTime: z.string().optional(),
});
export type Condition = z.infer<typeof Condition>;

/** Status every kind carries: how many agents applied the object's current generation. */
export const PropagationStatus = z.strictObject({
  observedGeneration: z.number().int().optional(),
  agentsApplied: z.number().int().optional(),
  agentsTotal: z.number().int().optional(),
  /** Agents that received this generation and refused it (each says why in `rejections`). */
  agentsRejected: z.number().int().optional(),
  rejections: z.array(z.strictObject({ node: z.string(), reason: z.string() })).optional(),
  lastAppliedTime: z.string().optional(),
  /** "N/M", for `kubectl get` (a printer column cannot join two fields). Written on Kubernetes. */
  applied: z.string().optional(),
  /**
   * `Accepted` (cross-object checks, controller/config/analysis.ts), `ResolvedRefs` (routes) and
   * `Applied` (True once every connected agent applied this generation; False naming the agents
   * that refused it).
   */
  conditions: z.array(Condition).optional(),
  /** Only in a dry run's answer: what the write would change in the agents' tables. */
  dryRun: z
    .strictObject({
      /** The connected agents, each of which would receive these changes. */
      agents: z.array(z.string()),
      /** "+ Service default/web", "~ HTTPRoute default/split", "- TrafficPolicy default/old". */
      changes: z.array(z.string()),
    })
    .optional(),
});
export type PropagationStatus = z.infer<typeof PropagationStatus>;

export const ServicePortSpec = z.strictObject({
  name: Name.optional(),
  port: Port,
  targetPort: Port.optional(),
  /** Absent: the agent detects the protocol. */
  protocol: z.enum(["tcp", "http", "http2", "grpc"]).optional(),
});

export const ServiceSpec = z
  .strictObject({
    vip: z.string().regex(IPV4, "must be an IPv4 address"),
    ports: z.array(ServicePortSpec).min(1),
    selector: LabelMap.refine((m) => Object.keys(m).length > 0, "must select at least one label"),
  })
  .superRefine((spec, ctx) => {
    const seen = new Set<number>();
    spec.ports.forEach((p, i) => {
      if (seen.has(p.port))
        ctx.addIssue({ code: "custom", path: ["ports", i, "port"], message: `duplicate port ${p.port}` });
      seen.add(p.port);
    });
  });
export type ServiceSpec = z.infer<typeof ServiceSpec>;

/** One entry per kind: what the REST API, the store, the CRDs and the config stream need. */
export interface KindInfo {
  kind: string;
  /** Also the kind's name in the store and in propagation keys: unique across groups. */
  plural: string;
  group: string;
  version: string;
  namespaced: boolean;
  spec: z.ZodType;
}

const gateway = { group: GATEWAY_GROUP, version: GATEWAY_VERSION, namespaced: true };
const nodemesh = { group: GROUP, version: VERSION, namespaced: true };

export const KINDS: readonly KindInfo[] = [
  { kind: "Service", plural: "services", ...nodemesh, spec: ServiceSpec },
  { kind: "HTTPRoute", plural: "httproutes", ...gateway, spec: HTTPRouteSpec },
  { kind: "GRPCRoute", plural: "grpcroutes", ...gateway, spec: GRPCRouteSpec },
  { kind: "TrafficPolicy", plural: "trafficpolicies", ...nodemesh, spec: TrafficPolicySpec },
  { kind: "AuthorizationPolicy", plural: "authorizationpolicies", ...nodemesh, spec: AuthorizationPolicySpec },
  { kind: "PeerAuthentication", plural: "peerauthentications", ...nodemesh, spec: PeerAuthenticationSpec },
  { kind: "RequestAuthentication", plural: "requestauthentications", ...nodemesh, spec: RequestAuthenticationSpec },
];

// The store, the propagation keys and the CLI name a kind by its plural or its kind alone, so
// neither may repeat in another group.
for (const name of ["plural", "kind"] as const) {
  const values = KINDS.map((k) => k[name].toLowerCase());
  const repeated = values.find((v, i) => values.indexOf(v) !== i);
  if (repeated) throw new Error(`KINDS: ${name} ${repeated} appears twice`);
}

export function apiVersionOf(kind: KindInfo): string {
  return `${kind.group}/${kind.version}`;
}

/** The plural (the store's and propagation keys' name) of a kind named alone; kind names are unique. */
export function pluralOf(kind: string): string | undefined {
  return KINDS.find((k) => k.kind === kind)?.plural;
}

/** The kind of an object, by apiVersion and kind. */
export function kindOf(obj: { apiVersion?: unknown; kind?: unknown }): KindInfo | undefined {
  return KINDS.find((k) => k.kind === obj.kind && apiVersionOf(k) === obj.apiVersion);
}

/** The stored shape of any object. */
export interface Resource<Spec = unknown> {
  apiVersion: string;
  kind: string;
  metadata: ObjectMeta & {
    name: string;
    namespace: string;
    uid: string;
    resourceVersion: string;
    generation: number;
    creationTimestamp: string;
  };
  spec: Spec;
  status?: PropagationStatus;
}

function buildObjectSchema(info: KindInfo) {
  return z.strictObject({
    apiVersion: z.literal(apiVersionOf(info)),
    kind: z.literal(info.kind),
    metadata: ObjectMeta,
    spec: info.spec,
    status: PropagationStatus.optional(),
  });
}

// Built once per kind: zod compiles each new object schema on first use, which for a store of
// 10,000 Services loaded one by one cost ~0.4 s of CPU and a hundred MB of garbage at start.
const objectSchemas = new Map<KindInfo, ReturnType<typeof buildObjectSchema>>();

/** The whole stored object's schema for a kind. */
export function objectSchema(info: KindInfo): ReturnType<typeof buildObjectSchema> {
  let schema = objectSchemas.get(info);
  if (!schema) {
    schema = buildObjectSchema(info);
    objectSchemas.set(info, schema);
  }
  return schema;
}
