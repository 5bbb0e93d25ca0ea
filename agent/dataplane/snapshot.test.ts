import { describe, expect, it } from "vitest";
import type { Service, ServiceTable } from "../../api/services.ts";
import { parseTrafficObject, type TrafficObject } from "../../api/traffic.ts";
import { DEFAULT_POLICY } from "./policy.ts";
import type { RequestFacts } from "./routing.ts";
import {
  compileSnapshot,
  type Rule,
  type ServiceRoute,
  type Snapshot,
  type SnapshotMessage,
  selectRule,
  slotKeys,
} from "./snapshot.ts";

// ---------------------------------------------------------------- fixtures

/** The share of a rule's weight that names no known backend. */
function invalidWeight(rule: Rule): number {
  return rule.totalWeight - rule.backends.reduce((sum, b) => sum + b.weight, 0);
}

const REVIEWS = "10.96.0.10";
const V1 = "10.96.0.11";
const V2 = "10.96.0.12";

function services(): Service[] {
  return [
    {
      name: "reviews",
      namespace: "default",
      vip: REVIEWS,
      ports: [
        { name: "http", port: 9080, targetPort: 8080, protocol: "http" },
        { name: "grpc", port: 9090, protocol: "grpc" },
        { name: "other", port: 9081, targetPort: 8081 },
      ],
      endpoints: [
        { ip: "10.244.1.1", node: "node-a", pod: "reviews-v1-a", meshed: true },
        { ip: "10.244.2.1", node: "node-b", pod: "reviews-v2-a", meshed: true },
        { ip: "10.244.3.1", node: "node-c", pod: "reviews-v2-b" },
      ],
    },
    {
      name: "reviews-v1",
      namespace: "default",
      vip: V1,
      ports: [{ port: 9080, targetPort: 8080 }, { port: 9090 }],
      endpoints: [{ ip: "10.244.1.1", node: "node-a", pod: "reviews-v1-a", meshed: true }],
    },
    {
      name: "reviews-v2",
      namespace: "default",
      vip: V2,
      ports: [{ port: 9080, targetPort: 8080 }, { port: 9090 }],
      endpoints: [
        { ip: "10.244.2.1", node: "node-b", pod: "reviews-v2-a", meshed: true },
        { ip: "10.244.3.1", node: "node-c", pod: "reviews-v2-b" },
        // An endpoint that overrides the target port (and belongs to no other service).
        { ip: "10.244.3.2", port: 8088, node: "node-c", pod: "reviews-v2-c" },
      ],
    },
  ];
}

function traffic(...objs: unknown[]): TrafficObject[] {
  return objs.map((o) => {
    const r = parseTrafficObject(o);
    if (!r.ok) throw new Error(JSON.stringify(r.errors));
    return r.value;
  });
}

function httpRoute(name: string, spec: Record<string, unknown>, namespace = "default") {
  return { kind: "HTTPRoute", name, namespace, spec: { parentRefs: [{ name: "reviews" }], ...spec } };
}
function grpcRoute(name: string, spec: Record<string, unknown>, namespace = "default") {
  return { kind: "GRPCRoute", name, namespace, spec: { parentRefs: [{ name: "reviews" }], ...spec } };
}
function trafficPolicy(name: string, targets: string[], spec: Record<string, unknown> = {}) {
  return {
    kind: "TrafficPolicy",
    name,
    namespace: "default",
    spec: { targetRefs: targets.map((t) => ({ name: t })), ...spec },
  };
}
const to = (service: string, weight?: number, port?: number) => ({ name: service, weight, port });

function compile(objs: unknown[], extra: Partial<SnapshotMessage> & { services?: Service[] } = {}): Snapshot {
  const table: ServiceTable = { services: extra.services ?? services(), traffic: traffic(...objs) };
  const { routes, endpoints } = slotKeys(table);
  return compileSnapshot({
    version: "v1",
    table,
    routeSlots: Object.fromEntries(routes.map((k, i) => [k, i + 1])),
    endpointSlots: Object.fromEntries([...new Set(endpoints)].map((k, i) => [k, i + 1])),
    node: "node-a",
    rttMs: { "node-b": 0.5, "node-c": 3 },
    ...extra,
  });
}

