import { describe, expect, it } from "vitest";
import { parseTrafficObject, type TrafficObject } from "../../../api/traffic.ts";
import { BYPASS_ATTEMPTS, CLIENT_PRINCIPAL, DENY_POLICY } from "../../../test/e2e/fixtures/authz-bypass.ts";
import { type AuthzRequest, authorize, compileAuthorization, type WorkloadAuthorization } from "./authorization.ts";
import { normaliseRequestTarget } from "./request-path.ts";

const WEB_IP = "10.244.2.10";
const SERVICES = [
  { name: "web", namespace: "default", endpoints: [{ ip: WEB_IP }] },
  { name: "db", namespace: "default", endpoints: [{ ip: "10.244.2.20" }] },
];

function policy(name: string, spec: unknown, namespace = "default"): TrafficObject {
  const r = parseTrafficObject({ kind: "AuthorizationPolicy", name, namespace, spec });
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.value;
}

function webPolicies(...objects: TrafficObject[]): WorkloadAuthorization {
  const w = compileAuthorization(objects, SERVICES).forPod(WEB_IP, "default");
  if (!w) throw new Error("no policy selects web");
  return w;
}

const principal = (ns: string, sa: string) => `spiffe://cluster.local/ns/${ns}/sa/${sa}`;

function http(
  method: string,
  path: string,
  opts: {
    principal?: string;
    ip?: string;
    port?: number;
    host?: string;
    headers?: Record<string, string>;
    requestPrincipal?: string;
    claims?: Record<string, string[]>;
  } = {},
): AuthzRequest {
  return {
    principal: opts.principal,
    sourceIp: opts.ip ?? "10.244.1.5",
    port: opts.port ?? 8080,
    http: {
      method,
      path,
      host: opts.host ?? "web",
      header: (name) => opts.headers?.[name],
      requestPrincipal: opts.requestPrincipal,
      claim: (name) => opts.claims?.[name],
    },
  };
}

const tcp = (opts: { principal?: string; ip?: string; port?: number } = {}): AuthzRequest => ({
  principal: opts.principal,
  sourceIp: opts.ip ?? "10.244.1.5",
  port: opts.port ?? 9000,
});

const verdict = (w: WorkloadAuthorization, req: AuthzRequest) => {
  const d = authorize(w, req);
  return d.allowed ? "allow" : `deny ${d.policy ?? "(no ALLOW matched)"}`;
};

describe("which policies select a pod", () => {
  it("a policy with targetRefs selects the Services' pods; one without, every pod of its namespace", () => {
    const index = compileAuthorization(
      [
        policy("web-only", { targetRefs: [{ name: "web" }], rules: [{}] }),
        policy("everyone", { action: "AUDIT", rules: [{}] }),
        policy("elsewhere", { rules: [{}] }, "shop"),
      ],
      SERVICES,
    );
    const names = (w: WorkloadAuthorization | undefined) =>
      [...(w?.allow ?? []), ...(w?.audit ?? []), ...(w?.deny ?? [])].map((p) => p.name).sort();
    expect(names(index.forPod(WEB_IP, "default"))).toEqual(["default/everyone", "default/web-only"]);
    expect(names(index.forPod("10.244.2.20", "default"))).toEqual(["default/everyone"]);
    expect(names(index.forPod("10.244.3.3", "shop"))).toEqual(["shop/elsewhere"]);
    expect(index.forPod("10.244.3.4", "other")).toBeUndefined();
  });

  it("no policy at all: nothing is selected", () => {
    expect(compileAuthorization([], SERVICES).forPod(WEB_IP, "default")).toBeUndefined();
  });
});

