// The injection decision, pure: a Pod (as the API server sends it for admission) and its
// Namespace's annotations → the JSON patch that adds the `nodemesh init` container, or why the pod
// is left alone. A pod that should be meshed but cannot be (a bad exclusion annotation) is an
// InjectionError: the webhook refuses it rather than let it start un-intercepted.

import { DEFAULT_ENROLLMENT_SOCKET } from "../../api/dataplane.ts";
import {
  EXCLUDE_INBOUND_PORTS_ANNOTATION,
  EXCLUDE_OUTBOUND_CIDRS_ANNOTATION,
  EXCLUDE_OUTBOUND_PORTS_ANNOTATION,
  INIT_CONTAINER_NAME,
  INTERCEPT_ANNOTATION,
  INTERCEPTION_ANNOTATION,
} from "../../api/kubernetes.ts";
// The init container's own parser: what the webhook accepts is exactly what `nodemesh init` accepts.
import { parseExclusions } from "../../init-container/rules.ts";

export interface InjectionConfig {
  /** The image of the init container: the controller's own (one image holds every command). */
  image: string;
  imagePullPolicy?: "Always" | "IfNotPresent" | "Never";
  /** How the image runs `nodemesh` (the Dockerfile's layout). */
  command?: readonly string[];
}

export const DEFAULT_INIT_COMMAND: readonly string[] = ["node", "/opt/nodemesh/dist/bin/nodemesh.js", "init"];
const ENROLLMENT_DIR = DEFAULT_ENROLLMENT_SOCKET.slice(0, DEFAULT_ENROLLMENT_SOCKET.lastIndexOf("/"));
const ENROLLMENT_VOLUME = "nodemesh-enrollment";
/**
 * The eBPF mode from inside the pod: the node's cgroup v2 hierarchy (the container's own
 * /sys/fs/cgroup shows only its cgroup, in a cgroup namespace of its own), where `--cgroup parent`
 * finds the pod's cgroup; and the node's BPF filesystem, where the programs are pinned.
 */
const HOST_CGROUP_DIR = "/host/sys/fs/cgroup";
const EBPF_VOLUMES = [
  { volume: "nodemesh-cgroup", hostPath: "/sys/fs/cgroup", mountPath: HOST_CGROUP_DIR, readOnly: true },
  { volume: "nodemesh-bpffs", hostPath: "/sys/fs/bpf", mountPath: "/sys/fs/bpf", readOnly: false },
] as const;
const INTERCEPTION_MODES = ["iptables", "ebpf", "node"] as const;

export class InjectionError extends Error {}

export type JsonPatchOp = { op: "add"; path: string; value: unknown };

export type InjectionResult =
  | { injected: true; patch: JsonPatchOp[]; initContainer: Record<string, unknown> }
  | { injected: false; reason: string };

