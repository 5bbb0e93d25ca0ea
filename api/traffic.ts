// Traffic objects: how requests to a Service are routed and treated. One zod schema per kind, used
// by the controller's REST validation and by the agent when a configuration arrives (from the
// controller or from `--services FILE`); the agent compiles them once per snapshot.
//
// - HTTPRoute and GRPCRoute follow Gateway API v1 in its mesh (GAMMA) shape: `parentRefs` name a
//   Service, `backendRefs` name Services (for example `reviews-v1`, `reviews-v2`).
// - TrafficPolicy (nodemesh.io/v1alpha1) attaches to Services through `targetRefs`, as in Gateway
//   API policy attachment: load balancing, timeouts, retries, circuit breaking, outlier
//   detection, fault injection and local rate limiting.

import { z } from "zod";
import { fieldErrors, fieldPath } from "./field-path.ts";
import { jose } from "./jose.ts";
import { compileFullMatch, MAX_REGEX_LENGTH } from "./regex.ts";

export const GATEWAY_GROUP = "gateway.networking.k8s.io";
export const GATEWAY_VERSION = "v1";

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const Name = z.string().max(63).regex(DNS_LABEL, "must be a DNS label: lowercase letters, digits and '-'");
const Port = z.number().int().min(1).max(65535);
/** RFC 9110 token: what a header name may be. */
const HeaderName = z
  .string()
  .max(256)
  .regex(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/, "must be an HTTP header name");
/** Header values may not carry CR, LF or NUL (that would be header injection). */
const HeaderValue = z
  .string()
  .max(4096)
  .regex(/^[^\r\n\0]*$/, "must not contain CR, LF or NUL");
const Percent = z.number().min(0).max(100);

/** Gateway API Duration (GEP-2257): "1h", "30s", "500ms", "1m30s". */
export const Duration = z
  .string()
  .regex(/^([0-9]{1,5}(h|m|s|ms)){1,4}$/, 'must be a duration such as "500ms", "2s" or "1m30s"');

/**
 * A regular expression in a match: RE2 syntax, matched against the whole value in linear time
 * (api/regex.ts). At most 256 characters and 1000 compiled instructions; backreferences and
 * lookaround are refused (RE2 has neither).
 */
export const SafeRegex = z
  .string()
  .min(1)
  .max(MAX_REGEX_LENGTH)
  .superRefine((source, ctx) => {
    const compiled = compileFullMatch(source);
    if (!compiled.ok) ctx.addIssue({ code: "custom", message: compiled.message });
  });

// ---------------------------------------------------------------- shared route parts

/** A Service this route attaches to (GAMMA: kind Service, group "" or "core"). */
export const ParentRef = z.strictObject({
  group: z.enum(["", "core"]).optional(),
  kind: z.literal("Service").default("Service"),
  name: Name,
  namespace: Name.optional(),
  /** Only this port of the Service; absent means every port. */
  port: Port.optional(),
});

export const BackendRef = z.strictObject({
  group: z.enum(["", "core"]).optional(),
  kind: z.literal("Service").default("Service"),
  name: Name,
  namespace: Name.optional(),
  /** The backend Service's port; absent means the port the request arrived on. */
  port: Port.optional(),
  weight: z.number().int().min(0).max(1_000_000).default(1),
});

const HeaderMatch = z.strictObject({
  type: z.enum(["Exact", "RegularExpression"]).default("Exact"),
  name: HeaderName,
  value: z.string().max(4096),
});

const HttpHeader = z.strictObject({ name: HeaderName, value: HeaderValue });

export const HeaderModifier = z.strictObject({
  set: z.array(HttpHeader).max(32).optional(),
  add: z.array(HttpHeader).max(32).optional(),
  remove: z.array(HeaderName).max(32).optional(),
});

const Fraction = z
  .strictObject({ numerator: z.number().int().min(0), denominator: z.number().int().min(1).default(100) })
  .refine((f) => f.numerator <= f.denominator, "numerator must not exceed denominator");

export const RequestMirror = z
  .strictObject({
    backendRef: BackendRef.omit({ weight: true }),
    percent: Percent.optional(),
    fraction: Fraction.optional(),
  })
  .refine((m) => m.percent === undefined || m.fraction === undefined, "set percent or fraction, not both");

