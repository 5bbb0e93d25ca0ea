// Test data shared by the config tests.

import { createHash } from "node:crypto";
import type { NodeFacts, Report } from "../../../api/agent-service.ts";
import { apiVersionOf, KINDS, type Resource, type ServiceSpec } from "../../../api/resources.ts";
import { HTTPRouteSpec, TrafficPolicySpec } from "../../../api/traffic.ts";
import type { NodePod } from "../pod-index.ts";

interface StoredOptions {
  namespace?: string;
  generation?: number;
}

/** An object as the store holds it (server-assigned metadata filled in). */
function stored<Spec>(kind: string, name: string, spec: Spec, opts: StoredOptions): Resource<Spec> {
  const namespace = opts.namespace ?? "default";
  return {
    apiVersion: apiVersionOf(KINDS.find((k) => k.kind === kind)!),
    kind,
    metadata: {
      name,
      namespace,
      uid: `uid-${namespace}-${name}`,
      resourceVersion: "1",
      generation: opts.generation ?? 1,
      creationTimestamp: "2025-01-01T00:00:00Z",
    },
    spec,
  };
}

/** The object a client would hand to Store.create (no server-assigned metadata). */
export function asNewObject(obj: Resource): Resource {
  const { name, namespace } = obj.metadata;
  return { ...obj, metadata: { name, namespace } } as unknown as Resource;
}

export function serviceResource(
  name: string,
  opts: StoredOptions & { vip?: string; selector?: Record<string, string>; targetPort?: number } = {},
): Resource<ServiceSpec> {
  return stored(
    "Service",
    name,
    {
      vip: opts.vip ?? "10.96.0.10",
      ports: [{ port: 80, protocol: "http", ...(opts.targetPort ? { targetPort: opts.targetPort } : {}) }],
      selector: opts.selector ?? { app: name },
    },
    opts,
  );
}

export function newServiceObject(name: string, vip: string, selector: Record<string, string>, namespace = "default") {
  return asNewObject(serviceResource(name, { namespace, vip, selector }));
}

/** An HTTPRoute sending `parent`'s traffic to `backends`, spec validated with defaults filled in. */
export function httpRouteResource(
  name: string,
  opts: StoredOptions & { parent?: string; backends?: string[] } = {},
): Resource<HTTPRouteSpec> {
  const spec = HTTPRouteSpec.parse({
    parentRefs: [{ name: opts.parent ?? "web" }],
    rules: [{ backendRefs: (opts.backends ?? ["web-v1"]).map((backend) => ({ name: backend })) }],
  });
  return stored("HTTPRoute", name, spec, opts);
}

/** A TrafficPolicy retrying requests to `target`, spec validated with defaults filled in. */
export function trafficPolicyResource(
  name: string,
  opts: StoredOptions & { target?: string; attempts?: number } = {},
): Resource<TrafficPolicySpec> {
  const spec = TrafficPolicySpec.parse({
    targetRefs: [{ name: opts.target ?? "web" }],
    retries: { attempts: opts.attempts ?? 2 },
  });
  return stored("TrafficPolicy", name, spec, opts);
}

export function pod(
  name: string,
  ip: string,
  labels: Record<string, string>,
  node = "node-a",
  namespace = "default",
): NodePod {
  return { name, namespace, ip, labels, node };
}

/** What a simulated agent says of its node in its Hello. */
/**
 * The node secret a simulated agent of `node` presents: the same for every simulated agent of a
 * node name, as a real agent keeps its own in its state dir across restarts.
 */
export function simNodeSecret(node: string): string {
  return createHash("sha256").update(`sim-node-secret:${node}`).digest("base64url");
}

export const SIM_NODE_FACTS: NodeFacts = {
  cpuModel: "sim",
  cpuCores: 2,
  memoryBytes: 1 << 30,
  os: "sim",
  kernel: "6.0",
  interfaces: [],
};

/** An agent's report with nothing in it (no pods, probes or edges), and `fields`. */
export function emptyReport(fields: Partial<Report> = {}): Report {
  return {
    health: { ready: true, detail: "" },
    pods: [],
    traffic: { connectionsOpened: 0, connectionsClosed: 0, bytesReceived: 0, bytesSent: 0 },
    peers: [],
    edges: [],
    intervalSeconds: 5,
    ...fields,
  };
}
