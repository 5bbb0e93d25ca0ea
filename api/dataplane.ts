// The data-plane constants every component agrees on. Public: keep them stable and documented
// (README "Ports and names").

/** Agent listeners inside each enrolled pod's network namespace. */
export const OUTBOUND_PORT = 15001;
export const INBOUND_PORT = 15006;
/** Agent-to-agent tunnel: the source agent asks the destination agent to connect for it. */
export const TUNNEL_PORT = 15008;
/** Agent admin listener (node network namespace): /healthz /readyz /metrics; /debug/config to loopback callers. */
export const ADMIN_PORT = 15020;
/** Ports of the agent itself: a connection whose original destination is one of them is a loop. */
export const AGENT_PORTS: readonly number[] = [OUTBOUND_PORT, INBOUND_PORT, TUNNEL_PORT, ADMIN_PORT];

/**
 * SO_MARK on every socket the agent opens inside a pod's namespace. The pod's rules RETURN on it,
 * so the agent never intercepts its own traffic (the same value ztunnel uses).
 */
export const AGENT_SOCKET_MARK = 0x539;

/** Where the agent listens for enrollments from init containers (a hostPath in Kubernetes). */
export const DEFAULT_ENROLLMENT_SOCKET = "/var/run/nodemesh/agent.sock";