export const RouteFilter = z.discriminatedUnion("type", [
  z.strictObject({ type: z.literal("RequestHeaderModifier"), requestHeaderModifier: HeaderModifier }),
  z.strictObject({ type: z.literal("ResponseHeaderModifier"), responseHeaderModifier: HeaderModifier }),
  z.strictObject({ type: z.literal("RequestMirror"), requestMirror: RequestMirror }),
]);

/** Gateway API HTTPRoute/GRPCRoute rule timeouts. */
const RouteTimeouts = z.strictObject({ request: Duration.optional(), backendRequest: Duration.optional() });

// ---------------------------------------------------------------- HTTPRoute

const PathMatch = z
  .strictObject({
    type: z.enum(["Exact", "PathPrefix", "RegularExpression"]).default("PathPrefix"),
    value: z.string().min(1).max(1024).default("/"),
  })
  .superRefine((p, ctx) => {
    if (p.type === "RegularExpression") {
      const result = SafeRegex.safeParse(p.value);
      for (const issue of result.error?.issues ?? []) {
        ctx.addIssue({ code: "custom", path: ["value"], message: issue.message });
      }
    } else if (!p.value.startsWith("/")) {
      ctx.addIssue({ code: "custom", path: ["value"], message: 'must start with "/"' });
    }
  });

const QueryParamMatch = z.strictObject({
  type: z.enum(["Exact", "RegularExpression"]).default("Exact"),
  name: z.string().min(1).max(256),
  value: z.string().max(1024),
});

const HTTP_METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"] as const;

export const HTTPRouteMatch = z.strictObject({
  path: PathMatch.optional(),
  method: z.enum(HTTP_METHODS).optional(),
  headers: z.array(HeaderMatch).max(16).optional(),
  queryParams: z.array(QueryParamMatch).max(16).optional(),
});

/** Regular-expression header and query matches are checked here (the schema is shared). */
function checkMatchRegexes(
  match: { headers?: { type: string; value: string }[]; queryParams?: { type: string; value: string }[] },
  ctx: z.RefinementCtx,
  at: (string | number)[],
) {
  for (const field of ["headers", "queryParams"] as const) {
    match[field]?.forEach((m, i) => {
      if (m.type !== "RegularExpression") return;
      for (const issue of SafeRegex.safeParse(m.value).error?.issues ?? []) {
        ctx.addIssue({ code: "custom", path: [...at, field, i, "value"], message: issue.message });
      }
    });
  }
}

const HTTPRouteRule = z
  .strictObject({
    name: Name.optional(),
    matches: z
      .array(HTTPRouteMatch)
      .max(64)
      .default([{ path: { type: "PathPrefix", value: "/" } }]),
    filters: z.array(RouteFilter).max(16).optional(),
    backendRefs: z.array(BackendRef).max(16).optional(),
    timeouts: RouteTimeouts.optional(),
  })
  .superRefine((rule, ctx) => {
    rule.matches.forEach((m, i) => {
      checkMatchRegexes(m, ctx, ["matches", i]);
    });
  });

export const HTTPRouteSpec = z.strictObject({
  parentRefs: z.array(ParentRef).min(1).max(32),
  /** Accepted for Gateway API compatibility; a mesh route applies to its parent Service's traffic. */
  hostnames: z.array(z.string().max(253)).max(16).optional(),
  rules: z.array(HTTPRouteRule).min(1).max(64),
});
export type HTTPRouteSpec = z.infer<typeof HTTPRouteSpec>;
export type HTTPRouteRule = z.infer<typeof HTTPRouteRule>;
export type HTTPRouteMatch = z.infer<typeof HTTPRouteMatch>;
export type BackendRef = z.infer<typeof BackendRef>;
export type RouteFilter = z.infer<typeof RouteFilter>;

// ---------------------------------------------------------------- GRPCRoute

const GRPC_NAME = /^[A-Za-z_][A-Za-z_0-9.]*$/;

