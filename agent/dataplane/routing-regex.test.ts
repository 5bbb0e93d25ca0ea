// Route regexes cost linear time (issue 21, item 4). The reproduction: `SafeRegex` accepted
// `/api/.*.*.*.*x`, and V8's backtracking engine spent seconds on each 550-character path that
// does not end in "x" (four such requests held a node's workers for ~35 s). The same matches must
// also keep today's meaning: the whole value, as `^(?:…)$` did.

import { describe, expect, it } from "vitest";
import { parseTrafficObject, type TrafficObject } from "../../api/traffic.ts";
import { headerTest } from "./policy.ts";
import { compileRoutes, parentKey, type RequestFacts } from "./routing.ts";

function traffic(...objs: unknown[]): TrafficObject[] {
  return objs.map((o) => {
    const r = parseTrafficObject(o);
    if (!r.ok) throw new Error(JSON.stringify(r.errors));
    return r.value;
  });
}

function request(path: string, headers: Record<string, string> = {}, query = ""): RequestFacts {
  return { method: "GET", path, query, header: (name) => headers[name] };
}

const routes = compileRoutes(
  traffic({
    kind: "HTTPRoute",
    namespace: "default",
    name: "attack",
    spec: {
      parentRefs: [{ name: "web" }],
      rules: [
        { name: "evil", matches: [{ path: { type: "RegularExpression", value: "/api/.*.*.*.*x" } }] },
        {
          name: "header",
          matches: [
            {
              path: { type: "PathPrefix", value: "/h" },
              headers: [{ type: "RegularExpression", name: "x-user", value: "a+b+c" }],
            },
          ],
        },
        {
          name: "query",
          matches: [
            { path: { value: "/q" }, queryParams: [{ type: "RegularExpression", name: "id", value: "[a-z0-9]+x" }] },
          ],
        },
      ],
    },
  }),
).http.get(parentKey("web.default"))!;

function ruleFor(req: RequestFacts): string | undefined {
  return routes.find((e) => e.matches(req))?.rule.name;
}

describe("route regexes run in linear time", () => {
  const long = `/api/${"a".repeat(545)}`; // 550 characters, no final "x"

  it("answers the 550-character reproduction in milliseconds, and correctly", () => {
    // One request first: on V8's backtracking engine this one alone took seconds.
    let start = performance.now();
    expect(ruleFor(request(long))).toBeUndefined();
    expect(performance.now() - start).toBeLessThan(50);

    start = performance.now();
    for (let i = 0; i < 200; i++) {
      expect(ruleFor(request(`${long.slice(0, 540 + (i % 10))}`))).toBeUndefined();
      expect(ruleFor(request(`${long}x`))).toBe("default/attack#evil");
    }
    expect(performance.now() - start).toBeLessThan(50 * 4); // 400 matches, typically ~5 ms in all
  });

  it("keeps header and query regexes linear too", () => {
    const start = performance.now();
    for (let i = 0; i < 50; i++) {
      expect(ruleFor(request("/h", { "x-user": `${"a".repeat(4000)}${"b".repeat(4000)}` }))).toBeUndefined();
      expect(ruleFor(request("/h", { "x-user": `${"a".repeat(4000)}${"b".repeat(4000)}c` }))).toBe(
        "default/attack#header",
      );
      expect(ruleFor(request("/q", {}, `id=${"a1".repeat(2000)}`))).toBeUndefined();
    }
    expect(performance.now() - start).toBeLessThan(1000);
  });
});

describe("route regexes keep their meaning", () => {
  it("match the whole value: anchored at both ends, alternation anchored as a whole", () => {
    const re = headerTest("RegularExpression", "a.b|c");
    expect(re("axb")).toBe(true);
    expect(re("c")).toBe(true);
    expect(re("xc")).toBe(false);
    expect(re("axbx")).toBe(false);
    expect(re("")).toBe(false);
    expect(headerTest("RegularExpression", "x*")("")).toBe(true);
    // Explicit anchors inside stay harmless, as with ^(?:…)$.
    expect(headerTest("RegularExpression", "^/(foo|bar)$")("/foo")).toBe(true);
    expect(headerTest("RegularExpression", "^/(foo|bar)$")("/foox")).toBe(false);
  });

  it("matches paths as V8 did for the patterns both engines accept", () => {
    const cases: [string, string[]][] = [
      [
        "/api/v[0-9]+/users/[a-z0-9-]{1,64}",
        ["/api/v2/users/ab-1", "/api/v/users/x", "/api/v10/users/", "/api/v1/users/a/b"],
      ],
      ["/reviews/[0-9]+", ["/reviews/1", "/reviews/", "/reviews/12x", "/x/reviews/1"]],
      ["(?:/v1|/v2)/x", ["/v1/x", "/v2/x", "/v3/x", "/v1/xx"]],
      ["/files/.*\\.(png|jpe?g)", ["/files/a.png", "/files/a.jpeg", "/files/a.jpg.txt", "/files/.gif"]],
      ["\\/api\\/\\w+\\s?\\d*", ["/api/abc", "/api/abc 12", "/api/", "/api/a-b"]],
      ["/users/(?<id>[0-9]+)", ["/users/42", "/users/x"]],
      ["/(a+)+b", ["/aaab", "/aaa", "/b"]],
      ["/CaSe", ["/CaSe", "/case"]],
    ];
    for (const [pattern, inputs] of cases) {
      const v8 = new RegExp(`^(?:${pattern})$`);
      const re2 = headerTest("RegularExpression", pattern);
      for (const input of inputs) expect([pattern, input, re2(input)]).toEqual([pattern, input, v8.test(input)]);
    }
  });

  it("routes a gRPC method regex on the service and method names", () => {
    const grpc = compileRoutes(
      traffic({
        kind: "GRPCRoute",
        namespace: "default",
        name: "g",
        spec: {
          parentRefs: [{ name: "web" }],
          rules: [{ matches: [{ method: { type: "RegularExpression", service: "echo\\..*", method: "Stream.*" } }] }],
        },
      }),
    ).grpc.get(parentKey("web.default"))!;
    expect(grpc.some((e) => e.matches(request("/echo.Echo/StreamIn")))).toBe(true);
    expect(grpc.some((e) => e.matches(request("/echo.Echo/Unary")))).toBe(false);
    expect(grpc.some((e) => e.matches(request("/xecho.Echo/StreamIn")))).toBe(false);
  });
});
