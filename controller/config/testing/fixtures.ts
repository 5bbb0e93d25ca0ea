// Test data shared by the config tests.

import { API_VERSION, type Resource, type ServiceSpec } from "../../../api/resources.ts";
import type { NodePod } from "../service-table.ts";

export function serviceResource(
  name: string,
  opts: {
    namespace?: string;
    vip?: string;
    selector?: Record<string, string>;
    generation?: number;
    targetPort?: number;
  } = {},
): Resource<ServiceSpec> {
  const namespace = opts.namespace ?? "default";
  return {
    apiVersion: API_VERSION,
    kind: "Service",
    metadata: {
      name,
      namespace,
      uid: `uid-${namespace}-${name}`,
      resourceVersion: "1",
      generation: opts.generation ?? 1,
      creationTimestamp: "2025-01-01T00:00:00Z",
    },
    spec: {
      vip: opts.vip ?? "10.96.0.10",
      ports: [{ port: 80, protocol: "http", ...(opts.targetPort ? { targetPort: opts.targetPort } : {}) }],
      selector: opts.selector ?? { app: name },
    },
  };
}

/** The unvalidated object a client would hand to Store.create. */
export function newServiceObject(name: string, vip: string, selector: Record<string, string>, namespace = "default") {
  const { metadata: _, ...rest } = serviceResource(name, { namespace, vip, selector });
  return { ...rest, metadata: { name, namespace } } as unknown as Resource;
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