const GRPCMethodMatch = z
  .strictObject({
    type: z.enum(["Exact", "RegularExpression"]).default("Exact"),
    service: z.string().max(1024).optional(),
    method: z.string().max(1024).optional(),
  })
  .superRefine((m, ctx) => {
    if (m.service === undefined && m.method === undefined) {
      ctx.addIssue({ code: "custom", message: "set service, method or both" });
    }
    for (const field of ["service", "method"] as const) {
      const value = m[field];
      if (value === undefined) continue;
      if (m.type === "Exact" && !GRPC_NAME.test(value)) {
        ctx.addIssue({ code: "custom", path: [field], message: "must be a gRPC service or method name" });
      }
      if (m.type === "RegularExpression") {
        for (const issue of SafeRegex.safeParse(value).error?.issues ?? []) {
          ctx.addIssue({ code: "custom", path: [field], message: issue.message });
        }
      }
    }
  });

export const GRPCRouteMatch = z.strictObject({
  method: GRPCMethodMatch.optional(),
  headers: z.array(HeaderMatch).max(16).optional(),
});

const GRPCRouteRule = z
  .strictObject({
    name: Name.optional(),
    matches: z.array(GRPCRouteMatch).max(64).default([{}]),
    filters: z.array(RouteFilter).max(16).optional(),
    backendRefs: z.array(BackendRef).max(16).optional(),
  })
  .superRefine((rule, ctx) => {
    rule.matches.forEach((m, i) => {
      checkMatchRegexes(m, ctx, ["matches", i]);
    });
  });

export const GRPCRouteSpec = z.strictObject({
  parentRefs: z.array(ParentRef).min(1).max(32),
  hostnames: z.array(z.string().max(253)).max(16).optional(),
  rules: z.array(GRPCRouteRule).min(1).max(64),
});
export type GRPCRouteSpec = z.infer<typeof GRPCRouteSpec>;
export type GRPCRouteMatch = z.infer<typeof GRPCRouteMatch>;

// ---------------------------------------------------------------- TrafficPolicy

export const TargetRef = z.strictObject({
  group: z.enum(["", "core"]).optional(),
  kind: z.literal("Service").default("Service"),
  name: Name,
});

export const LoadBalancer = z
  .strictObject({
    type: z.enum(["RoundRobin", "LeastRequest", "ConsistentHash"]).default("RoundRobin"),
    /** ConsistentHash only: hash a request header, or else the source address. */
    consistentHash: z
      .strictObject({ header: HeaderName.optional(), sourceIP: z.boolean().optional() })
      .refine((h) => (h.header === undefined) !== (h.sourceIP !== true), "set exactly one of header or sourceIP")
      .optional(),
    /**
     * Prefer endpoints on the nearest nodes: the same node first, then nodes whose measured RTT is
     * within `rttToleranceMs` of the nearest; other endpoints only when those are all unavailable.
     */
    locality: z.strictObject({ rttToleranceMs: z.number().min(0).max(10_000).default(1) }).optional(),
  })
  .refine((lb) => (lb.type === "ConsistentHash") === (lb.consistentHash !== undefined), {
    message: "consistentHash is required with type ConsistentHash and only then",
    path: ["consistentHash"],
  });

export const RETRY_ON = [
  "connect-failure",
  "reset",
  "5xx",
  "gateway-error",
  "retriable-429",
  // gRPC statuses (in a trailers-only or headers response).
  "cancelled",
  "deadline-exceeded",
  "internal",
  "resource-exhausted",
  "unavailable",
] as const;
export type RetryOn = (typeof RETRY_ON)[number];

export const RetryPolicy = z.strictObject({
  /** Retries after the first attempt. */
  attempts: z.number().int().min(0).max(10).default(2),
  retryOn: z.array(z.enum(RETRY_ON)).default(["connect-failure", "reset", "gateway-error", "unavailable"]),
  backoff: z
    .strictObject({ baseInterval: Duration.default("25ms"), maxInterval: Duration.default("250ms") })
    .default({ baseInterval: "25ms", maxInterval: "250ms" }),
  /** Retry POST, PATCH and other non-idempotent methods too. */
  retryNonIdempotent: z.boolean().default(false),
  /** A request whose body is larger than this is not retried (its body is not kept). */
  maxRetryBodyBytes: z
    .number()
    .int()
    .min(0)
    .max(16 * 1024 * 1024)
    .default(64 * 1024),
  /** Retries in flight may be at most `percent` of the active requests, or `minConcurrency`. */
  budget: z
    .strictObject({
      percent: Percent.default(20),
      minConcurrency: z.number().int().min(0).max(1000).default(3),
    })
    .default({ percent: 20, minConcurrency: 3 }),
});