describe("authorize", () => {
  const client = CLIENT_PRINCIPAL;
  const w = webPolicies(
    policy("deny-admin", { targetRefs: [{ name: "web" }], action: "DENY", rules: DENY_POLICY.rules }),
    policy("allow", {
      targetRefs: [{ name: "web" }],
      rules: [
        { from: [{ source: { principals: [client] } }], to: [{ operation: { methods: ["GET", "POST"] } }] },
        {
          from: [{ source: { namespaces: ["default"], notPrincipals: ["*/sa/blocked"] } }],
          to: [{ operation: { methods: ["GET"], paths: ["/reports/*"] } }],
          when: [{ key: "request.headers[x-team]", values: ["blue", "green"] }],
        },
        { from: [{ source: { ipBlocks: ["192.168.0.0/16"] } }], to: [{ operation: { paths: ["/open/*"] } }] },
        { from: [{ source: { principals: [client] } }], to: [{ operation: { ports: [9000] } }] },
        { from: [{ source: { principals: ["*/sa/monitor"] } }], to: [{ operation: { notPaths: ["/private*"] } }] },
      ],
    }),
    policy("audit-posts", {
      targetRefs: [{ name: "web" }],
      action: "AUDIT",
      rules: [{ to: [{ operation: { methods: ["POST"] } }] }],
    }),
  );

  it.each<[string, AuthzRequest, string]>([
    ["the client's GET", http("GET", "/public", { principal: client }), "allow"],
    ["the client's POST", http("POST", "/public", { principal: client }), "allow"],
    ["the client's DELETE", http("DELETE", "/public", { principal: client }), "deny (no ALLOW matched)"],
    [
      "the client at /admin (DENY before ALLOW)",
      http("GET", "/admin/x", { principal: client }),
      "deny default/deny-admin",
    ],
    [
      "anyone at host admin.internal",
      http("GET", "/x", { principal: client, host: "admin.internal" }),
      "deny default/deny-admin",
    ],
    ["a plaintext caller", http("GET", "/public"), "deny (no ALLOW matched)"],
    [
      "another workload of the namespace, with the header",
      http("GET", "/reports/q", { principal: principal("default", "other"), headers: { "x-team": "green" } }),
      "allow",
    ],
    [
      "… without it",
      http("GET", "/reports/q", { principal: principal("default", "other") }),
      "deny (no ALLOW matched)",
    ],
    [
      "… with another value",
      http("GET", "/reports/q", { principal: principal("default", "other"), headers: { "x-team": "red" } }),
      "deny (no ALLOW matched)",
    ],
    [
      "… on another path",
      http("GET", "/public", { principal: principal("default", "other"), headers: { "x-team": "blue" } }),
      "deny (no ALLOW matched)",
    ],
    [
      "a workload of another namespace",
      http("GET", "/reports/q", { principal: principal("shop", "other"), headers: { "x-team": "blue" } }),
      "deny (no ALLOW matched)",
    ],
    [
      "a principal the rule excludes",
      http("GET", "/reports/q", { principal: principal("default", "blocked"), headers: { "x-team": "blue" } }),
      "deny (no ALLOW matched)",
    ],
    ["an address in the block", http("GET", "/open/x", { ip: "192.168.4.4" }), "allow"],
    ["an address outside it", http("GET", "/open/x", { ip: "10.1.1.1" }), "deny (no ALLOW matched)"],
    [
      "a suffix principal, outside the notPaths",
      http("PUT", "/status", { principal: principal("ops", "monitor") }),
      "allow",
    ],
    ["… inside them", http("GET", "/private/k", { principal: principal("ops", "monitor") }), "deny (no ALLOW matched)"],
    [
      "… inside them, spelled otherwise (negations of ALLOW read loosely)",
      http("GET", "/PRIVATE/k", { principal: principal("ops", "monitor") }),
      "deny (no ALLOW matched)",
    ],
    ["the client's TCP to its port", tcp({ principal: client }), "allow"],
    [
      "the client's TCP to another port (an ALLOW rule naming methods does not match TCP)",
      tcp({ principal: client, port: 9001 }),
      "deny (no ALLOW matched)",
    ],
    ["another workload's TCP", tcp({ principal: principal("default", "other") }), "deny (no ALLOW matched)"],
  ])("%s → %s", (_name, req, expected) => {
    expect(verdict(w, req)).toBe(expected);
  });

  it("a DENY rule naming HTTP-only fields denies a TCP connection (the stricter reading)", () => {
    const deny = webPolicies(
      policy("deny-delete", {
        targetRefs: [{ name: "web" }],
        action: "DENY",
        rules: [{ to: [{ operation: { methods: ["DELETE"] } }] }],
      }),
    );
    expect(verdict(deny, tcp())).toBe("deny default/deny-delete");
    expect(verdict(deny, http("GET", "/"))).toBe("allow");
    expect(verdict(deny, http("delete", "/"))).toBe("deny default/deny-delete");
  });

  it("ALLOW compares paths and methods exactly; DENY loosely", () => {
    const allow = webPolicies(
      policy("allow-admin", {
        targetRefs: [{ name: "web" }],
        rules: [{ to: [{ operation: { methods: ["GET"], paths: ["/admin"] } }] }],
      }),
    );
    expect(verdict(allow, http("GET", "/admin"))).toBe("allow");
    expect(verdict(allow, http("GET", "/Admin"))).toBe("deny (no ALLOW matched)");
    expect(verdict(allow, http("get", "/admin"))).toBe("deny (no ALLOW matched)");
    expect(verdict(w, http("GET", "/ADMIN.", { principal: client }))).toBe("deny default/deny-admin");
  });

  it("no rules: an ALLOW policy matches nothing (denies all); rules: [{}] matches everything", () => {
    const nothing = webPolicies(policy("allow-nothing", { targetRefs: [{ name: "web" }] }));
    expect(verdict(nothing, http("GET", "/", { principal: client }))).toBe("deny (no ALLOW matched)");
    const everything = webPolicies(policy("allow-all", { targetRefs: [{ name: "web" }], rules: [{}] }));
    expect(verdict(everything, http("GET", "/"))).toBe("allow");
    expect(verdict(everything, tcp())).toBe("allow");
  });

  it("AUDIT policies are reported and decide nothing", () => {
    expect(authorize(w, http("POST", "/public", { principal: client }))).toEqual({
      allowed: true,
      audited: ["default/audit-posts"],
    });
    expect(authorize(w, http("POST", "/admin", { principal: client }))).toMatchObject({
      allowed: false,
      audited: ["default/audit-posts"],
    });
  });

  it("matches request principals and JWT claims; a TCP connection has neither", () => {
    const jwt = webPolicies(
      policy("jwt", {
        targetRefs: [{ name: "web" }],
        rules: [
          {
            from: [{ source: { requestPrincipals: ["https://issuer.test/*"] } }],
            to: [{ operation: { paths: ["/jwt/*"] } }],
          },
          { when: [{ key: "request.auth.claims[groups]", values: ["admins"] }] },
        ],
      }),
    );
    expect(jwt.readsRequestAuth).toBe(true);
    expect(w.readsRequestAuth).toBe(false);
    const alice = { requestPrincipal: "https://issuer.test/alice" };
    expect(verdict(jwt, http("GET", "/jwt/x", alice))).toBe("allow");
    expect(verdict(jwt, http("GET", "/jwt/x"))).toBe("deny (no ALLOW matched)");
    expect(verdict(jwt, http("GET", "/jwt/x", { requestPrincipal: "https://other.test/alice" }))).toBe(
      "deny (no ALLOW matched)",
    );
    expect(verdict(jwt, http("GET", "/other", { ...alice, claims: { groups: ["users", "admins"] } }))).toBe("allow");
    expect(verdict(jwt, http("GET", "/other", { ...alice, claims: { groups: ["users"] } }))).toBe(
      "deny (no ALLOW matched)",
    );
    expect(verdict(jwt, tcp())).toBe("deny (no ALLOW matched)");
  });

  it("the policies' header names are known, so that a request repeating one is refused", () => {
    expect([...w.headers]).toEqual(["x-team"]);
  });

  it("denies every path attempt of the bypass corpus that survives normalisation", () => {
    const corpus = BYPASS_ATTEMPTS.filter((a) => !a.headers && !a.method);
    let refused = 0;
    for (const a of corpus) {
      const n = normaliseRequestTarget(a.target);
      if (!n.ok) {
        refused++;
        continue;
      }
      expect(verdict(w, http("GET", n.path, { principal: client })), a.name).toBe("deny default/deny-admin");
    }
    expect(refused).toBeGreaterThan(10);
    expect(refused).toBeLessThan(corpus.length);
  });
});
