// The enrollment contract between the init container (client) and the node agent (server):
// HTTP/1.1 over the agent's unix socket (try it with `curl --unix-socket`).
//
//   POST   /v1/pods                      body: PodEnrollment → 200 EnrollmentReply | 4xx ErrorReply
//   DELETE /v1/pods/{namespace}/{name}   → 200 | 404 ErrorReply
//   GET    /v1/pods                      → 200 { pods: EnrolledPod[] }
//
// The agent identifies the pod's network namespace from the caller: `netnsPath` when given,
// otherwise the namespace of the calling process (SO_PEERCRED), so the init container must make
// the call from inside the pod's namespace.

export interface PodEnrollment {
  name: string;
  namespace: string;
  /** The pod's IPv4 address. */
  ip: string;
  /** A path that opens the pod's network namespace, e.g. /var/run/netns/cni-1234. Optional. */
  netnsPath?: string;
  labels: Record<string, string>;
  serviceAccount: string;
}

export interface EnrolledPod extends PodEnrollment {
  netnsPath: string;
  enrolledAt: string;
}

export interface EnrollmentReply {
  status: "enrolled";
  pod: EnrolledPod;
}

export interface ErrorReply {
  error: { code: string; message: string; field?: string };
}

/** A pod's workload as Istio names it: the `app` label, else `app.kubernetes.io/name`, else the pod. */
export function workloadName(pod: { name: string; labels?: Readonly<Record<string, string>> }): string {
  return pod.labels?.app ?? pod.labels?.["app.kubernetes.io/name"] ?? pod.name;
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

export function isIPv4(value: string): boolean {
  return IPV4.test(value);
}

/** Checks a decoded request body; returns the first problem with the field it concerns. */
export function validateEnrollment(
  body: unknown,
): { ok: true; value: PodEnrollment } | { ok: false; field: string; message: string } {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    return { ok: false, field: "", message: "body must be a JSON object" };
  }
  const b = body as Record<string, unknown>;
  const allowed = new Set(["name", "namespace", "ip", "netnsPath", "labels", "serviceAccount"]);
  for (const key of Object.keys(b)) {
    if (!allowed.has(key)) return { ok: false, field: key, message: `unknown field "${key}"` };
  }
  for (const key of ["name", "namespace"] as const) {
    const v = b[key];
    if (typeof v !== "string" || v.length > 253 || !DNS_LABEL.test(v)) {
      return { ok: false, field: key, message: `${key} must be a DNS label (lowercase letters, digits, '-')` };
    }
  }
  if (typeof b.ip !== "string" || !isIPv4(b.ip))
    return { ok: false, field: "ip", message: "ip must be an IPv4 address" };
  if (b.netnsPath !== undefined && (typeof b.netnsPath !== "string" || !b.netnsPath.startsWith("/"))) {
    return { ok: false, field: "netnsPath", message: "netnsPath must be an absolute path" };
  }
  const labels = b.labels ?? {};
  if (typeof labels !== "object" || labels === null || Array.isArray(labels)) {
    return { ok: false, field: "labels", message: "labels must be an object of strings" };
  }
  for (const [k, v] of Object.entries(labels)) {
    if (typeof v !== "string") return { ok: false, field: `labels.${k}`, message: "label values must be strings" };
  }
  const serviceAccount = b.serviceAccount ?? "default";
  if (typeof serviceAccount !== "string" || !DNS_LABEL.test(serviceAccount)) {
    return { ok: false, field: "serviceAccount", message: "serviceAccount must be a DNS label" };
  }
  return {
    ok: true,
    value: {
      name: b.name as string,
      namespace: b.namespace as string,
      ip: b.ip,
      ...(b.netnsPath !== undefined ? { netnsPath: b.netnsPath as string } : {}),
      labels: labels as Record<string, string>,
      serviceAccount,
    },
  };
}