export const Timeouts = z.strictObject({
  /** Whole request including retries → 504. */
  request: Duration.optional(),
  /** One attempt → retried if retries allow (as gateway-error), else 504. */
  perTry: Duration.optional(),
  /** A connection (client or upstream) with no traffic for this long is closed. */
  idle: Duration.optional(),
  /** TCP connect plus the agent-to-agent handshake. */
  connect: Duration.optional(),
});

export const CircuitBreaker = z.strictObject({
  maxConnections: z.number().int().min(1).optional(),
  maxPendingRequests: z.number().int().min(0).optional(),
  maxRequests: z.number().int().min(1).optional(),
});

export const OutlierDetection = z.strictObject({
  consecutive5xx: z.number().int().min(1).optional(),
  consecutiveGatewayErrors: z.number().int().min(1).optional(),
  baseEjectionTime: Duration.default("30s"),
  maxEjectionTime: Duration.default("300s"),
  maxEjectionPercent: Percent.default(50),
});

/**
 * Active health checking of the Service's endpoints (Envoy's health_checks; kubelet's probes, from
 * the mesh). Each endpoint is checked by the agent of its node (inside the pod, as kubelet would)
 * and, when it is outside the mesh, by every agent that routes to it. `unhealthyThreshold` failed
 * checks in a row take it out of load balancing (as outlier detection ejects), `healthyThreshold`
 * passed ones bring it back. HTTP: a GET of `path`, healthy on 200–399; TCP: a connect.
 */
export const HealthCheck = z
  .strictObject({
    http: z
      .strictObject({
        path: z
          .string()
          .max(1024)
          .regex(/^\/[^\s]*$/, "must be a path starting with '/'"),
      })
      .optional(),
    tcp: z.strictObject({}).optional(),
    /** The endpoint port checked; default: the target port of the Service's first port. */
    port: Port.optional(),
    interval: Duration.default("5s"),
    timeout: Duration.default("1s"),
    unhealthyThreshold: z.number().int().min(1).max(100).default(2),
    healthyThreshold: z.number().int().min(1).max(100).default(1),
  })
  .refine((h) => (h.http === undefined) !== (h.tcp === undefined), "set exactly one of http and tcp");
export type HealthCheck = z.infer<typeof HealthCheck>;

export const FaultInjection = z
  .strictObject({
    delay: z.strictObject({ fixedDelay: Duration, percent: Percent }).optional(),
    abort: z
      .strictObject({
        httpStatus: z.number().int().min(200).max(599).optional(),
        grpcStatus: z.number().int().min(1).max(16).optional(),
        percent: Percent,
      })
      .refine((a) => a.httpStatus !== undefined || a.grpcStatus !== undefined, "set httpStatus or grpcStatus")
      .optional(),
    /** Only requests carrying all these headers get faults. */
    headers: z.array(HeaderMatch).max(8).optional(),
  })
  .superRefine((f, ctx) => checkMatchRegexes(f, ctx, []));

export const RateLimit = z.strictObject({
  requestsPerSecond: z.number().min(0.001).max(1_000_000),
  /** Requests allowed at once after a quiet period. Default: one second's worth. */
  burst: z.number().int().min(1).max(1_000_000).optional(),
  /** A bucket per source workload instead of one for all callers. */
  perSourceWorkload: z.boolean().default(false),
});

/** Access logs for requests to the Service: a JSON line per request or connection, on both agents. */
export const AccessLog = z.strictObject({
  /** Share of requests logged. */
  sampling: Percent.default(100),
});