function route(snap: Snapshot, vip = REVIEWS, port = 9080): ServiceRoute {
  const r = snap.routes.get(`${vip}:${port}`);
  if (!r) throw new Error(`no route ${vip}:${port}`);
  return r;
}

function req(url: string, opts: { method?: string; headers?: Record<string, string> } = {}): RequestFacts {
  const q = url.indexOf("?");
  const headers = new Map(Object.entries(opts.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v]));
  return {
    method: opts.method ?? "GET",
    path: q < 0 ? url : url.slice(0, q),
    query: q < 0 ? "" : url.slice(q + 1),
    header: (name) => headers.get(name),
  };
}

/** The name of the rule a request takes ("default/route#rule"), "-" when none does and the port has rules. */
function ruleFor(r: ServiceRoute, url: string, opts: Parameters<typeof req>[1] & { grpc?: boolean } = {}) {
  const s = selectRule(r, opts.grpc ?? false, req(url, opts));
  return s.routed ? (s.rule?.name ?? "-") : undefined;
}

// ---------------------------------------------------------------- HTTPRoute matching

describe("HTTPRoute path precedence", () => {
  const snap = compile([
    httpRoute("r", {
      rules: [
        {
          name: "regex",
          matches: [{ path: { type: "RegularExpression", value: "/reviews/[0-9]+" } }],
          backendRefs: [to("reviews-v2")],
        },
        {
          name: "prefix",
          matches: [{ path: { type: "PathPrefix", value: "/reviews" } }],
          backendRefs: [to("reviews-v1")],
        },
        { name: "exact", matches: [{ path: { type: "Exact", value: "/reviews/1" } }], backendRefs: [to("reviews")] },
        {
          name: "regex2",
          matches: [{ path: { type: "RegularExpression", value: "/ratings/.*" } }],
          backendRefs: [to("reviews")],
        },
      ],
    }),
  ]);
  const r = route(snap);

  it("Exact beats PathPrefix beats RegularExpression, whatever the rule order", () => {
    expect(ruleFor(r, "/reviews/1")).toBe("default/r#exact");
    expect(ruleFor(r, "/reviews/2")).toBe("default/r#prefix");
    expect(ruleFor(r, "/ratings/2")).toBe("default/r#regex2");
  });

  it("matches Exact and RegularExpression against the whole path, without the query", () => {
    expect(ruleFor(r, "/reviews/1?x=1")).toBe("default/r#exact");
    expect(ruleFor(r, "/reviews/1/")).toBe("default/r#prefix");
    expect(ruleFor(r, "/xratings/2")).toBe("-");
    expect(ruleFor(r, "/ratings")).toBe("-");
  });

  it("selectRule says routed with no rule when rules exist but none matches", () => {
    expect(selectRule(r, false, req("/other"))).toEqual({ rule: undefined, routed: true });
  });

  it("selectRule says not routed when the port has no rules", () => {
    expect(selectRule(route(snap, V1), false, req("/reviews/1"))).toEqual({ rule: undefined, routed: false });
    // The route's own service is then the backend.
    expect(route(snap, V1).self.route).toBe(route(snap, V1));
    expect(route(snap, V1).self.weight).toBe(1);
  });
});

