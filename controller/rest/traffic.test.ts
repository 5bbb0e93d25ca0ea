// The traffic kinds over REST: HTTPRoute and GRPCRoute in the Gateway API group, TrafficPolicy in
// nodemesh.io. The verbs themselves are the generic ones (server.test.ts); this checks that a
// second API group routes, validates, lists, watches and documents like the first.

import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { KINDS } from "../../api/resources.ts";
import { registerStoreMetrics } from "../metrics.ts";
import {
  AUTHORIZATIONPOLICIES,
  authorizationPolicy,
  GRPCROUTES,
  grpcRoute,
  HTTPROUTES,
  httpRoute,
  PEERAUTHENTICATIONS,
  peerAuthentication,
  REQUESTAUTHENTICATIONS,
  requestAuthentication,
  SERVICES,
  service,
  startTestServer,
  type TestServer,
  TRAFFICPOLICIES,
  trafficPolicy,
} from "./test-server.fixture.ts";

let t: TestServer;
beforeEach(async () => {
  t = await startTestServer();
});
afterEach(async () => {
  await t.rest.close();
});

/** Everything a refused write must leave untouched, every kind included. */
function storeState(): string {
  return JSON.stringify({ rv: t.store.resourceVersion(), objects: KINDS.map((k) => t.store.list(k.plural)) });
}

const GATEWAY = "/apis/gateway.networking.k8s.io/v1";
const NODEMESH = "/apis/nodemesh.io/v1alpha1";

const CASES = [
  { kind: "HTTPRoute", plural: "httproutes", base: GATEWAY, collection: HTTPROUTES, make: httpRoute },
  { kind: "GRPCRoute", plural: "grpcroutes", base: GATEWAY, collection: GRPCROUTES, make: grpcRoute },
  {
    kind: "TrafficPolicy",
    plural: "trafficpolicies",
    base: NODEMESH,
    collection: TRAFFICPOLICIES,
    make: trafficPolicy,
  },
];

describe.each(CASES)("$kind", ({ kind, plural, base, collection, make }) => {
  it(`creates, reads, lists, patches and deletes at ${collection}`, async () => {
    const created = await t.call("POST", collection, { body: make("web") });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({
      apiVersion: base.slice("/apis/".length),
      kind,
      metadata: { name: "web", namespace: "default", generation: 1 },
    });
    expect(t.store.get({ plural, namespace: "default", name: "web" })).toEqual(created.body);

    const read = await t.call("GET", `${collection}/web`);
    expect(read.status).toBe(200);
    expect(read.body).toEqual(created.body);

    const elsewhere = make("other");
    await t.call("POST", `${base}/namespaces/staging/${plural}`, {
      body: { ...elsewhere, metadata: { name: "other" } },
    });
    const listed = await t.call("GET", collection);
    expect(listed.body).toMatchObject({ apiVersion: base.slice("/apis/".length), kind: `${kind}List` });
    expect(listed.body.items.map((o: { metadata: { name: string } }) => o.metadata.name)).toEqual(["web"]);
    const everywhere = await t.call("GET", `${base}/${plural}`);
    expect(everywhere.body.items.map((o: { metadata: { namespace: string } }) => o.metadata.namespace)).toEqual([
      "default",
      "staging",
    ]);

    const patched = await t.call("PATCH", `${collection}/web`, { body: { metadata: { labels: { team: "a" } } } });
    expect(patched.status).toBe(200);
    expect(patched.body.metadata).toMatchObject({ labels: { team: "a" }, generation: 1 });

    const deleted = await t.call("DELETE", `${collection}/web`);
    expect(deleted.status).toBe(200);
    expect((await t.call("GET", `${collection}/web`)).status).toBe(404);
  });

  it("is not found under the other group", async () => {
    const other = base === GATEWAY ? NODEMESH : GATEWAY;
    const reply = await t.call("GET", `${other}/namespaces/default/${plural}`);
    expect(reply.status).toBe(404);
    expect(reply.body.reason).toBe("NotFound");
  });
});

