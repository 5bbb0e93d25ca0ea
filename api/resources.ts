// Resources: Kubernetes-style objects, one schema source per kind. Each kind's zod schema gives
// the TypeScript type (z.infer), the REST validation (strict: unknown fields are refused, errors
// carry field paths) and, through z.toJSONSchema, the OpenAPI / CRD openAPIV3Schema.
//
// Adding a kind = a spec schema here plus an entry in KINDS.

import { z } from "zod";

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

/** Status every kind carries: how many agents applied the object's current generation. */
export const PropagationStatus = z.strictObject({
  observedGeneration: z.number().int().optional(),
  agentsApplied: z.number().int().optional(),
  agentsTotal: z.number().int().optional(),
  lastAppliedTime: z.string().optional(),
});
export type PropagationStatus = z.infer<typeof PropagationStatus>;

export const ServicePortSpec = z.strictObject({
  name: Name.optional(),
  port: Port,
  targetPort: Port.optional(),
  protocol: z.enum(["tcp", "http", "http2", "grpc"]).default("tcp"),
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
  plural: string;
  group: string;
  version: string;
  namespaced: boolean;
  spec: z.ZodType;
}

export const KINDS: readonly KindInfo[] = [
  { kind: "Service", plural: "services", group: GROUP, version: VERSION, namespaced: true, spec: ServiceSpec },
];

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

export function objectSchema(info: KindInfo) {
  return z.strictObject({
    apiVersion: z.literal(`${info.group}/${info.version}`),
    kind: z.literal(info.kind),
    metadata: ObjectMeta,
    spec: info.spec,
    status: PropagationStatus.optional(),
  });
}