describe("HTTPRoute PathPrefix", () => {
  const snap = compile([
    httpRoute("r", {
      rules: [
        { name: "short", matches: [{ path: { type: "PathPrefix", value: "/foo" } }], backendRefs: [to("reviews")] },
        { name: "long", matches: [{ path: { type: "PathPrefix", value: "/foo/bar" } }], backendRefs: [to("reviews")] },
        { name: "slash", matches: [{ path: { type: "PathPrefix", value: "/api/" } }], backendRefs: [to("reviews")] },
      ],
    }),
  ]);
  const r = route(snap);

  it("lets the longest prefix win", () => {
    expect(ruleFor(r, "/foo/bar")).toBe("default/r#long");
    expect(ruleFor(r, "/foo/bar/baz")).toBe("default/r#long");
    expect(ruleFor(r, "/foo/baz")).toBe("default/r#short");
  });

  it("matches by path element: /foo matches /foo and /foo/bar, not /foobar", () => {
    expect(ruleFor(r, "/foo")).toBe("default/r#short");
    expect(ruleFor(r, "/foo/")).toBe("default/r#short");
    expect(ruleFor(r, "/foobar")).toBe("-");
    expect(ruleFor(r, "/foo/barbaz")).toBe("default/r#short");
    expect(ruleFor(r, "/fo")).toBe("-");
  });

  it("ignores a trailing slash in the prefix", () => {
    expect(ruleFor(r, "/api")).toBe("default/r#slash");
    expect(ruleFor(r, "/api/v1")).toBe("default/r#slash");
    expect(ruleFor(r, "/apiv1")).toBe("-");
  });

  it("treats a rule without matches, and a match without a path, as prefix /", () => {
    const s = compile([
      httpRoute("r", {
        rules: [
          { name: "m", matches: [{ method: "POST" }], backendRefs: [to("reviews-v1")] },
          { name: "all", backendRefs: [to("reviews-v2")] },
        ],
      }),
    ]);
    expect(ruleFor(route(s), "/anything", { method: "POST" })).toBe("default/r#m");
    expect(ruleFor(route(s), "/anything")).toBe("default/r#all");
    expect(ruleFor(route(s), "/")).toBe("default/r#all");
  });
});

describe("HTTPRoute method, header and query matches", () => {
  const snap = compile([
    httpRoute("r", {
      rules: [
        { name: "plain", matches: [{ path: { value: "/api" } }], backendRefs: [to("reviews")] },
        { name: "post", matches: [{ path: { value: "/api" }, method: "POST" }], backendRefs: [to("reviews")] },
        {
          name: "header",
          matches: [{ path: { value: "/api" }, headers: [{ name: "X-Version", value: "v2" }] }],
          backendRefs: [to("reviews-v2")],
        },
        {
          name: "two-headers",
          matches: [
            {
              path: { value: "/api" },
              headers: [
                { name: "x-version", value: "v2" },
                { name: "x-user", type: "RegularExpression", value: "tester-[0-9]+" },
              ],
            },
          ],
          backendRefs: [to("reviews-v2")],
        },
        {
          name: "query",
          matches: [
            {
              path: { value: "/api" },
              queryParams: [
                { name: "debug", value: "1" },
                { name: "id", type: "RegularExpression", value: "[a-f]+" },
              ],
            },
          ],
          backendRefs: [to("reviews-v1")],
        },
      ],
    }),
  ]);
  const r = route(snap);

  it("matches the method, and prefers a method match to none", () => {
    expect(ruleFor(r, "/api", { method: "POST" })).toBe("default/r#post");
    expect(ruleFor(r, "/api", { method: "GET" })).toBe("default/r#plain");
    expect(ruleFor(r, "/api", { method: "PUT" })).toBe("default/r#plain");
  });

  it("matches header values exactly (names case-insensitively) and by regex, more headers first", () => {
    expect(ruleFor(r, "/api", { headers: { "X-Version": "v2" } })).toBe("default/r#header");
    expect(ruleFor(r, "/api", { headers: { "x-version": "V2" } })).toBe("default/r#plain");
    expect(ruleFor(r, "/api", { headers: { "x-version": "v2", "x-user": "tester-42" } })).toBe("default/r#two-headers");
    expect(ruleFor(r, "/api", { headers: { "x-version": "v2", "x-user": "tester-42x" } })).toBe("default/r#header");
    expect(ruleFor(r, "/api", { headers: { "x-user": "tester-42" } })).toBe("default/r#plain");
  });

  it("matches query parameters exactly and by regex, all of them", () => {
    expect(ruleFor(r, "/api?debug=1&id=abc")).toBe("default/r#query");
    expect(ruleFor(r, "/api?id=abc&x=y&debug=1")).toBe("default/r#query");
    expect(ruleFor(r, "/api?debug=1&id=abg")).toBe("default/r#plain");
    expect(ruleFor(r, "/api?debug=1")).toBe("default/r#plain");
    expect(ruleFor(r, "/api?debug=10&id=abc")).toBe("default/r#plain");
    // The first occurrence counts.
    expect(ruleFor(r, "/api?debug=1&debug=2&id=a")).toBe("default/r#query");
    expect(ruleFor(r, "/api?debug=2&debug=1&id=a")).toBe("default/r#plain");
  });

  it("prefers a method match to header matches, and header matches to query matches", () => {
    expect(ruleFor(r, "/api?debug=1&id=a", { method: "POST", headers: { "x-version": "v2" } })).toBe("default/r#post");
    expect(ruleFor(r, "/api?debug=1&id=a", { headers: { "x-version": "v2" } })).toBe("default/r#header");
  });
});