describe("defaults", () => {
  it("are filled in and stored, as agents will receive them", async () => {
    const route = await t.call("POST", HTTPROUTES, {
      body: httpRoute("web", { rules: [{ backendRefs: [{ name: "web-v2" }] }] }),
    });
    expect(route.body.spec).toEqual({
      parentRefs: [{ kind: "Service", name: "web", port: 80 }],
      rules: [
        {
          matches: [{ path: { type: "PathPrefix", value: "/" } }],
          backendRefs: [{ kind: "Service", name: "web-v2", weight: 1 }],
        },
      ],
    });
    const policy = await t.call("POST", TRAFFICPOLICIES, { body: trafficPolicy("web") });
    expect(policy.body.spec.retries).toEqual({
      attempts: 3,
      retryOn: ["connect-failure", "reset", "gateway-error", "unavailable"],
      backoff: { baseInterval: "25ms", maxInterval: "250ms" },
      retryNonIdempotent: false,
      maxRetryBodyBytes: 65536,
      budget: { percent: 20, minConcurrency: 3 },
    });
  });

  it("keep kinds of the same name apart", async () => {
    await t.call("POST", SERVICES, { body: service("web") });
    await t.call("POST", HTTPROUTES, { body: httpRoute("web") });
    await t.call("POST", GRPCROUTES, { body: grpcRoute("web") });
    await t.call("POST", TRAFFICPOLICIES, { body: trafficPolicy("web") });
    await t.call("POST", AUTHORIZATIONPOLICIES, { body: authorizationPolicy("web") });
    await t.call("POST", PEERAUTHENTICATIONS, { body: peerAuthentication("web") });
    await t.call("POST", REQUESTAUTHENTICATIONS, { body: requestAuthentication("web") });
    for (const k of KINDS) {
      expect(t.store.list(k.plural).map((o) => `${o.kind}/${o.metadata.name}`)).toEqual([`${k.kind}/web`]);
    }
    await t.call("DELETE", `${HTTPROUTES}/web`);
    expect((await t.call("GET", `${GRPCROUTES}/web`)).status).toBe(200);
    expect((await t.call("GET", `${TRAFFICPOLICIES}/web`)).status).toBe(200);
  });
});

type Body = Record<string, unknown>;
const route = (rule: Body) => httpRoute("bad", { rules: [rule] });

