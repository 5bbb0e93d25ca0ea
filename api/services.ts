// The service table an agent forwards by: service VIP:port → endpoints, and the traffic objects.
// It comes from the controller's stream (agent/control/config-assembly.ts), or from a static JSON
// file (`nodemesh agent --services FILE`) in the same shape.

import { z } from "zod";
import { isIPv4 } from "./enrollment.ts";
import { fieldErrors, fieldPath } from "./field-path.ts";
import { parseTrafficObject, type TrafficObject, trafficKey } from "./traffic.ts";

export type PortProtocol = "tcp" | "http" | "http2" | "grpc";

export interface ServicePort {
  name?: string;
  port: number;
  /** The port the endpoints listen on; defaults to `port`. */
  targetPort?: number;
  protocol?: PortProtocol;
}

export interface ServiceEndpoint {
  ip: string;
  /** Overrides the service's targetPort for this endpoint (tests use it to tell endpoints apart). */
  port?: number;
  node?: string;
  pod?: string;
  /**
   * The endpoint's pod is enrolled with an agent, so the connection goes agent to agent through
   * the tunnel port and a dead endpoint is noticed before the client is committed to it.
   */
  meshed?: boolean;
  /** The pod's workload name (its `app` label, else its name); labels metrics. */
  workload?: string;
  /**
   * A meshed endpoint's service account: its agent presents the certificate of
   * spiffe://<trust domain>/ns/<pod namespace>/sa/<this> on the tunnel, and callers check it.
   */
  serviceAccount?: string;
}

export interface Service {
  name: string;
  namespace: string;
  vip: string;
  ports: ServicePort[];
  endpoints: ServiceEndpoint[];
}

export interface ServiceTable {
  services: Service[];
  /** HTTPRoutes, GRPCRoutes and TrafficPolicies (api/traffic.ts); absent means none. */
  traffic?: TrafficObject[];
}

export interface FieldError {
  field: string;
  message: string;
}

const PROTOCOLS = ["tcp", "http", "http2", "grpc"] as const;
const NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

const PortNumber = (message: string) => z.number({ error: message }).int(message).min(1, message).max(65535, message);
const IPv4 = z.string({ error: "must be IPv4" }).refine(isIPv4, "must be IPv4");
const DnsLabel = z.string({ error: "must be a DNS label" }).regex(NAME, "must be a DNS label");

const ServicePortSchema = z.strictObject({
  name: z.string().optional(),
  port: PortNumber("must be an integer 1-65535"),
  targetPort: PortNumber("must be an integer 1-65535").optional(),
  protocol: z.enum(PROTOCOLS, { error: `must be one of ${PROTOCOLS.join(", ")}` }).optional(),
});

const EndpointSchema = z.strictObject({
  ip: IPv4,
  port: PortNumber("must be 1-65535").optional(),
  node: z.string().optional(),
  pod: z.string().optional(),
  meshed: z.boolean({ error: "must be a boolean" }).optional(),
  workload: z.string().optional(),
  serviceAccount: z.string().optional(),
});

const ServiceSchema = z.strictObject({
  name: DnsLabel,
  namespace: DnsLabel,
  vip: IPv4,
  ports: z.array(ServicePortSchema, { error: "must be a non-empty array" }).min(1, "must be a non-empty array"),
  endpoints: z.array(EndpointSchema, { error: "must be an array" }),
});

/** A traffic object's envelope; its spec is checked by its kind's schema (parseTrafficObject). */
const TrafficEnvelope = z.strictObject({
  kind: z.unknown(),
  name: z.unknown(),
  namespace: z.unknown(),
  spec: z.unknown(),
});

const ServiceTableSchema = z.strictObject({
  services: z.array(ServiceSchema, { error: "must be an array" }),
  traffic: z.array(z.unknown(), { error: "must be an array" }).optional(),
});

/** Each problem of a failed parse, by field path. */
function problems(schema: z.core.$ZodType, value: unknown, at: PropertyKey[] = []): FieldError[] {
  const parsed = z.safeParse(schema, value);
  if (parsed.success) return [];
  return fieldErrors(schema, parsed.error.issues).map((e) => ({
    field: fieldPath([...at, ...e.path]),
    message: e.message,
  }));
}

function validateTraffic(traffic: unknown, errors: FieldError[]): void {
  if (!Array.isArray(traffic)) return; // absent, or already reported by the table's schema
  const seen = new Set<string>();
  traffic.forEach((obj: unknown, i: number) => {
    // parseTrafficObject checks the spec strictly but not the fields around it.
    errors.push(...problems(TrafficEnvelope, obj, ["traffic", i]).filter((e) => e.message.startsWith("unknown")));
    const result = parseTrafficObject(obj);
    if (!result.ok) {
      for (const e of result.errors) {
        errors.push({ field: e.field ? `traffic[${i}].${e.field}` : `traffic[${i}]`, message: e.message });
      }
      return;
    }
    const key = trafficKey(result.value);
    if (seen.has(key)) errors.push({ field: `traffic[${i}]`, message: `duplicate ${key}` });
    seen.add(key);
  });
}

/**
 * Parses the traffic objects of a table that validateServiceTable accepted, with defaults filled in.
 * (Objects from the controller already carry them; a hand-written `--services` file may not.)
 */
export function parseTraffic(table: ServiceTable): TrafficObject[] {
  return (table.traffic ?? []).map((obj) => {
    const result = parseTrafficObject(obj);
    if (!result.ok) throw new Error(`invalid traffic object ${trafficKey(obj)}`);
    return result.value;
  });
}

/** Validates a decoded service table; returns every problem with its field path, or none. */
export function validateServiceTable(input: unknown): FieldError[] {
  if (typeof input !== "object" || input === null || !Array.isArray((input as { services?: unknown }).services)) {
    return [{ field: "services", message: "must be an array" }];
  }
  const errors = problems(ServiceTableSchema, input);
  const table = input as { services: unknown[]; traffic?: unknown };
  validateTraffic(table.traffic, errors);
  // One VIP:port, one Service: the second to claim it is named.
  const seenVipPorts = new Set<string>();
  table.services.forEach((svc, i) => {
    const { vip, ports } = (svc ?? {}) as { vip?: unknown; ports?: unknown };
    // Values of any shape arrive here (a file): only a string VIP and numbers make a key.
    if (typeof vip !== "string" || !Array.isArray(ports)) return;
    ports.forEach((p: unknown, j: number) => {
      const port = (p as { port?: unknown } | null)?.port;
      if (typeof port !== "number") return;
      const key = `${vip}:${port}`;
      if (seenVipPorts.has(key))
        errors.push({ field: `services[${i}].ports[${j}].port`, message: `duplicate VIP:port ${key}` });
      seenVipPorts.add(key);
    });
  });
  return errors;
}
