// Objects for the store tests and the crash-test writer: a Service whose whole content follows
// from (name, seq), so a reader can tell exactly what a given acknowledged write contained.

import { API_VERSION, type Resource } from "../../api/resources.ts";

export function serviceAt(namespace: string, name: string, seq: number): Resource {
  return {
    apiVersion: API_VERSION,
    kind: "Service",
    // uid, generation, resourceVersion and creationTimestamp are the store's to assign.
    metadata: { name, namespace, labels: { seq: String(seq) } } as unknown as Resource["metadata"],
    spec: {
      vip: `10.${(seq >> 16) & 255}.${(seq >> 8) & 255}.${seq & 255}`,
      ports: [{ port: (seq % 65535) + 1, protocol: "tcp" }],
      selector: { app: name },
    },
  };
}

/** The part of a stored object that `serviceAt` decides (the rest is assigned by the store). */
export function contentOf(obj: Resource): unknown {
  return { name: obj.metadata.name, namespace: obj.metadata.namespace, labels: obj.metadata.labels, spec: obj.spec };
}