/** Each is refused with 422 naming every listed field, and nothing is stored. */
const INVALID: Array<{ what: string; path: string; body: unknown; fields: string[] }> = [
  {
    what: "an HTTPRoute path regex with a lookahead (RE2 has none)",
    path: HTTPROUTES,
    body: route({ matches: [{ path: { type: "RegularExpression", value: "/(?!admin).*" } }] }),
    fields: ["spec.rules[0].matches[0].path.value"],
  },
  {
    what: "an HTTPRoute header regex that does not compile",
    path: HTTPROUTES,
    body: route({ matches: [{ headers: [{ type: "RegularExpression", name: "x-user", value: "([" }] }] }),
    fields: ["spec.rules[0].matches[0].headers[0].value"],
  },
  {
    what: "an HTTPRoute path without a leading slash",
    path: HTTPROUTES,
    body: route({ matches: [{ path: { value: "v2" } }] }),
    fields: ["spec.rules[0].matches[0].path.value"],
  },
  {
    what: "an HTTPRoute backend weight of -1",
    path: HTTPROUTES,
    body: route({ backendRefs: [{ name: "web-v1", weight: -1 }] }),
    fields: ["spec.rules[0].backendRefs[0].weight"],
  },
  {
    what: "an unknown field in an HTTPRoute rule",
    path: HTTPROUTES,
    body: route({ backendRefs: [{ name: "web-v1" }], timeout: "1s" }),
    fields: ["spec.rules[0].timeout"],
  },
  {
    what: "an HTTPRoute without parents",
    path: HTTPROUTES,
    body: httpRoute("bad", { parentRefs: [] }),
    fields: ["spec.parentRefs"],
  },
  {
    what: "a header value with CR LF in a header modifier",
    path: HTTPROUTES,
    body: route({
      filters: [{ type: "RequestHeaderModifier", requestHeaderModifier: { set: [{ name: "x", value: "a\r\nb" }] } }],
    }),
    fields: ["spec.rules[0].filters[0].requestHeaderModifier.set[0].value"],
  },
  {
    what: "an HTTPRoute sent as nodemesh.io",
    path: HTTPROUTES,
    body: { ...httpRoute("bad"), apiVersion: "nodemesh.io/v1alpha1" },
    fields: ["apiVersion"],
  },
  {
    what: "a GRPCRoute method match naming neither service nor method",
    path: GRPCROUTES,
    body: grpcRoute("bad", { rules: [{ matches: [{ method: { type: "Exact" } }] }] }),
    fields: ["spec.rules[0].matches[0].method"],
  },
  {
    what: "an AuthorizationPolicy action that does not exist",
    path: AUTHORIZATIONPOLICIES,
    body: authorizationPolicy("bad", { action: "CUSTOM" }),
    fields: ["spec.action"],
  },
  {
    what: "an AuthorizationPolicy path with '*' in the middle, and one without a leading slash",
    path: AUTHORIZATIONPOLICIES,
    body: authorizationPolicy("bad", { rules: [{ to: [{ operation: { paths: ["/api/*/admin", "admin"] } }] }] }),
    fields: ["spec.rules[0].to[0].operation.paths[0]", "spec.rules[0].to[0].operation.paths[1]"],
  },
  {
    what: "an AuthorizationPolicy ipBlock that is not a CIDR block",
    path: AUTHORIZATIONPOLICIES,
    body: authorizationPolicy("bad", { rules: [{ from: [{ source: { ipBlocks: ["10.0.0.0/33"] } }] }] }),
    fields: ["spec.rules[0].from[0].source.ipBlocks[0]"],
  },
  {
    what: "an AuthorizationPolicy condition on an unknown key, and one with no values",
    path: AUTHORIZATIONPOLICIES,
    body: authorizationPolicy("bad", {
      rules: [{ when: [{ key: "request.auth.presenter", values: ["x"] }, { key: "request.headers[x-team]" }] }],
    }),
    fields: ["spec.rules[0].when[0].key", "spec.rules[0].when[1]"],
  },
  {
    what: "a PeerAuthentication mode per port without targetRefs",
    path: PEERAUTHENTICATIONS,
    body: peerAuthentication("bad", { targetRefs: undefined, portLevelMtls: { "8080": { mode: "STRICT" } } }),
    fields: ["spec.portLevelMtls"],
  },
  {
    what: "a PeerAuthentication port that is not a number",
    path: PEERAUTHENTICATIONS,
    body: peerAuthentication("bad", { portLevelMtls: { http: { mode: "STRICT" } } }),
    fields: ["spec.portLevelMtls.http"],
  },
  {
    what: "a RequestAuthentication JWKS that is not a JWKS document, and a jwksUri that is not http(s)",
    path: REQUESTAUTHENTICATIONS,
    body: requestAuthentication("bad", {
      jwtRules: [
        { issuer: "a", jwks: "{}" },
        { issuer: "b", jwksUri: "file:///etc/passwd" },
      ],
    }),
    fields: ["spec.jwtRules[0].jwks", "spec.jwtRules[1].jwksUri"],
  },
  {
    what: "a TrafficPolicy with consistentHash but type RoundRobin",
    path: TRAFFICPOLICIES,
    body: trafficPolicy("bad", { loadBalancer: { type: "RoundRobin", consistentHash: { sourceIP: true } } }),
    fields: ["spec.loadBalancer.consistentHash"],
  },
  {
    what: 'a TrafficPolicy duration "5 seconds"',
    path: TRAFFICPOLICIES,
    body: trafficPolicy("bad", { timeouts: { request: "5 seconds" } }),
    fields: ["spec.timeouts.request"],
  },
  {
    what: "a TrafficPolicy retrying on an unknown condition",
    path: TRAFFICPOLICIES,
    body: trafficPolicy("bad", { retries: { retryOn: ["sometimes"] } }),
    fields: ["spec.retries.retryOn[0]"],
  },
  {
    what: "a TrafficPolicy abort without a status",
    path: TRAFFICPOLICIES,
    body: trafficPolicy("bad", { faultInjection: { abort: { percent: 10 } } }),
    fields: ["spec.faultInjection.abort"],
  },
  {
    what: "a TrafficPolicy targeting a Deployment",
    path: TRAFFICPOLICIES,
    body: trafficPolicy("bad", { targetRefs: [{ kind: "Deployment", name: "web" }] }),
    fields: ["spec.targetRefs[0].kind"],
  },
];

