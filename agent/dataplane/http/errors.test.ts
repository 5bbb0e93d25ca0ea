import { describe, expect, it } from "vitest";
import { AgentError, type AgentErrorKind, AgentErrors, GrpcStatus } from "../../errors.ts";
import { clientError, errorHeaders, grpcStatusForHttp, rawErrorAnswer } from "./errors.ts";

const { UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, UNIMPLEMENTED, INTERNAL, UNKNOWN } = GrpcStatus;

/** The whole error table: AgentErrors key → [HTTP status, gRPC status]. */
const TABLE: [keyof typeof AgentErrors, number, number][] = [
  ["NO_ENDPOINT", 503, UNAVAILABLE],
  ["NO_HEALTHY_ENDPOINT", 503, UNAVAILABLE],
  ["ALL_ENDPOINTS_FAILED", 503, UNAVAILABLE],
  ["CONNECT_FAILED", 503, UNAVAILABLE],
  ["CONNECT_TIMEOUT", 503, UNAVAILABLE],
  ["TUNNEL_REFUSED", 503, UNAVAILABLE],
  ["CIRCUIT_OPEN", 503, UNAVAILABLE],
  ["ENDPOINT_UNHEALTHY", 503, UNAVAILABLE],
  ["UPSTREAM_RESET", 502, UNAVAILABLE],
  ["UPSTREAM_PROTOCOL", 502, UNAVAILABLE],
  ["TIMEOUT", 504, DEADLINE_EXCEEDED],
  ["PER_TRY_TIMEOUT", 504, DEADLINE_EXCEEDED],
  ["RATE_LIMITED", 429, RESOURCE_EXHAUSTED],
  ["NO_ROUTE", 404, UNIMPLEMENTED],
  ["BACKEND_NOT_FOUND", 500, INTERNAL],
  ["BAD_REQUEST", 400, INTERNAL],
  ["AUTHZ_DENIED", 403, GrpcStatus.PERMISSION_DENIED],
  ["AUTHZ_AMBIGUOUS", 400, INTERNAL],
  ["JWT_INVALID", 401, GrpcStatus.UNAUTHENTICATED],
  ["JWT_REQUIRED", 401, GrpcStatus.UNAUTHENTICATED],
  ["HEADERS_TOO_LARGE", 431, RESOURCE_EXHAUSTED],
  ["CLIENT_TIMEOUT", 408, DEADLINE_EXCEEDED],
  ["RAPID_RESET", 400, INTERNAL],
  ["GRPC_NEEDS_HTTP2", 400, INTERNAL],
  ["CONTROL_FRAME_FLOOD", 400, INTERNAL],
  ["POD_CONNECTION_LIMIT", 503, UNAVAILABLE],
  ["TUNNEL_HANDSHAKE_LIMIT", 503, UNAVAILABLE],
  // The tunnel's own answers to a peer agent, and the refusals before any protocol.
  ["TUNNEL_PROTOCOL", 400, INTERNAL],
  ["TUNNEL_FORBIDDEN", 503, UNAVAILABLE],
  ["TUNNEL_UNAUTHENTICATED", 403, GrpcStatus.PERMISSION_DENIED],
  ["MTLS_REQUIRED", 403, GrpcStatus.PERMISSION_DENIED],
  ["LOOP", 503, UNAVAILABLE],
  ["NO_ORIGINAL_DST", 503, UNAVAILABLE],
  ["FAULT_ABORT", 503, UNAVAILABLE],
];

