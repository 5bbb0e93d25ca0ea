// Names nodemesh uses on Kubernetes objects. Public: keep them stable and documented
// (README "Ports and names", docs/kubernetes.md).

/** Namespace annotation `enabled` opts its pods in; pod annotation `disabled` opts one pod out. */
export const INTERCEPT_ANNOTATION = "nodemesh.io/intercept";
/** Pod annotations that become the init container's exclusion flags (same syntax). */
export const EXCLUDE_OUTBOUND_PORTS_ANNOTATION = "nodemesh.io/exclude-outbound-ports";
export const EXCLUDE_INBOUND_PORTS_ANNOTATION = "nodemesh.io/exclude-inbound-ports";
export const EXCLUDE_OUTBOUND_CIDRS_ANNOTATION = "nodemesh.io/exclude-outbound-cidrs";
/** Pod (else namespace) annotation: iptables (default), ebpf, or node (the agent's --interception). */
export const INTERCEPTION_ANNOTATION = "nodemesh.io/interception";

/** The init container the webhook injects (its name also marks a pod as already injected). */
export const INIT_CONTAINER_NAME = "nodemesh-init";
