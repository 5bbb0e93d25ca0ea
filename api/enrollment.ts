// The enrollment contract between the init container (client) and the node agent (server):
// HTTP/1.1 over the agent's unix socket (try it with `curl --unix-socket`).
//
//   POST   /v1/pods                      body: PodEnrollment → 200 EnrollmentReply | 4xx ErrorReply
//   DELETE /v1/pods/{namespace}/{name}   → 200 | 403 | 404 ErrorReply
//   GET    /v1/pods                      → 200 { pods: EnrolledPod[] } | 403 (privileged callers only)
//   GET    /v1/interception              → 200 InterceptionReply (any caller: `nodemesh init --mode node`)
//
// The agent believes no claim it can check (docs/security.md, "Enrollment socket"): it takes the
// caller's network namespace from the connection (SO_PEERCRED), enrolls only that namespace
// (`netnsPath`, when given, must name it too, unless the caller is privileged), only with an
// address configured on one of its interfaces, and lets a caller remove only its own pod. So the
// init container makes the call from inside the pod's namespace.

export interface PodEnrollment {
  name: string;
  namespace: string;
  /** The pod's IPv4 address. */
  ip: string;
  /** A path that opens the pod's network namespace, e.g. /var/run/netns/cni-1234. Optional. */
  netnsPath?: string;
  labels: Record<string, string>;
  serviceAccount: string;
  /** Ports the pod's rules leave out of inbound interception: the tunnel never connects to them. */
  excludeInboundPorts?: PortRange[];
}

/** Ports `first` to `last`, both included. */
export interface PortRange {
  first: number;
  last: number;
}

export interface EnrolledPod extends PodEnrollment {
  netnsPath: string;
  enrolledAt: string;
}

/** "<namespace>/<name>": how the agent's registry and the controller stream (PodsDelta) name a pod. */
export function podKey(pod: { namespace: string; name: string }): string {
  return `${pod.namespace}/${pod.name}`;
}

export interface EnrollmentReply {
  status: "enrolled";
  pod: EnrolledPod;
}

/** The node's interception mode (`nodemesh agent --interception`), for `nodemesh init --mode node`. */
export interface InterceptionReply {
  mode: "iptables" | "ebpf";
}

export interface ErrorReply {
  error: { code: string; message: string; field?: string };
}

/** A pod's workload as Istio names it: the `app` label, else `app.kubernetes.io/name`, else the pod. */
export function workloadName(pod: { name: string; labels?: Readonly<Record<string, string>> }): string {
  return pod.labels?.app ?? pod.labels?.["app.kubernetes.io/name"] ?? pod.name;
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

export function isIPv4(value: string): boolean {
  return IPV4.test(value);
}

/**
 * What kind of address an IPv4 `ip` is when it cannot be a pod's, else undefined. Loopback and
 * link-local above all: there an address reaches local-only services of the pod (or of the node,
 * the cloud metadata server), never a workload port meant for others.
 */
export function notAPodAddress(ip: string): string | undefined {
  const [a, b] = ip.split(".").map(Number);
  if (a === 0) return "an unspecified address (0.0.0.0/8)";
  if (a === 127) return "a loopback address (127.0.0.0/8)";
  if (a === 169 && b === 254) return "a link-local address (169.254.0.0/16)";
  if (a >= 224 && a < 240) return "a multicast address (224.0.0.0/4)";
  if (a >= 240) return "a reserved or broadcast address (240.0.0.0/4)";
  return undefined;
}

/** True when `port` is in one of `ranges`. */
export function inPortRanges(port: number, ranges: readonly PortRange[] | undefined): boolean {
  return ranges?.some((r) => port >= r.first && port <= r.last) ?? false;
}
