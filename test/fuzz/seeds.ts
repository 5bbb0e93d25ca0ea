// Valid objects of every kind, the starting points of the mutation fuzzers (REST bodies, the
// traffic objects of the agent's Config). Built from the REST tests' fixtures, so they stay valid.

import {
  authorizationPolicy,
  grpcRoute,
  httpRoute,
  peerAuthentication,
  requestAuthentication,
  service,
  trafficPolicy,
} from "../../controller/rest/test-server.fixture.ts";

/** One REST body per kind, and a richer second one where the kind has more to exercise. */
export const REST_SEEDS: readonly Record<string, unknown>[] = [
  service("web"),
  service("web", { ports: [{ name: "grpc", port: 9090, targetPort: 19090, protocol: "grpc" }, { port: 80 }] }),
  httpRoute("web"),
  httpRoute("web", {
    rules: [
      {
        matches: [
          {
            path: { type: "RegularExpression", value: "/api/v[0-9]+/.*" },
            headers: [{ name: "x-user", type: "RegularExpression", value: "(a|b)+" }],
            method: "GET",
          },
        ],
        filters: [{ type: "RequestHeaderModifier", requestHeaderModifier: { set: [{ name: "x-a", value: "b" }] } }],
        backendRefs: [{ name: "web-v2", port: 80, weight: 1 }],
      },
    ],
  }),
  grpcRoute("greeter"),
  trafficPolicy("web"),
  authorizationPolicy("web"),
  authorizationPolicy("deny", {
    action: "DENY",
    rules: [
      {
        from: [{ source: { namespaces: ["other"], ipBlocks: ["10.0.0.0/8"] } }],
        to: [{ operation: { methods: ["POST"], paths: ["/admin/*"], ports: [8080] } }],
        when: [{ key: "request.headers[x-token]", values: ["a"] }],
      },
    ],
  }),
  peerAuthentication("web"),
  requestAuthentication("web"),
];

/** The same objects as traffic objects on the agent's wire: kind, namespace, name and spec. */
export const TRAFFIC_SEEDS: readonly { kind: string; namespace: string; name: string; spec: unknown }[] =
  REST_SEEDS.filter((o) => o.kind !== "Service").map((o) => {
    const meta = o.metadata as { name: string; namespace: string };
    return { kind: o.kind as string, namespace: meta.namespace, name: meta.name, spec: o.spec };
  });