describe("HTTPRoute ties and parents", () => {
  it("breaks ties by route namespace/name, then rule order; a rule matches if any of its matches does", () => {
    const snap = compile([
      httpRoute("zeta", { rules: [{ name: "z", matches: [{ path: { value: "/x" } }], backendRefs: [to("reviews")] }] }),
      httpRoute("alpha", {
        rules: [
          { name: "a1", matches: [{ path: { value: "/y" } }, { path: { value: "/x" } }], backendRefs: [to("reviews")] },
          { name: "a2", matches: [{ path: { value: "/x" } }], backendRefs: [to("reviews")] },
        ],
      }),
    ]);
    expect(ruleFor(route(snap), "/x")).toBe("default/alpha#a1");
    expect(ruleFor(route(snap), "/y")).toBe("default/alpha#a1");
  });

  it("names rules without a name by their index", () => {
    const snap = compile([
      httpRoute("r", { rules: [{ matches: [{ path: { value: "/a" } }] }, { backendRefs: [to("reviews")] }] }),
    ]);
    expect(ruleFor(route(snap), "/a")).toBe("default/r#0");
    expect(ruleFor(route(snap), "/b")).toBe("default/r#1");
  });

  it("applies a port-specific parentRef only to that port", () => {
    const snap = compile([
      httpRoute("r", { parentRefs: [{ name: "reviews", port: 9080 }], rules: [{ backendRefs: [to("reviews-v1")] }] }),
    ]);
    expect(ruleFor(route(snap, REVIEWS, 9080), "/")).toBe("default/r#0");
    expect(ruleFor(route(snap, REVIEWS, 9081), "/")).toBeUndefined();
    expect(route(snap, REVIEWS, 9081).httpRules).toHaveLength(0);
  });

  it("applies a parentRef without a port to every port of the Service, and only to that Service", () => {
    const snap = compile([httpRoute("r", { rules: [{ backendRefs: [to("reviews-v1")] }] })]);
    expect(ruleFor(route(snap, REVIEWS, 9080), "/")).toBe("default/r#0");
    expect(ruleFor(route(snap, REVIEWS, 9081), "/")).toBe("default/r#0");
    expect(ruleFor(route(snap, V1, 9080), "/")).toBeUndefined();
  });

  it("resolves the parent's namespace from the route's, or from the parentRef", () => {
    const snap = compile([
      httpRoute("elsewhere", { rules: [{ backendRefs: [to("reviews")] }] }, "shop"),
      httpRoute(
        "cross",
        { parentRefs: [{ name: "reviews-v2", namespace: "default" }], rules: [{ backendRefs: [to("reviews")] }] },
        "shop",
      ),
    ]);
    expect(route(snap).httpRules).toHaveLength(0); // reviews.shop does not exist
    expect(ruleFor(route(snap, V2), "/")).toBe("shop/cross#0");
    // Its backendRef resolves in the route's namespace: reviews.shop, which does not exist.
    expect(invalidWeight(selectRule(route(snap, V2), false, req("/")).rule!)).toBe(1);
  });

  // BUG (snapshot.ts compileSnapshot, the `http`/`grpc` concatenation): port-specific rules are put
  // before Service-wide ones instead of being merged and sorted by rank, so a port-specific
  // catch-all shadows a Service-wide Exact match. Gateway API ranks matches "across all rules
  // specified on applicable Routes".
  it("merges port-specific and Service-wide rules by precedence (an Exact match beats a catch-all)", () => {
    const snap = compile([
      httpRoute("catch-all", {
        parentRefs: [{ name: "reviews", port: 9080 }],
        rules: [{ backendRefs: [to("reviews-v1")] }],
      }),
      httpRoute("special", {
        rules: [{ matches: [{ path: { type: "Exact", value: "/special" } }], backendRefs: [to("reviews-v2")] }],
      }),
    ]);
    expect(ruleFor(route(snap, REVIEWS, 9081), "/special")).toBe("default/special#0");
    expect(ruleFor(route(snap, REVIEWS, 9080), "/other")).toBe("default/catch-all#0");
    expect(ruleFor(route(snap, REVIEWS, 9080), "/special")).toBe("default/special#0");
  });
});