/** The part of a Pod the decision reads (the rest is left as it is). */
export interface AdmittedPod {
  metadata?: {
    name?: string;
    generateName?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
  spec?: {
    hostNetwork?: boolean;
    serviceAccountName?: string;
    initContainers?: { name?: string }[];
    containers?: unknown[];
    volumes?: { name?: string }[];
  };
}

/** JSON Pointer escaping of one path segment (RFC 6901). */
const pointer = (segment: string) => segment.replaceAll("~", "~0").replaceAll("/", "~1");

export function decideInjection(
  pod: AdmittedPod,
  namespaceAnnotations: Readonly<Record<string, string>>,
  config: InjectionConfig,
): InjectionResult {
  if (namespaceAnnotations[INTERCEPT_ANNOTATION] !== "enabled")
    return { injected: false, reason: `namespace not annotated ${INTERCEPT_ANNOTATION}: enabled` };
  const annotations = pod.metadata?.annotations ?? {};
  if (annotations[INTERCEPT_ANNOTATION] === "disabled")
    return { injected: false, reason: `pod annotated ${INTERCEPT_ANNOTATION}: disabled` };
  if (!pod.spec || !Array.isArray(pod.spec.containers)) throw new InjectionError("the pod has no spec.containers");
  // A host-network pod shares the node's namespace: rules there would redirect the whole node.
  if (pod.spec.hostNetwork) return { injected: false, reason: "hostNetwork pod: its namespace is the node's" };
  if (pod.spec.initContainers?.some((c) => c.name === INIT_CONTAINER_NAME))
    return { injected: false, reason: "already injected" };

  const mode = interceptionMode(annotations, namespaceAnnotations);
  const ebpf = mode !== "iptables"; // node: the agent may say ebpf, so the init gets what that needs
  const args = exclusionArgs(annotations);
  if (ebpf) args.push(`--mode=${mode}`, "--cgroup=parent", `--cgroup-root=${HOST_CGROUP_DIR}`);
  for (const [key, value] of Object.entries(pod.metadata?.labels ?? {})) args.push(`--label=${key}=${value}`);
  args.push(`--service-account=${pod.spec.serviceAccountName || "default"}`);
  const initContainer = {
    name: INIT_CONTAINER_NAME,
    image: config.image,
    imagePullPolicy: config.imagePullPolicy ?? "IfNotPresent",
    command: [...(config.command ?? DEFAULT_INIT_COMMAND)],
    args,
    env: [
      { name: "POD_NAME", valueFrom: { fieldRef: { fieldPath: "metadata.name" } } },
      { name: "POD_NAMESPACE", valueFrom: { fieldRef: { fieldPath: "metadata.namespace" } } },
      { name: "POD_IP", valueFrom: { fieldRef: { fieldPath: "status.podIP" } } },
    ],
    resources: { requests: { cpu: "10m", memory: "64Mi" }, limits: { memory: "256Mi" } },
    securityContext: {
      runAsUser: 0,
      runAsGroup: 0,
      runAsNonRoot: false,
      privileged: false,
      allowPrivilegeEscalation: false,
      // iptables-restore takes its lock under /run: the root filesystem stays writable.
      readOnlyRootFilesystem: false,
      // eBPF: loading and attaching (BPF), bpftool's listing of programs and maps by id (SYS_ADMIN).
      capabilities: { drop: ["ALL"], add: ["NET_ADMIN", "NET_RAW", ...(ebpf ? ["BPF", "SYS_ADMIN"] : [])] },
    },
    volumeMounts: [
      { name: ENROLLMENT_VOLUME, mountPath: ENROLLMENT_DIR },
      ...(ebpf ? EBPF_VOLUMES.map((v) => ({ name: v.volume, mountPath: v.mountPath, readOnly: v.readOnly })) : []),
    ],
  };
  const volumes = [
    { name: ENROLLMENT_VOLUME, hostPath: { path: ENROLLMENT_DIR, type: "Directory" } },
    ...(ebpf ? EBPF_VOLUMES.map((v) => ({ name: v.volume, hostPath: { path: v.hostPath, type: "Directory" } })) : []),
  ];

  const patch: JsonPatchOp[] = [];
  // First of the init containers: the pod's other init containers are already meshed.
  if (pod.spec.initContainers?.length) patch.push({ op: "add", path: "/spec/initContainers/0", value: initContainer });
  else patch.push({ op: "add", path: "/spec/initContainers", value: [initContainer] });
  const missing = volumes.filter((volume) => !pod.spec?.volumes?.some((v) => v.name === volume.name));
  if (pod.spec.volumes) for (const volume of missing) patch.push({ op: "add", path: "/spec/volumes/-", value: volume });
  else if (missing.length > 0) patch.push({ op: "add", path: "/spec/volumes", value: missing });
  const status = `/metadata/annotations/${pointer("nodemesh.io/status")}`;
  if (!pod.metadata?.annotations) patch.push({ op: "add", path: "/metadata/annotations", value: {} });
  patch.push({ op: "add", path: status, value: "injected" });
  return { injected: true, patch, initContainer };
}

/** The pod's interception annotation, else its namespace's, else iptables; anything else is refused. */
function interceptionMode(
  annotations: Readonly<Record<string, string>>,
  namespaceAnnotations: Readonly<Record<string, string>>,
): (typeof INTERCEPTION_MODES)[number] {
  const value = annotations[INTERCEPTION_ANNOTATION] ?? namespaceAnnotations[INTERCEPTION_ANNOTATION] ?? "iptables";
  const mode = INTERCEPTION_MODES.find((m) => m === value);
  if (!mode) {
    throw new InjectionError(
      `annotation ${INTERCEPTION_ANNOTATION}: "${value}" is not ${INTERCEPTION_MODES.join(", ").replace(/, (\w+)$/, " or $1")}`,
    );
  }
  return mode;
}

/** The exclusion annotations as init flags, checked by the init container's own parser. */
function exclusionArgs(annotations: Readonly<Record<string, string>>): string[] {
  const lists = {
    outboundPorts: annotations[EXCLUDE_OUTBOUND_PORTS_ANNOTATION],
    inboundPorts: annotations[EXCLUDE_INBOUND_PORTS_ANNOTATION],
    outboundCidrs: annotations[EXCLUDE_OUTBOUND_CIDRS_ANNOTATION],
  };
  try {
    parseExclusions(lists);
  } catch (err) {
    // The parser names the flag; the user wrote an annotation.
    const message = (err as Error).message.replace(/^(?:--)?exclude-/, "annotation nodemesh.io/exclude-");
    throw new InjectionError(message);
  }
  const args: string[] = [];
  if (lists.outboundPorts) args.push(`--exclude-outbound-ports=${lists.outboundPorts}`);
  if (lists.inboundPorts) args.push(`--exclude-inbound-ports=${lists.inboundPorts}`);
  if (lists.outboundCidrs) args.push(`--exclude-outbound-cidrs=${lists.outboundCidrs}`);
  return args;
}
