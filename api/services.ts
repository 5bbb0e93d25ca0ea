// The service table an agent forwards by: service VIP:port → endpoints. Today it comes from a
// static JSON file (`nodemesh agent --services FILE`); the controller will stream the same shape.

import { isIPv4 } from "./enrollment.ts";
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

const PROTOCOLS: readonly string[] = ["tcp", "http", "http2", "grpc"];
const NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

function isPort(v: unknown): v is number {
  return Number.isInteger(v) && (v as number) >= 1 && (v as number) <= 65535;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function unknownFields(obj: Record<string, unknown>, allowed: readonly string[], path: string, out: FieldError[]) {
  for (const key of Object.keys(obj)) {
    if (!allowed.includes(key)) out.push({ field: `${path}.${key}`, message: "unknown field" });
  }
}

function validateTraffic(traffic: unknown, errors: FieldError[]): void {
  if (traffic === undefined) return;
  if (!Array.isArray(traffic)) {
    errors.push({ field: "traffic", message: "must be an array" });
    return;
  }
  const seen = new Set<string>();
  traffic.forEach((obj: unknown, i: number) => {
    // parseTrafficObject checks the spec strictly but not the fields around it.
    if (isObject(obj)) unknownFields(obj, ["kind", "name", "namespace", "spec"], `traffic[${i}]`, errors);
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
  const errors: FieldError[] = [];
  if (!isObject(input) || !Array.isArray(input.services)) {
    return [{ field: "services", message: "must be an array" }];
  }
  unknownFields(input, ["services", "traffic"], "", errors);
  validateTraffic(input.traffic, errors);
  const seenVipPorts = new Set<string>();
  input.services.forEach((svc: unknown, i: number) => {
    const at = `services[${i}]`;
    if (!isObject(svc)) {
      errors.push({ field: at, message: "must be an object" });
      return;
    }
    unknownFields(svc, ["name", "namespace", "vip", "ports", "endpoints"], at, errors);
    for (const key of ["name", "namespace"]) {
      if (typeof svc[key] !== "string" || !NAME.test(svc[key] as string)) {
        errors.push({ field: `${at}.${key}`, message: "must be a DNS label" });
      }
    }
    if (typeof svc.vip !== "string" || !isIPv4(svc.vip)) errors.push({ field: `${at}.vip`, message: "must be IPv4" });
    if (!Array.isArray(svc.ports) || svc.ports.length === 0) {
      errors.push({ field: `${at}.ports`, message: "must be a non-empty array" });
    } else {
      svc.ports.forEach((p: unknown, j: number) => {
        const pat = `${at}.ports[${j}]`;
        if (!isObject(p)) {
          errors.push({ field: pat, message: "must be an object" });
          return;
        }
        unknownFields(p, ["name", "port", "targetPort", "protocol"], pat, errors);
        if (!isPort(p.port)) errors.push({ field: `${pat}.port`, message: "must be an integer 1-65535" });
        if (p.targetPort !== undefined && !isPort(p.targetPort)) {
          errors.push({ field: `${pat}.targetPort`, message: "must be an integer 1-65535" });
        }
        if (p.protocol !== undefined && !PROTOCOLS.includes(p.protocol as string)) {
          errors.push({ field: `${pat}.protocol`, message: `must be one of ${PROTOCOLS.join(", ")}` });
        }
        const key = `${svc.vip}:${p.port}`;
        if (seenVipPorts.has(key)) errors.push({ field: `${pat}.port`, message: `duplicate VIP:port ${key}` });
        seenVipPorts.add(key);
      });
    }
    if (!Array.isArray(svc.endpoints)) {
      errors.push({ field: `${at}.endpoints`, message: "must be an array" });
    } else {
      svc.endpoints.forEach((e: unknown, j: number) => {
        const eat = `${at}.endpoints[${j}]`;
        if (!isObject(e)) {
          errors.push({ field: eat, message: "must be an object" });
          return;
        }
        unknownFields(e, ["ip", "port", "node", "pod", "meshed", "workload", "serviceAccount"], eat, errors);
        if (typeof e.ip !== "string" || !isIPv4(e.ip)) errors.push({ field: `${eat}.ip`, message: "must be IPv4" });
        if (e.port !== undefined && !isPort(e.port)) errors.push({ field: `${eat}.port`, message: "must be 1-65535" });
        if (e.meshed !== undefined && typeof e.meshed !== "boolean") {
          errors.push({ field: `${eat}.meshed`, message: "must be a boolean" });
        }
      });
    }
  });
  return errors;
}