// ---------------------------------------------------------------- backends

describe("rule backends", () => {
  it("binds weighted backendRefs to the backend Services' routes on the parent's port", () => {
    const snap = compile([httpRoute("r", { rules: [{ backendRefs: [to("reviews-v1", 90), to("reviews-v2", 10)] }] })]);
    for (const port of [9080, 9090]) {
      const rule = selectRule(route(snap, REVIEWS, port), false, req("/"))!.rule!;
      expect(rule.totalWeight).toBe(100);
      expect(invalidWeight(rule)).toBe(0);
      expect(rule.backends.map((b) => b.weight)).toEqual([90, 10]);
      expect(rule.backends[0]!.route).toBe(route(snap, V1, port));
      expect(rule.backends[1]!.route).toBe(route(snap, V2, port));
      expect(rule.backends[1]!.route.endpoints.map((e) => e.pod)).toEqual([
        "reviews-v2-a",
        "reviews-v2-b",
        "reviews-v2-c",
      ]);
    }
  });

  it("uses the backendRef's port when it names one, and defaults the weight to 1", () => {
    const snap = compile([
      httpRoute("r", { rules: [{ backendRefs: [to("reviews-v1", undefined, 9090), to("reviews-v2")] }] }),
    ]);
    const rule = selectRule(route(snap, REVIEWS, 9080), false, req("/")).rule!;
    expect(rule.backends[0]!.route).toBe(route(snap, V1, 9090));
    expect(rule.backends[1]!.route).toBe(route(snap, V2, 9080));
    expect(rule.totalWeight).toBe(2);
  });

  it("leaves weight-0 backends out", () => {
    const snap = compile([httpRoute("r", { rules: [{ backendRefs: [to("reviews-v1", 0), to("reviews-v2", 5)] }] })]);
    const rule = selectRule(route(snap), false, req("/")).rule!;
    expect(rule.backends.map((b) => b.route.id)).toEqual(["reviews-v2.default"]);
    expect(rule.totalWeight).toBe(5);
    expect(invalidWeight(rule)).toBe(0);
  });

  it("marks a backendRef to an unknown Service or port as invalid", () => {
    const snap = compile([
      httpRoute("r", {
        rules: [
          {
            name: "unknown",
            matches: [{ path: { value: "/a" } }],
            backendRefs: [to("reviews-v1", 90), to("reviews-v3", 10)],
          },
          { name: "badport", matches: [{ path: { value: "/b" } }], backendRefs: [to("reviews-v1", 1, 1234)] },
          { name: "none", matches: [{ path: { value: "/c" } }] },
        ],
      }),
    ]);
    const a = selectRule(route(snap), false, req("/a")).rule!;
    expect(invalidWeight(a)).toBe(10);
    expect(a.totalWeight).toBe(100);
    expect(a.backends.map((b) => b.route.id)).toEqual(["reviews-v1.default"]);
    const b = selectRule(route(snap), false, req("/b")).rule!;
    expect(invalidWeight(b)).toBe(1);
    expect(b.backends).toEqual([]);
    const c = selectRule(route(snap), false, req("/c")).rule!;
    expect(invalidWeight(c)).toBe(0);
    expect(c.backends).toEqual([]);
    expect(c.totalWeight).toBe(0);
  });

  it("compiles filters and timeouts of a rule", () => {
    const snap = compile([
      httpRoute("r", {
        rules: [
          {
            backendRefs: [to("reviews-v1")],
            timeouts: { request: "2s", backendRequest: "500ms" },
            filters: [
              {
                type: "RequestHeaderModifier",
                requestHeaderModifier: {
                  set: [{ name: "X-A", value: "1" }],
                  add: [{ name: "X-B", value: "2" }],
                  remove: ["X-C"],
                },
              },
              { type: "ResponseHeaderModifier", responseHeaderModifier: { remove: ["Server"] } },
              { type: "RequestMirror", requestMirror: { backendRef: { name: "reviews-v2" }, percent: 25 } },
            ],
          },
        ],
      }),
    ]);
    const rule = selectRule(route(snap), false, req("/")).rule!;
    expect(rule.requestTimeoutMs).toBe(2000);
    expect(rule.perTryTimeoutMs).toBe(500);
    expect(rule.requestHeaders).toEqual({ set: [["x-a", "1"]], add: [["x-b", "2"]], remove: ["x-c"] });
    expect(rule.responseHeaders).toEqual({ set: [], add: [], remove: ["server"] });
    expect(rule.mirror?.ratio).toBe(0.25);
    expect(rule.mirror?.backend.route).toBe(route(snap, V2));
  });

  it("mirrors by fraction, and drops a mirror to an unknown Service", () => {
    const snap = compile([
      httpRoute("r", {
        rules: [
          {
            matches: [{ path: { value: "/a" } }],
            backendRefs: [to("reviews-v1")],
            filters: [
              {
                type: "RequestMirror",
                requestMirror: { backendRef: { name: "reviews-v2" }, fraction: { numerator: 1, denominator: 8 } },
              },
            ],
          },
          {
            matches: [{ path: { value: "/b" } }],
            backendRefs: [to("reviews-v1")],
            filters: [{ type: "RequestMirror", requestMirror: { backendRef: { name: "nope" } } }],
          },
        ],
      }),
    ]);
    expect(selectRule(route(snap), false, req("/a")).rule!.mirror?.ratio).toBe(0.125);
    const b = selectRule(route(snap), false, req("/b")).rule!;
    expect(b.mirror).toBeUndefined();
    expect(invalidWeight(b)).toBe(0);
  });
});