describe("clientError", () => {
  it.each(TABLE)("%s → HTTP %i, gRPC %i", (key, status, grpcStatus) => {
    const kind: AgentErrorKind = AgentErrors[key];
    const e = clientError(new AgentError(kind, "detail"));
    expect(e).toEqual({
      code: kind.code,
      status,
      grpcStatus,
      message: `${kind.message}: detail`,
      retryAfterS: undefined,
    });
  });

  it("covers every error code of the agent", () => {
    expect(Object.keys(AgentErrors).sort()).toEqual(TABLE.map(([k]) => k).sort());
  });

  it.each(TABLE)("%s written on a socket carries the same status and the code first", (key, status) => {
    const head = rawErrorAnswer(new AgentError(AgentErrors[key]));
    expect(head).toMatch(
      new RegExp(`^HTTP/1\\.1 ${status} [A-Za-z' -]+\r\nX-Nodemesh-Error: ${AgentErrors[key].code}\r\n`),
    );
    expect(head.endsWith("Content-Length: 0\r\n\r\n")).toBe(true);
  });

  it("answers 429 RESOURCE_EXHAUSTED with a retry-after header for rate limiting", () => {
    const e = clientError(new AgentError(AgentErrors.RATE_LIMITED), { retryAfterS: 2 });
    expect([e.status, e.grpcStatus, e.retryAfterS]).toEqual([429, RESOURCE_EXHAUSTED, 2]);
    expect(errorHeaders(e, false)).toEqual({
      "x-nodemesh-error": "NM_RATE_LIMITED",
      "retry-after": "2",
      "content-type": "text/plain; charset=utf-8",
    });
    expect(errorHeaders(e, true)["retry-after"]).toBe("2");
    expect(errorHeaders(e, true)["grpc-status"]).toBe("8");
  });

  it("lets a fault override the status; the gRPC status follows the HTTP status", () => {
    const fault = new AgentError(AgentErrors.FAULT_ABORT);
    expect(clientError(fault, { status: 503 })).toMatchObject({
      code: "NM_FAULT_ABORT",
      status: 503,
      grpcStatus: UNAVAILABLE,
    });
    expect(clientError(fault, { status: 500 })).toMatchObject({ status: 500, grpcStatus: UNKNOWN });
    expect(clientError(fault, { status: 403 })).toMatchObject({ status: 403, grpcStatus: 7 });
    expect(clientError(fault, { status: 429 })).toMatchObject({ status: 429, grpcStatus: RESOURCE_EXHAUSTED });
    // An explicit gRPC status wins.
    expect(clientError(fault, { status: 503, grpcStatus: 9 })).toMatchObject({ status: 503, grpcStatus: 9 });
    expect(clientError(fault, { grpcStatus: 14 })).toMatchObject({ status: 503, grpcStatus: 14 });
    // An override of a table entry.
    expect(clientError(new AgentError(AgentErrors.TIMEOUT), { status: 503 })).toMatchObject({
      status: 503,
      grpcStatus: UNAVAILABLE,
    });
  });

  it("answers 502 UNAVAILABLE for errors outside the table, keeping their code and message", () => {
    const sys = Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET" });
    expect(clientError(sys)).toEqual({
      code: "ECONNRESET",
      status: 502,
      grpcStatus: UNAVAILABLE,
      message: "read ECONNRESET",
      retryAfterS: undefined,
    });
    expect(clientError(new Error(""))).toMatchObject({ code: "UNKNOWN", status: 502, message: "upstream error" });
    expect(clientError(undefined)).toMatchObject({ code: "UNKNOWN", status: 502, message: "upstream error" });
  });
});

describe("grpcStatusForHttp", () => {
  it("maps as gRPC's http-grpc-status-mapping, plus 429 and 504", () => {
    const cases: [number, number][] = [
      [400, INTERNAL],
      [401, 16],
      [403, 7],
      [404, UNIMPLEMENTED],
      [429, RESOURCE_EXHAUSTED],
      [502, UNAVAILABLE],
      [503, UNAVAILABLE],
      [504, DEADLINE_EXCEEDED],
      [500, UNKNOWN],
      [418, UNKNOWN],
      [200, UNKNOWN],
    ];
    for (const [http, grpc] of cases) expect(grpcStatusForHttp(http), String(http)).toBe(grpc);
  });
});

describe("errorHeaders", () => {
  it("gives plain HTTP a text body type and the error code", () => {
    const e = clientError(new AgentError(AgentErrors.NO_HEALTHY_ENDPOINT));
    expect(errorHeaders(e, false)).toEqual({
      "x-nodemesh-error": "NM_NO_HEALTHY_ENDPOINT",
      "content-type": "text/plain; charset=utf-8",
    });
  });

  it("gives gRPC a trailers-only shape: content-type, grpc-status and a percent-encoded grpc-message", () => {
    const e = clientError(new AgentError(AgentErrors.CIRCUIT_OPEN, "reviews-v2 % full"));
    const h = errorHeaders(e, true);
    expect(h).toEqual({
      "x-nodemesh-error": "NM_CIRCUIT_OPEN",
      "content-type": "application/grpc",
      "grpc-status": "14",
      // gRPC's encoding: only '%' and bytes outside printable ASCII.
      "grpc-message": "the circuit breaker is open: reviews-v2 %25 full",
    });
    expect(decodeURIComponent(h["grpc-message"]!)).toBe("the circuit breaker is open: reviews-v2 % full");
    expect(errorHeaders(clientError(new AgentError(AgentErrors.TIMEOUT, "é\n")), true)["grpc-message"]).toBe(
      "the request timed out: %C3%A9%0A",
    );
    expect(h["retry-after"]).toBeUndefined();
    // No HTTP status in there: a trailers-only gRPC answer is :status 200, set by the caller.
    expect(Object.keys(h).some((k) => k.startsWith(":"))).toBe(false);
  });
});
