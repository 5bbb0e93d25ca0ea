// The agent's error table: every failure the data plane can produce has one stable code, used in
// logs, metrics labels and in the response the client receives (agent/dataplane/http/errors.ts). Turning a code
// into a client-visible result happens in one place per protocol, never at the throw site.

export const AgentErrors = {
  LOOP: { code: "NM_LOOP", message: "the original destination is an agent port" },
  NO_ORIGINAL_DST: { code: "NM_NO_ORIGINAL_DST", message: "the connection has no original destination" },
  NO_ENDPOINT: { code: "NM_NO_ENDPOINT", message: "the service has no endpoint" },
  ALL_ENDPOINTS_FAILED: { code: "NM_ALL_ENDPOINTS_FAILED", message: "no endpoint accepted the connection" },
  CONNECT_TIMEOUT: { code: "NM_CONNECT_TIMEOUT", message: "connect timed out" },
  CONNECT_FAILED: { code: "NM_CONNECT_FAILED", message: "connect failed" },
  TUNNEL_REFUSED: { code: "NM_TUNNEL_REFUSED", message: "the destination agent could not reach the workload" },
  TUNNEL_PROTOCOL: { code: "NM_TUNNEL_PROTOCOL", message: "malformed tunnel handshake" },
  TUNNEL_FORBIDDEN: { code: "NM_TUNNEL_FORBIDDEN", message: "the tunnel target is not a meshed port of this pod" },
  // L7: each of these becomes an HTTP status and a gRPC status in one table.
  NO_HEALTHY_ENDPOINT: { code: "NM_NO_HEALTHY_ENDPOINT", message: "no healthy endpoint is available" },
  CIRCUIT_OPEN: { code: "NM_CIRCUIT_OPEN", message: "the circuit breaker is open" },
  UPSTREAM_RESET: { code: "NM_UPSTREAM_RESET", message: "the upstream reset the connection" },
  UPSTREAM_PROTOCOL: { code: "NM_UPSTREAM_PROTOCOL", message: "the upstream sent a malformed response" },
  TIMEOUT: { code: "NM_TIMEOUT", message: "the request timed out" },
  PER_TRY_TIMEOUT: { code: "NM_PER_TRY_TIMEOUT", message: "the upstream attempt timed out" },
  RATE_LIMITED: { code: "NM_RATE_LIMITED", message: "rate limited" },
  FAULT_ABORT: { code: "NM_FAULT_ABORT", message: "fault injected" },
  NO_ROUTE: { code: "NM_NO_ROUTE", message: "no route rule matches the request" },
  BACKEND_NOT_FOUND: { code: "NM_BACKEND_NOT_FOUND", message: "the route names a backend that does not exist" },
  BAD_REQUEST: { code: "NM_BAD_REQUEST", message: "malformed request" },
  HEADERS_TOO_LARGE: { code: "NM_HEADERS_TOO_LARGE", message: "request headers too large" },
  CLIENT_TIMEOUT: { code: "NM_CLIENT_TIMEOUT", message: "the client was too slow to send its request" },
} as const;

export type AgentErrorKind = (typeof AgentErrors)[keyof typeof AgentErrors];
export type AgentErrorCode = AgentErrorKind["code"];

export class AgentError extends Error {
  readonly code: AgentErrorCode;
  constructor(kind: AgentErrorKind, detail?: string, options?: { cause?: unknown }) {
    super(detail ? `${kind.message}: ${detail}` : kind.message, options);
    this.code = kind.code;
  }
}

/** The stable code of any error, for metrics and logs (system errors keep their errno name). */
export function errorCode(err: unknown): string {
  if (err instanceof AgentError) return err.code;
  const code = (err as { code?: unknown })?.code;
  return typeof code === "string" ? code : "UNKNOWN";
}