// ---------------------------------------------------------------- GRPCRoute

describe("GRPCRoute", () => {
  const snap = compile([
    grpcRoute("g", {
      rules: [
        { name: "service", matches: [{ method: { service: "echo.Echo" } }], backendRefs: [to("reviews-v1")] },
        {
          name: "exact",
          matches: [{ method: { service: "echo.Echo", method: "Unary" } }],
          backendRefs: [to("reviews-v2")],
        },
        {
          name: "regex",
          matches: [{ method: { type: "RegularExpression", service: "echo\\..*", method: "Stream.*" } }],
          backendRefs: [to("reviews")],
        },
        {
          name: "header",
          matches: [{ method: { service: "other.Other", method: "Get" }, headers: [{ name: "x-tenant", value: "a" }] }],
          backendRefs: [to("reviews")],
        },
      ],
    }),
  ]);
  const r = route(snap, REVIEWS, 9090);

  it("matches service and method on /package.Service/Method paths, exact service+method first", () => {
    expect(ruleFor(r, "/echo.Echo/Unary", { grpc: true })).toBe("default/g#exact");
    expect(ruleFor(r, "/echo.Echo/Other", { grpc: true })).toBe("default/g#service");
    expect(ruleFor(r, "/echo.Echo/StreamIn", { grpc: true })).toBe("default/g#service"); // service-only beats regex
    expect(ruleFor(r, "/echo.Echo2/StreamIn", { grpc: true })).toBe("default/g#regex");
    expect(ruleFor(r, "/echo.Echo2/Unary", { grpc: true })).toBe("-");
    expect(ruleFor(r, "/echo.Echo", { grpc: true })).toBe("-");
    expect(ruleFor(r, "/Unary", { grpc: true })).toBe("-");
  });

  it("matches headers", () => {
    expect(ruleFor(r, "/other.Other/Get", { grpc: true, headers: { "x-tenant": "a" } })).toBe("default/g#header");
    expect(ruleFor(r, "/other.Other/Get", { grpc: true, headers: { "x-tenant": "b" } })).toBe("-");
  });

  it("applies GRPCRoutes to gRPC requests only; others see the port's HTTPRoutes", () => {
    expect(ruleFor(r, "/echo.Echo/Unary")).toBeUndefined();
    const both = compile([
      grpcRoute("g", { rules: [{ matches: [{ method: { service: "echo.Echo" } }], backendRefs: [to("reviews-v1")] }] }),
      httpRoute("h", { rules: [{ backendRefs: [to("reviews-v2")] }] }),
    ]);
    expect(ruleFor(route(both, REVIEWS, 9090), "/echo.Echo/Unary", { grpc: true })).toBe("default/g#0");
    expect(ruleFor(route(both, REVIEWS, 9090), "/echo.Echo/Unary")).toBe("default/h#0");
    // A gRPC request on a port without GRPCRoutes takes the HTTPRoutes.
    const httpOnly = compile([httpRoute("h", { rules: [{ backendRefs: [to("reviews-v2")] }] })]);
    expect(ruleFor(route(httpOnly, REVIEWS, 9090), "/echo.Echo/Unary", { grpc: true })).toBe("default/h#0");
  });

  // BUG (routing.ts grpcEntry rank): a match without `method` gets rank 1, the same as a
  // service-only match, so a catch-all of an alphabetically earlier route (or an earlier rule) wins.
  // Gateway API GRPCRoute precedence: the largest number of characters in a matching service, then
  // in a matching method, then header matches. A catch-all matches no service characters at all.
  it("ranks a match naming a service above a catch-all rule", () => {
    const s = compile([
      grpcRoute("a-catch-all", { rules: [{ backendRefs: [to("reviews-v1")] }] }),
      grpcRoute("b-echo", {
        rules: [{ matches: [{ method: { service: "echo.Echo" } }], backendRefs: [to("reviews-v2")] }],
      }),
    ]);
    expect(ruleFor(route(s, REVIEWS, 9090), "/other.Other/Get", { grpc: true })).toBe("default/a-catch-all#0");
    expect(ruleFor(route(s, REVIEWS, 9090), "/echo.Echo/Unary", { grpc: true })).toBe("default/b-echo#0");
  });

  // Same BUG as above (routing.ts grpcEntry rank): a method-only match ranks with a service-only one.
  it("ranks a service-only match above a method-only match", () => {
    const s = compile([
      grpcRoute("g", {
        rules: [
          { name: "method", matches: [{ method: { method: "Get" } }], backendRefs: [to("reviews-v1")] },
          { name: "service", matches: [{ method: { service: "other.Other" } }], backendRefs: [to("reviews-v2")] },
        ],
      }),
    ]);
    expect(ruleFor(route(s, REVIEWS, 9090), "/x.X/Get", { grpc: true })).toBe("default/g#method");
    expect(ruleFor(route(s, REVIEWS, 9090), "/other.Other/Get", { grpc: true })).toBe("default/g#service");
  });
});