/**
 * Traces of requests to the Service (Istio's Telemetry API naming): the share of requests whose
 * trace starts at an agent that are sampled, in place of the agent's --trace-sampling. A caller's
 * traceparent that says sampled is sampled whatever the rate.
 */
export const Tracing = z.strictObject({
  randomSamplingPercentage: Percent,
});

export const TrafficPolicySpec = z.strictObject({
  targetRefs: z.array(TargetRef).min(1).max(32),
  loadBalancer: LoadBalancer.optional(),
  timeouts: Timeouts.optional(),
  retries: RetryPolicy.optional(),
  circuitBreaker: CircuitBreaker.optional(),
  outlierDetection: OutlierDetection.optional(),
  healthCheck: HealthCheck.optional(),
  faultInjection: FaultInjection.optional(),
  rateLimit: RateLimit.optional(),
  accessLog: AccessLog.optional(),
  tracing: Tracing.optional(),
  /**
   * X-Forwarded-For on requests to the Service. Append (the default): the agent that first sees
   * the request adds the address of its immediate caller, as Envoy's use_remote_address does, so
   * the right-most entry is one the mesh vouches for. Sanitize: the header is replaced by that
   * address alone (what clients claim is dropped).
   */
  forwardedFor: z.enum(["Append", "Sanitize"]).optional(),
});
export type TrafficPolicySpec = z.infer<typeof TrafficPolicySpec>;

// ---------------------------------------------------------------- authorization

/**
 * A value a rule compares with: exact, `prefix*`, `*suffix`, or `*` (any value present), as
 * Istio's AuthorizationPolicy strings are.
 */
const Pattern = z
  .string()
  .min(1)
  .max(256)
  .refine((v) => v === "*" || !v.slice(1, -1).includes("*"), "'*' may only open or close a pattern");
const Patterns = z.array(Pattern).min(1).max(64);
/** An IPv4 address or CIDR block. */
const IpBlock = z
  .string()
  .regex(
    /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}(\/([12]?\d|3[0-2]))?$/,
    "must be an IPv4 address or CIDR block such as 10.0.0.0/8",
  );
const PathPattern = Pattern.refine((v) => v.startsWith("/") || v.startsWith("*"), "a path starts with '/' (or '*')");

/** Who calls: every field set must match (absent fields match anything). */
const AuthorizationSource = z.strictObject({
  /** SPIFFE ids proven by mTLS, e.g. `spiffe://cluster.local/ns/shop/sa/frontend` or `*\/sa/frontend`. */
  principals: Patterns.optional(),
  notPrincipals: Patterns.optional(),
  /** The caller's namespace, as its certificate proves it (plaintext callers have none). */
  namespaces: Patterns.optional(),
  notNamespaces: Patterns.optional(),
  /** The source pod's address (through the tunnel: as the source agent vouches for it). */
  ipBlocks: z.array(IpBlock).min(1).max(64).optional(),
  notIpBlocks: z.array(IpBlock).min(1).max(64).optional(),
  /** `<iss>/<sub>` of a JWT a RequestAuthentication validated (HTTP only). */
  requestPrincipals: Patterns.optional(),
  notRequestPrincipals: Patterns.optional(),
});

/** What is asked: every field set must match. Methods, paths and hosts exist only for HTTP and gRPC. */
const AuthorizationOperation = z.strictObject({
  ports: z.array(Port).min(1).max(64).optional(),
  notPorts: z.array(Port).min(1).max(64).optional(),
  methods: Patterns.optional(),
  notMethods: Patterns.optional(),
  /** Matched against the normalised path, without the query (gRPC: `/package.Service/Method`). */
  paths: z.array(PathPattern).min(1).max(64).optional(),
  notPaths: z.array(PathPattern).min(1).max(64).optional(),
  /** The request's host (`:authority`), without the port; case-insensitive. */
  hosts: Patterns.optional(),
  notHosts: Patterns.optional(),
});

/**
 * A further condition (Istio's `when`) on a request header or a claim of the request's validated
 * JWT (a claim that is a list matches when one of its items does): one of `values`, none of
 * `notValues`.
 */