describe("validation", () => {
  for (const c of INVALID) {
    it(`refuses ${c.what} with 422 naming ${c.fields.join(", ")}, storing nothing`, async () => {
      const before = storeState();
      const reply = await t.call("POST", c.path, { body: c.body });
      expect(reply.status).toBe(422);
      expect(reply.body).toMatchObject({ kind: "Status", status: "Failure", reason: "Invalid", code: 422 });
      const fields = reply.body.details.causes.map((cause: { field: string }) => cause.field);
      for (const field of c.fields) expect(fields).toContain(field);
      for (const field of c.fields) expect(reply.body.message).toContain(field);
      for (const cause of reply.body.details.causes) expect(cause.reason).toMatch(/^FieldValue/);
      expect(storeState()).toBe(before);
    });
  }
});

describe("unknown fields", () => {
  // One mechanism for every kind: the nearest field the schema accepts at that place.
  const SUGGESTIONS = [
    { path: TRAFFICPOLICIES, body: trafficPolicy("p", { faults: {} }), field: "spec.faults", near: "faultInjection" },
    {
      path: TRAFFICPOLICIES,
      body: trafficPolicy("p", { retries: { attempt: 6 } }),
      field: "spec.retries.attempt",
      near: "attempts",
    },
    {
      path: TRAFFICPOLICIES,
      body: trafficPolicy("p", { retries: { budget: { min_concurrency: 5 } } }),
      field: "spec.retries.budget.min_concurrency",
      near: "minConcurrency",
    },
    { path: TRAFFICPOLICIES, body: trafficPolicy("p", { retry: {} }), field: "spec.retry", near: "retries" },
    {
      path: HTTPROUTES,
      body: route({ backendRefs: [{ name: "web-v1" }], timeout: { request: "1s" } }),
      field: "spec.rules[0].timeout",
      near: "timeouts",
    },
    { path: GRPCROUTES, body: grpcRoute("g", { parentRef: [] }), field: "spec.parentRef", near: "parentRefs" },
    { path: SERVICES, body: service("s", { selectr: { app: "s" } }), field: "spec.selectr", near: "selector" },
    {
      path: SERVICES,
      body: { ...service("s"), metadata: { name: "s", namesapce: "default" } },
      field: "metadata.namesapce",
      near: "namespace",
    },
  ];
  for (const c of SUGGESTIONS) {
    it(`suggests "${c.near}" for ${c.field}`, async () => {
      const reply = await t.call("POST", c.path, { body: c.body });
      expect(reply.status).toBe(422);
      expect(reply.body.details.causes).toContainEqual({
        field: c.field,
        message: `unknown field; did you mean "${c.near}"?`,
        reason: "FieldValueForbidden",
      });
      expect(reply.body.message).toContain(`${c.field}: unknown field; did you mean "${c.near}"?`);
    });
  }

  it("suggests nothing when no field is near", async () => {
    const reply = await t.call("POST", TRAFFICPOLICIES, { body: trafficPolicy("p", { colour: "blue" }) });
    expect(reply.body.details.causes).toEqual([
      { field: "spec.colour", message: "unknown field", reason: "FieldValueForbidden" },
    ]);
  });
});