// ---------------------------------------------------------------- policies on backends

describe("policies of routes and backends", () => {
  const objs = [
    trafficPolicy("parent", ["reviews"], { loadBalancer: { type: "LeastRequest" }, retries: {} }),
    trafficPolicy("v2", ["reviews-v2"], {
      loadBalancer: { type: "ConsistentHash", consistentHash: { header: "x-user" }, locality: { rttToleranceMs: 1 } },
    }),
    httpRoute("r", { rules: [{ backendRefs: [to("reviews-v1", 50), to("reviews-v2", 50)] }] }),
  ];
  const snap = compile(objs);

  it("gives a route its Service's policy, or the defaults", () => {
    expect(route(snap).policy.name).toBe("default/parent");
    expect(route(snap).hasPolicy).toBe(true);
    expect(route(snap).self.policy).toBe(route(snap).policy);
    expect(route(snap, V1).policy).toBe(DEFAULT_POLICY);
    expect(route(snap, V1).hasPolicy).toBe(false);
    expect(route(snap, V2).policy.name).toBe("default/v2");
  });

  it("lets the backend Service's policy win for its endpoints, else the parent's", () => {
    const rule = selectRule(route(snap), false, req("/")).rule!;
    const [v1, v2] = rule.backends;
    expect(v1!.policy.name).toBe("default/parent");
    expect(v1!.policy.lb.type).toBe("LeastRequest");
    expect(v1!.ring).toBeUndefined();
    expect(v2!.policy.name).toBe("default/v2");
    expect(v2!.policy.lb.type).toBe("ConsistentHash");
    expect(v2!.ring?.owners).toHaveLength(3 * 64);
  });

  it("prepares locality tiers from this node and the measured RTTs", () => {
    const rule = selectRule(route(snap), false, req("/")).rule!;
    const v2 = rule.backends[1]!;
    // node-a has no v2 endpoint: node-b (0.5 ms) first, then node-c (3 ms).
    expect(v2.tiers?.map((t) => t.map((e) => e.pod))).toEqual([["reviews-v2-a"], ["reviews-v2-b", "reviews-v2-c"]]);
    expect(rule.backends[0]!.tiers).toBeUndefined();
    expect(route(snap, V2).self.tiers?.map((t) => t.length)).toEqual([1, 2]);
    // Another node sees other tiers.
    const onC = compile(objs, { node: "node-c", rttMs: { "node-b": 2 } });
    expect(route(onC, V2).self.tiers?.map((t) => t.map((e) => e.pod))).toEqual([
      ["reviews-v2-b", "reviews-v2-c"],
      ["reviews-v2-a"],
    ]);
  });
});