const AuthorizationCondition = z
  .strictObject({
    key: z
      .string()
      .regex(
        /^(request\.headers\[[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256}\]|request\.auth\.claims\[[A-Za-z0-9_.:-]{1,128}\])$/,
        "must be request.headers[NAME] or request.auth.claims[NAME]",
      ),
    values: Patterns.optional(),
    notValues: Patterns.optional(),
  })
  .refine((c) => c.values !== undefined || c.notValues !== undefined, "set values or notValues");

/** A rule matches when one of `from`, one of `to` and every `when` match; a part left out matches all. */
const AuthorizationRule = z.strictObject({
  from: z
    .array(z.strictObject({ source: AuthorizationSource }))
    .min(1)
    .max(16)
    .optional(),
  to: z
    .array(z.strictObject({ operation: AuthorizationOperation }))
    .min(1)
    .max(16)
    .optional(),
  when: z.array(AuthorizationCondition).min(1).max(16).optional(),
});

/**
 * AuthorizationPolicy (nodemesh.io/v1alpha1), Istio's in shape, evaluated by the destination's
 * agent: any matching DENY policy denies; then, once an ALLOW policy selects the workload, a
 * request must match one of them; AUDIT policies only record. `targetRefs` select the pods of
 * those Services; without it the policy selects every pod of its namespace. A policy without
 * rules matches nothing (an ALLOW without rules thus denies everything; `rules: [{}]` allows all).
 */
export const AuthorizationPolicySpec = z.strictObject({
  targetRefs: z.array(TargetRef).min(1).max(32).optional(),
  action: z.enum(["ALLOW", "DENY", "AUDIT"]).default("ALLOW"),
  rules: z.array(AuthorizationRule).max(64).default([]),
});
export type AuthorizationPolicySpec = z.infer<typeof AuthorizationPolicySpec>;

// ---------------------------------------------------------------- request authentication

const JwtRule = z
  .strictObject({
    /** The `iss` a token must carry. */
    issuer: z.string().min(1).max(512),
    /** One of them must be in the token's `aud`; absent: any audience. */
    audiences: z.array(z.string().min(1).max(512)).min(1).max(32).optional(),
    /** The issuer's public keys as a JWKS document (JSON text). */
    jwks: z
      .string()
      .max(65_536)
      .refine((text) => {
        // The agent's own reader decides: what it cannot load is refused here, not in every agent.
        try {
          jose().createLocalJWKSet(JSON.parse(text));
          return true;
        } catch {
          return false;
        }
      }, 'must be a JWKS document: {"keys": [{"kty": ...}, ...]}')
      .optional(),
    /** Where the destination's agent fetches the JWKS (cached; refetched for an unknown key id). */
    jwksUri: z
      .url({ protocol: /^https?$/ })
      .max(2048)
      .optional(),
    /** Where the token is; default `Authorization: Bearer <token>`. */
    fromHeaders: z
      .array(z.strictObject({ name: HeaderName, prefix: z.string().max(64).optional() }))
      .min(1)
      .max(8)
      .optional(),
    /** Keep the token on the request to the app; by default it is removed once validated (Istio's). */
    forwardOriginalToken: z.boolean().default(false),
  })
  .refine((r) => (r.jwks === undefined) !== (r.jwksUri === undefined), "set exactly one of jwks and jwksUri");

/**
 * RequestAuthentication (nodemesh.io/v1alpha1), Istio's: the JWTs the selected pods accept,
 * validated by the destination's agent. A request carrying a token that fails validation is
 * refused (401); one without a token goes on with no request principal, for AuthorizationPolicy
 * to decide (`requestPrincipals`, `request.auth.claims[…]`). Selection as AuthorizationPolicy's.
 */
export const RequestAuthenticationSpec = z.strictObject({
  targetRefs: z.array(TargetRef).min(1).max(32).optional(),
  jwtRules: z.array(JwtRule).min(1).max(16),
});
export type RequestAuthenticationSpec = z.infer<typeof RequestAuthenticationSpec>;

// ---------------------------------------------------------------- peer authentication

