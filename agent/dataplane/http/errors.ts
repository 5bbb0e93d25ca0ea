// The one place where an agent error becomes what the peer sees (as fastify keeps one error
// table): the status and gRPC status come from the table in agent/errors.ts; here they become an
// HTTP answer, a gRPC trailers-only answer, or a raw HTTP/1.1 head written on a socket (the
// tunnel's refusals, the frontend's answers to unparseable requests, an upgrade that failed).

import { http } from "../../../api/node-http.ts";
import { AgentError, errorCode, errorEntry, GrpcStatus } from "../../errors.ts";

/** What an error outside the table (a system error from a socket) answers. */
const FALLBACK = { status: 502, grpcStatus: GrpcStatus.UNAVAILABLE };

/** The gRPC status for an HTTP status (gRPC's http-grpc-status-mapping.md, plus 429 and 504). */
export function grpcStatusForHttp(status: number): number {
  switch (status) {
    case 400:
      return GrpcStatus.INTERNAL;
    case 401:
      return GrpcStatus.UNAUTHENTICATED;
    case 403:
      return GrpcStatus.PERMISSION_DENIED;
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

/** A table entry's answer changed for one request (a fault's status, a rate limit's wait). */
export interface AnswerOverride {
  readonly status?: number;
  readonly grpcStatus?: number;
  readonly retryAfterS?: number;
}

/**
 * What the client receives for `err`. `status` overrides the table (fault injection aborts
 * with the status the policy names).
 */
export function clientError(err: unknown, override?: AnswerOverride): ClientError {
  const code = errorCode(err);
  const entry = errorEntry(code) ?? FALLBACK;
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

/**
 * An error as a bodiless HTTP/1.1 answer written straight on a socket, where no HTTP server
 * owns the connection; the connection closes after it. The code comes first: peers (and tests)
 * read it right after the status.
 */
export function rawErrorAnswer(err: unknown): string {
  return rawErrorHead(clientError(err));
}

export function rawErrorHead(e: ClientError): string {
  const retryAfter = e.retryAfterS === undefined ? "" : `Retry-After: ${e.retryAfterS}\r\n`;
  return (
    `HTTP/1.1 ${e.status} ${http.STATUS_CODES[e.status] ?? "Error"}\r\n` +
    `X-Nodemesh-Error: ${e.code}\r\n${retryAfter}Connection: close\r\nContent-Length: 0\r\n\r\n`
  );
}