// ---------------------------------------------------------------- routes, slots, inbound

describe("routes, slots and the inbound index", () => {
  const snap = compile([]);

  it("has a route per Service port, keyed by vip:port, with endpoints on the target port", () => {
    expect([...snap.routes.keys()].sort()).toEqual(
      [
        `${REVIEWS}:9080`,
        `${REVIEWS}:9081`,
        `${REVIEWS}:9090`,
        `${V1}:9080`,
        `${V1}:9090`,
        `${V2}:9080`,
        `${V2}:9090`,
      ].sort(),
    );
    const r = route(snap);
    expect(r.id).toBe("reviews.default");
    expect(r.port).toBe(9080);
    expect(r.protocol).toBe("http");
    expect(route(snap, REVIEWS, 9081).protocol).toBeUndefined();
    expect(r.endpoints.map((e) => `${e.ip}:${e.port}`)).toEqual([
      "10.244.1.1:8080",
      "10.244.2.1:8080",
      "10.244.3.1:8080",
    ]);
    expect(route(snap, REVIEWS, 9090).endpoints.map((e) => e.port)).toEqual([9090, 9090, 9090]);
    expect(route(snap, V2).endpoints.map((e) => e.port)).toEqual([8080, 8080, 8088]);
    expect(r.endpoints.map((e) => [e.meshed, e.node, e.pod])).toEqual([
      [true, "node-a", "reviews-v1-a"],
      [true, "node-b", "reviews-v2-a"],
      [false, "node-c", "reviews-v2-b"],
    ]);
    expect(snap.version).toBe("v1");
    expect(snap.node).toBe("node-a");
  });

  it("takes slots from the message: the same endpoint has one slot in every Service", () => {
    const slots = new Set<number>();
    for (const r of snap.routes.values()) slots.add(r.slot);
    expect(slots.size).toBe(snap.routes.size);
    expect(slots.has(0)).toBe(false);
    const inReviews = route(snap).endpoints[0]!;
    const inV1 = route(snap, V1).endpoints[0]!;
    expect(inReviews.slot).toBeGreaterThan(0);
    expect(inV1.slot).toBe(inReviews.slot);
    expect(route(snap, REVIEWS, 9090).endpoints[0]!.slot).not.toBe(inReviews.slot);
  });

  it("maps an endpoint ip:port to its route for inbound connections", () => {
    expect(snap.inbound.get("10.244.3.2:8088")).toBe(route(snap, V2));
    expect(snap.inbound.get("10.244.2.1:9090")?.port).toBe(9090);
    // An endpoint of several Services: the first in the table.
    expect(snap.inbound.get("10.244.1.1:8080")).toBe(route(snap));
    expect(snap.inbound.get("10.244.1.1:8081")).toBe(route(snap, REVIEWS, 9081));
    expect(snap.inbound.get("10.244.1.1:9080")).toBeUndefined(); // the service port is not the pod port
    expect(snap.inbound.get(`${REVIEWS}:9080`)).toBeUndefined();
  });
});