/**
 * PERMISSIVE: callers in mTLS and plaintext callers (tunnels without a certificate, callers
 * outside the mesh) are both accepted. STRICT: only callers that prove a mesh identity over mTLS.
 * DISABLE: the mesh's callers tunnel to these pods in plaintext (their agents use no certificate),
 * as Istio's auto-mTLS respects a DISABLE at the server; a caller in mTLS is still accepted.
 */
const MtlsMode = z.strictObject({ mode: z.enum(["PERMISSIVE", "STRICT", "DISABLE"]) });

/**
 * PeerAuthentication (nodemesh.io/v1alpha1), Istio's: the mTLS mode of the pods it selects, at the
 * destination's agent. With `targetRefs` it selects those Services' pods (and may set a mode per
 * pod port); without, every pod of its namespace; in the mesh's root namespace (nodemesh-system),
 * every pod of the mesh. The most specific one that sets a mode wins; none: PERMISSIVE.
 */
export const PeerAuthenticationSpec = z
  .strictObject({
    targetRefs: z.array(TargetRef).min(1).max(32).optional(),
    /** Absent: the mode of the level above (namespace, then mesh). */
    mtls: MtlsMode.optional(),
    /** By the pod's port (the targetPort), overriding `mtls` there. Only with targetRefs. */
    portLevelMtls: z.record(z.string().regex(/^[1-9]\d{0,4}$/, "must be a port number"), MtlsMode).optional(),
  })
  .refine((s) => s.portLevelMtls === undefined || s.targetRefs !== undefined, {
    path: ["portLevelMtls"],
    message: "portLevelMtls needs targetRefs (a mode per port of every pod would be a namespace's)",
  });
export type PeerAuthenticationSpec = z.infer<typeof PeerAuthenticationSpec>;

// ---------------------------------------------------------------- on the wire to agents

export const TRAFFIC_KINDS = {
  HTTPRoute: HTTPRouteSpec,
  GRPCRoute: GRPCRouteSpec,
  TrafficPolicy: TrafficPolicySpec,
  AuthorizationPolicy: AuthorizationPolicySpec,
  PeerAuthentication: PeerAuthenticationSpec,
  RequestAuthentication: RequestAuthenticationSpec,
} as const;
export type TrafficKind = keyof typeof TRAFFIC_KINDS;

/** A traffic object as an agent receives it: the validated spec, defaults filled in. */
export type TrafficObject =
  | { kind: "HTTPRoute"; name: string; namespace: string; spec: HTTPRouteSpec }
  | { kind: "GRPCRoute"; name: string; namespace: string; spec: GRPCRouteSpec }
  | { kind: "TrafficPolicy"; name: string; namespace: string; spec: TrafficPolicySpec }
  | { kind: "AuthorizationPolicy"; name: string; namespace: string; spec: AuthorizationPolicySpec }
  | { kind: "PeerAuthentication"; name: string; namespace: string; spec: PeerAuthenticationSpec }
  | { kind: "RequestAuthentication"; name: string; namespace: string; spec: RequestAuthenticationSpec };

export function trafficKey(o: { kind: string; namespace: string; name: string }): string {
  return `${o.kind}/${o.namespace}/${o.name}`;
}

/** Validates one object (field paths start at `spec`); returns the object with defaults filled in. */
export function parseTrafficObject(
  input: unknown,
): { ok: true; value: TrafficObject } | { ok: false; errors: { field: string; message: string }[] } {
  const head = z
    .looseObject({ kind: z.enum(Object.keys(TRAFFIC_KINDS) as [TrafficKind]), name: Name, namespace: Name })
    .safeParse(input);
  if (!head.success) {
    return { ok: false, errors: head.error.issues.map((i) => ({ field: fieldPath(i.path), message: i.message })) };
  }
  const { kind, name, namespace } = head.data;
  const spec = TRAFFIC_KINDS[kind].safeParse((input as { spec?: unknown }).spec);
  if (!spec.success) {
    return {
      ok: false,
      errors: fieldErrors(TRAFFIC_KINDS[kind], spec.error.issues).map((e) => ({
        field: fieldPath(["spec", ...e.path]),
        message: e.message,
      })),
    };
  }
  return { ok: true, value: { kind, name, namespace, spec: spec.data } as TrafficObject };
}
