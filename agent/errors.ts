// The agent's error table: every failure the data plane can produce has one stable code, used in
// logs, metrics labels and the answer the peer receives. Each entry also says what a client is
// told (an HTTP status, and the gRPC status a gRPC client gets instead) and what the failure means
// for an upstream attempt (`attempt`). Throw sites only throw AgentErrors; turning one into bytes
// on the wire happens in agent/dataplane/http/errors.ts, for the L7 proxy and the socket-level
// answers (tunnel, frontend) alike.

/** gRPC status codes (grpc/doc/statuscodes.md). */
export const GrpcStatus = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  DEADLINE_EXCEEDED: 4,
  RESOURCE_EXHAUSTED: 8,
  PERMISSION_DENIED: 7,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
} as const;

/**
 * What an attempt that failed with this error tells the retry logic:
 * - "connect-failure": no connection to the workload was made; the request never left and can
 *   fail over to another endpoint;
 * - "timeout": the attempt ran out of its per-try time;
 * - "reset" (the default): the request may have reached the app.
 */
export type FailureClass = "connect-failure" | "reset" | "timeout";

interface ErrorEntry {
  readonly code: string;
  readonly message: string;
  readonly status: number;
  readonly grpcStatus: number;
  readonly attempt?: FailureClass;
  /**
   * A destination agent that answers with this code never passed the request to its workload:
   * the source agent treats the answer as a connect failure and fails over.
   */
  readonly undelivered?: boolean;
}

const { UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, UNIMPLEMENTED, INTERNAL } = GrpcStatus;