/** The first `count` events of a watch stream. */
async function watchEvents(path: string, count: number, act: () => Promise<void>): Promise<string[]> {
  const controller = new AbortController();
  const res = await fetch(`${t.rest.url}${path}`, { signal: controller.signal });
  expect(res.status).toBe(200);
  const reader = res.body!.getReader();
  await act();
  const lines: string[] = [];
  let pending = "";
  while (lines.length < count) {
    const { value } = await reader.read();
    const parts = (pending + new TextDecoder().decode(value)).split("\n");
    pending = parts.pop()!;
    lines.push(...parts);
  }
  controller.abort();
  return lines.slice(0, count).map((line) => {
    const e = JSON.parse(line);
    return `${e.type} ${e.object.kind} ${e.object.metadata.namespace}/${e.object.metadata.name}`;
  });
}

describe("watch", () => {
  it("streams the gateway group's kind across namespaces, and nothing else", async () => {
    const events = await watchEvents(`${GATEWAY}/httproutes?watch=true`, 3, async () => {
      await t.call("POST", TRAFFICPOLICIES, { body: trafficPolicy("web") });
      await t.call("POST", GRPCROUTES, { body: grpcRoute("web") });
      await t.call("POST", HTTPROUTES, { body: httpRoute("web") });
      await t.call("POST", `${GATEWAY}/namespaces/staging/httproutes`, {
        body: { ...httpRoute("api"), metadata: { name: "api" } },
      });
      await t.call("DELETE", `${HTTPROUTES}/web`);
    });
    expect(events).toEqual([
      "ADDED HTTPRoute default/web",
      "ADDED HTTPRoute staging/api",
      "DELETED HTTPRoute default/web",
    ]);
  });
});

describe("discovery and metrics", () => {
  it("documents each group with its own kinds in /openapi/v3", async () => {
    const doc = (await t.call("GET", "/openapi/v3")).body;
    expect(doc.tags).toEqual([
      {
        name: "nodemesh.io/v1alpha1",
        description: "Service, TrafficPolicy, AuthorizationPolicy, PeerAuthentication, RequestAuthentication",
      },
      { name: "gateway.networking.k8s.io/v1", description: "HTTPRoute, GRPCRoute" },
    ]);
    const paths = Object.keys(doc.paths);
    expect(paths).toContain(`${GATEWAY}/namespaces/{namespace}/httproutes/{name}`);
    expect(paths).toContain(`${GATEWAY}/grpcroutes`);
    expect(paths).toContain(`${NODEMESH}/namespaces/{namespace}/trafficpolicies`);
    expect(paths.filter((p) => p.startsWith(GATEWAY) && /services|trafficpolicies/.test(p))).toEqual([]);
    expect(doc.paths[`${GATEWAY}/namespaces/{namespace}/httproutes`].post.tags).toEqual([
      "gateway.networking.k8s.io/v1",
    ]);
    const schema = doc.components.schemas["io.k8s.networking.gateway.v1.HTTPRoute"];
    expect(schema.properties.apiVersion.enum).toEqual(["gateway.networking.k8s.io/v1"]);
    expect(schema.properties.spec.required).toEqual(["parentRefs", "rules"]);
    expect(doc.components.schemas["io.nodemesh.v1alpha1.TrafficPolicy"]).toBeDefined();
  });

  it("counts requests and stored objects per kind", async () => {
    registerStoreMetrics(t.registry, t.store);
    await t.call("POST", HTTPROUTES, { body: httpRoute("web") });
    await t.call("POST", TRAFFICPOLICIES, { body: trafficPolicy("web") });
    await t.call("POST", TRAFFICPOLICIES, { body: trafficPolicy("x", { timeouts: { request: "soon" } }) });
    const metrics = (await t.call("GET", "/metrics")).body;
    expect(metrics).toContain(
      'nodemesh_controller_rest_requests_total{verb="create",resource="httproutes",code="201"} 1',
    );
    expect(metrics).toContain(
      'nodemesh_controller_rest_requests_total{verb="create",resource="trafficpolicies",code="422"} 1',
    );
    expect(metrics).toContain('nodemesh_controller_store_objects{kind="HTTPRoute"} 1');
    expect(metrics).toContain('nodemesh_controller_store_objects{kind="GRPCRoute"} 0');
    expect(metrics).toContain('nodemesh_controller_store_objects{kind="TrafficPolicy"} 1');
  });
});
