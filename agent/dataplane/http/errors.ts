// The one place where an agent error becomes what the client sees: an HTTP status, the gRPC
// status a gRPC client gets instead, and the `x-nodemesh-error` header naming the cause (as
// fastify keeps one error table). Throw sites only throw AgentErrors.

import { AgentError, type AgentErrorCode, AgentErrors, errorCode } from "../../errors.ts";

/** gRPC status codes (grpc/doc/statuscodes.md). */
export const GrpcStatus = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  DEADLINE_EXCEEDED: 4,
  RESOURCE_EXHAUSTED: 8,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  UNIMPLEMENTED: 12,
} as const;

interface ErrorResponse {
  readonly status: number;
  readonly grpcStatus: number;
}

const RESPONSES: Partial<Record<AgentErrorCode, ErrorResponse>> = {
  [AgentErrors.NO_ENDPOINT.code]: { status: 503, grpcStatus: GrpcStatus.UNAVAILABLE },
  [AgentErrors.NO_HEALTHY_ENDPOINT.code]: { status: 503, grpcStatus: GrpcStatus.UNAVAILABLE },
  [AgentErrors.ALL_ENDPOINTS_FAILED.code]: { status: 503, grpcStatus: GrpcStatus.UNAVAILABLE },
  [AgentErrors.CONNECT_FAILED.code]: { status: 503, grpcStatus: GrpcStatus.UNAVAILABLE },
  [AgentErrors.CONNECT_TIMEOUT.code]: { status: 503, grpcStatus: GrpcStatus.UNAVAILABLE },
  [AgentErrors.TUNNEL_REFUSED.code]: { status: 503, grpcStatus: GrpcStatus.UNAVAILABLE },
  [AgentErrors.CIRCUIT_OPEN.code]: { status: 503, grpcStatus: GrpcStatus.UNAVAILABLE },
  [AgentErrors.UPSTREAM_RESET.code]: { status: 502, grpcStatus: GrpcStatus.UNAVAILABLE },
  [AgentErrors.UPSTREAM_PROTOCOL.code]: { status: 502, grpcStatus: GrpcStatus.UNAVAILABLE },
  [AgentErrors.TIMEOUT.code]: { status: 504, grpcStatus: GrpcStatus.DEADLINE_EXCEEDED },
  [AgentErrors.PER_TRY_TIMEOUT.code]: { status: 504, grpcStatus: GrpcStatus.DEADLINE_EXCEEDED },
  [AgentErrors.RATE_LIMITED.code]: { status: 429, grpcStatus: GrpcStatus.RESOURCE_EXHAUSTED },
  [AgentErrors.NO_ROUTE.code]: { status: 404, grpcStatus: GrpcStatus.UNIMPLEMENTED },
  [AgentErrors.BACKEND_NOT_FOUND.code]: { status: 500, grpcStatus: GrpcStatus.INTERNAL },
  [AgentErrors.BAD_REQUEST.code]: { status: 400, grpcStatus: GrpcStatus.INTERNAL },
  [AgentErrors.HEADERS_TOO_LARGE.code]: { status: 431, grpcStatus: GrpcStatus.INTERNAL },
  [AgentErrors.CLIENT_TIMEOUT.code]: { status: 408, grpcStatus: GrpcStatus.DEADLINE_EXCEEDED },
};

const FALLBACK: ErrorResponse = { status: 502, grpcStatus: GrpcStatus.UNAVAILABLE };

/** The gRPC status for an HTTP status (gRPC's http-grpc-status-mapping.md, plus 429 and 504). */
export function grpcStatusForHttp(status: number): number {
  switch (status) {
    case 400:
      return GrpcStatus.INTERNAL;
    case 401:
      return 16;
    case 403:
      return 7;
    case 404:
      return GrpcStatus.UNIMPLEMENTED;
    case 429:
      return GrpcStatus.RESOURCE_EXHAUSTED;
    case 502:
    case 503:
      return GrpcStatus.UNAVAILABLE;
    case 504:
      return GrpcStatus.DEADLINE_EXCEEDED;
    default:
      return GrpcStatus.UNKNOWN;
  }
}

export interface ClientError {
  readonly code: string;
  readonly status: number;
  readonly grpcStatus: number;
  readonly message: string;
  /** Seconds, for 429. */
  readonly retryAfterS?: number;
}

/**
 * What the client receives for `err`. `status` overrides the table (fault injection aborts
 * with the status the policy names).
 */
export function clientError(
  err: unknown,
  override?: { status?: number; grpcStatus?: number; retryAfterS?: number },
): ClientError {
  const code = errorCode(err);
  const entry = RESPONSES[code as AgentErrorCode] ?? FALLBACK;
  const status = override?.status ?? entry.status;
  return {
    code,
    status,
    grpcStatus: override?.grpcStatus ?? (override?.status ? grpcStatusForHttp(status) : entry.grpcStatus),
    message: err instanceof AgentError ? err.message : (err as Error)?.message || "upstream error",
    retryAfterS: override?.retryAfterS,
  };
}

/**
 * grpc-message's encoding (gRPC over HTTP/2): percent-encode '%' and every byte outside printable
 * ASCII, nothing else; clients decode exactly that.
 */
export function grpcMessage(text: string): string {
  let out = "";
  for (const byte of Buffer.from(text, "utf8")) {
    out +=
      byte >= 0x20 && byte <= 0x7e && byte !== 0x25
        ? String.fromCharCode(byte)
        : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

/** The response headers of an error: plain HTTP or gRPC trailers-only. */
export function errorHeaders(e: ClientError, grpc: boolean): Record<string, string> {
  const headers: Record<string, string> = { "x-nodemesh-error": e.code };
  if (e.retryAfterS !== undefined) headers["retry-after"] = String(e.retryAfterS);
  if (grpc) {
    headers["content-type"] = "application/grpc";
    headers["grpc-status"] = String(e.grpcStatus);
    headers["grpc-message"] = grpcMessage(e.message);
  } else {
    headers["content-type"] = "text/plain; charset=utf-8";
  }
  return headers;
}