export const AgentErrors = {
  // Connections refused before any protocol (a reset), or the tunnel's own answers.
  LOOP: { code: "NM_LOOP", message: "the original destination is an agent port", status: 503, grpcStatus: UNAVAILABLE },
  NO_ORIGINAL_DST: {
    code: "NM_NO_ORIGINAL_DST",
    message: "the connection has no original destination",
    status: 503,
    grpcStatus: UNAVAILABLE,
  },
  POD_CONNECTION_LIMIT: {
    code: "NM_POD_CONNECTION_LIMIT",
    message: "the pod holds as many connections as it may (--max-connections-per-pod)",
    status: 503,
    grpcStatus: UNAVAILABLE,
  },
  TUNNEL_HANDSHAKE_LIMIT: {
    code: "NM_TUNNEL_HANDSHAKE_LIMIT",
    message: "too many tunnel handshakes under way to this pod",
    status: 503,
    grpcStatus: UNAVAILABLE,
  },
  TUNNEL_PROTOCOL: {
    code: "NM_TUNNEL_PROTOCOL",
    message: "malformed tunnel handshake",
    status: 400,
    grpcStatus: INTERNAL,
    attempt: "connect-failure",
  },
  TUNNEL_UNAUTHENTICATED: {
    code: "NM_TUNNEL_UNAUTHENTICATED",
    message: "the tunnel handshake does not come from an agent of this mesh",
    status: 403,
    grpcStatus: GrpcStatus.PERMISSION_DENIED,
    // Refused before any byte reached a workload (a TLS or signature failure): try another endpoint.
    attempt: "connect-failure",
  },
  MTLS_REQUIRED: {
    code: "NM_MTLS_REQUIRED",
    message: "the destination accepts only callers proven by mTLS (STRICT)",
    status: 403,
    grpcStatus: GrpcStatus.PERMISSION_DENIED,
    attempt: "connect-failure",
  },
  TUNNEL_FORBIDDEN: {
    code: "NM_TUNNEL_FORBIDDEN",
    message: "the tunnel target is not a meshed port of this pod",
    status: 503,
    grpcStatus: UNAVAILABLE,
  },
  // Reaching an endpoint.
  NO_ENDPOINT: { code: "NM_NO_ENDPOINT", message: "the service has no endpoint", status: 503, grpcStatus: UNAVAILABLE },
  NO_HEALTHY_ENDPOINT: {
    code: "NM_NO_HEALTHY_ENDPOINT",
    message: "no healthy endpoint is available",
    status: 503,
    grpcStatus: UNAVAILABLE,
  },
  ALL_ENDPOINTS_FAILED: {
    code: "NM_ALL_ENDPOINTS_FAILED",
    message: "no endpoint accepted the connection",
    status: 503,
    grpcStatus: UNAVAILABLE,
    undelivered: true,
  },
  CONNECT_TIMEOUT: {
    code: "NM_CONNECT_TIMEOUT",
    message: "connect timed out",
    status: 503,
    grpcStatus: UNAVAILABLE,
    attempt: "connect-failure",
    undelivered: true,
  },
  CONNECT_FAILED: {
    code: "NM_CONNECT_FAILED",
    message: "connect failed",
    status: 503,
    grpcStatus: UNAVAILABLE,
    attempt: "connect-failure",
    undelivered: true,
  },
  TUNNEL_REFUSED: {
    code: "NM_TUNNEL_REFUSED",
    message: "the destination agent could not reach the workload",
    status: 503,
    grpcStatus: UNAVAILABLE,
    attempt: "connect-failure",
  },
  ENDPOINT_UNHEALTHY: {
    code: "NM_ENDPOINT_UNHEALTHY",
    message: "the endpoint fails its active health check",
    status: 503,
    grpcStatus: UNAVAILABLE,
    // Refused by the destination's agent before any byte reached the workload: try another.
    attempt: "connect-failure",
    undelivered: true,
  },
  CIRCUIT_OPEN: {
    code: "NM_CIRCUIT_OPEN",
    message: "the circuit breaker is open",
    status: 503,
    grpcStatus: UNAVAILABLE,
    attempt: "connect-failure",
  },
  // The upstream's answer.
  UPSTREAM_RESET: {
    code: "NM_UPSTREAM_RESET",
    message: "the upstream reset the connection",
    status: 502,
    grpcStatus: UNAVAILABLE,
  },
  UPSTREAM_PROTOCOL: {
    code: "NM_UPSTREAM_PROTOCOL",
    message: "the upstream sent a malformed response",
    status: 502,
    grpcStatus: UNAVAILABLE,
  },
  TIMEOUT: { code: "NM_TIMEOUT", message: "the request timed out", status: 504, grpcStatus: DEADLINE_EXCEEDED },
  PER_TRY_TIMEOUT: {
    code: "NM_PER_TRY_TIMEOUT",
    message: "the upstream attempt timed out",
    status: 504,
    grpcStatus: DEADLINE_EXCEEDED,
    attempt: "timeout",
  },
  // Policy.
  RATE_LIMITED: { code: "NM_RATE_LIMITED", message: "rate limited", status: 429, grpcStatus: RESOURCE_EXHAUSTED },
  /** The policy names the status; this one is only the default. */
  FAULT_ABORT: { code: "NM_FAULT_ABORT", message: "fault injected", status: 503, grpcStatus: UNAVAILABLE },
  NO_ROUTE: {
    code: "NM_NO_ROUTE",
    message: "no route rule matches the request",
    status: 404,
    grpcStatus: UNIMPLEMENTED,
  },
  BACKEND_NOT_FOUND: {
    code: "NM_BACKEND_NOT_FOUND",
    message: "the route names a backend that does not exist",
    status: 500,
    grpcStatus: INTERNAL,
  },
  AUTHZ_DENIED: {
    code: "NM_AUTHZ_DENIED",
    message: "denied by authorization policy",
    status: 403,
    grpcStatus: GrpcStatus.PERMISSION_DENIED,
  },
  JWT_INVALID: {
    code: "NM_JWT_INVALID",
    message: "the request's JWT is not valid",
    status: 401,
    grpcStatus: GrpcStatus.UNAUTHENTICATED,
  },
  JWT_REQUIRED: {
    code: "NM_JWT_REQUIRED",
    message: "a valid JWT is required",
    status: 401,
    grpcStatus: GrpcStatus.UNAUTHENTICATED,
  },
  /** An AuthorizationPolicy selects the workload and the request can be read more than one way. */
  AUTHZ_AMBIGUOUS: {
    code: "NM_AUTHZ_AMBIGUOUS_REQUEST",
    message: "the request cannot be authorized as sent",
    status: 400,
    grpcStatus: INTERNAL,
  },
  // The client's request.
  BAD_REQUEST: { code: "NM_BAD_REQUEST", message: "malformed request", status: 400, grpcStatus: INTERNAL },
  HEADERS_TOO_LARGE: {
    code: "NM_HEADERS_TOO_LARGE",
    message: "request headers too large",
    status: 431,
    grpcStatus: RESOURCE_EXHAUSTED,
  },
  GRPC_NEEDS_HTTP2: {
    code: "NM_GRPC_NEEDS_HTTP2",
    message: "the port is declared gRPC, which needs HTTP/2; the request came over HTTP/1",
    status: 400,
    grpcStatus: INTERNAL,
  },
  RAPID_RESET: {
    code: "NM_RAPID_RESET",
    message: "the client reset most of its streams as soon as it opened them",
    status: 400,
    grpcStatus: INTERNAL,
  },
  CONTROL_FRAME_FLOOD: {
    code: "NM_CONTROL_FRAME_FLOOD",
    message: "the client sent SETTINGS or PING frames too fast",
    status: 400,
    grpcStatus: INTERNAL,
  },
  CLIENT_TIMEOUT: {
    code: "NM_CLIENT_TIMEOUT",
    message: "the client was too slow to send its request",
    status: 408,
    grpcStatus: DEADLINE_EXCEEDED,
  },
} as const satisfies Record<string, ErrorEntry>;

export type AgentErrorKind = (typeof AgentErrors)[keyof typeof AgentErrors];
export type AgentErrorCode = AgentErrorKind["code"];

const BY_CODE: ReadonlyMap<string, ErrorEntry> = new Map(Object.values(AgentErrors).map((e) => [e.code, e]));

/** The table entry of a code; undefined for errors that are not the agent's (system errors). */
export function errorEntry(code: string): ErrorEntry | undefined {
  return BY_CODE.get(code);
}

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

/** How an attempt that failed with `err` counts (see FailureClass). */
export function failureClass(err: unknown): FailureClass {
  return errorEntry(errorCode(err))?.attempt ?? "reset";
}
