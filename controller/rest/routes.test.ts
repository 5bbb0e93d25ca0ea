import { describe, expect, it } from "vitest";
import { fieldPath } from "../../api/field-path.ts";
import { RestError } from "./errors.ts";
import { applyMergePatch } from "./merge-patch.ts";
import { parsePath, resolveResourceRoute } from "./routes.ts";

describe("parsePath", () => {
  it("recognises namespaced, cluster-wide and system paths", () => {
    expect(parsePath("/apis/nodemesh.io/v1alpha1/namespaces/ns/services/web")).toEqual({
      type: "resource",
      path: { group: "nodemesh.io", version: "v1alpha1", namespace: "ns", plural: "services", name: "web" },
    });
    expect(parsePath("/apis/nodemesh.io/v1alpha1/namespaces/ns/services")).toMatchObject({
      path: { namespace: "ns", plural: "services" },
    });
    expect(parsePath("/apis/nodemesh.io/v1alpha1/services")).toMatchObject({ path: { plural: "services" } });
    const clusterWide = parsePath("/apis/nodemesh.io/v1alpha1/services");
    expect(clusterWide.type === "resource" && [clusterWide.path.namespace, clusterWide.path.name]).toEqual([
      undefined,
      undefined,
    ]);
    expect(parsePath("/healthz")).toEqual({ type: "system", path: "healthz" });
    expect(parsePath("/openapi/v3")).toEqual({ type: "system", path: "openapi" });
  });

  it.each([
    "/",
    "/apis",
    "/apis/nodemesh.io/v1alpha1",
    "/apis/nodemesh.io/v1alpha1/namespaces/ns/services/web/extra",
    "/apis/nodemesh.io/v1alpha1/namespaces//services",
    "/apis/nodemesh.io/v1alpha1/namespaces/%E0%A4%A/services",
  ])("finds nothing at %s", (path) => {
    expect(parsePath(path)).toEqual({ type: "unknown" });
  });
});

describe("resolveResourceRoute", () => {
  const item = { group: "nodemesh.io", version: "v1alpha1", namespace: "ns", plural: "services", name: "web" };
  const collection = { ...item, name: undefined };
  const allNamespaces = { ...collection, namespace: undefined };

  it.each([
    [item, "GET", false, "get"],
    [item, "PUT", false, "update"],
    [item, "PATCH", false, "patch"],
    [item, "DELETE", false, "delete"],
    [collection, "GET", false, "list"],
    [collection, "GET", true, "watch"],
    [collection, "POST", false, "create"],
    [allNamespaces, "GET", false, "list"],
    [allNamespaces, "GET", true, "watch"],
  ] as const)("%o %s (watch %s) is %s", (path, method, watch, verb) => {
    expect(resolveResourceRoute(path, method, watch).verb).toBe(verb);
  });

  it("resolves each kind in its own group only", () => {
    const route = { ...item, group: "gateway.networking.k8s.io", version: "v1", plural: "httproutes" };
    expect(resolveResourceRoute(route, "GET", false).kind.kind).toBe("HTTPRoute");
    expect(resolveResourceRoute({ ...route, plural: "grpcroutes" }, "GET", false).kind.kind).toBe("GRPCRoute");
    expect(resolveResourceRoute({ ...item, plural: "trafficpolicies" }, "GET", false).kind.kind).toBe("TrafficPolicy");
    expect(() => resolveResourceRoute({ ...route, plural: "services" }, "GET", false)).toThrow(RestError);
    expect(() => resolveResourceRoute({ ...item, plural: "httproutes" }, "GET", false)).toThrow(RestError);
  });

  it.each([
    [item, "POST", "MethodNotAllowed"],
    [collection, "DELETE", "MethodNotAllowed"],
    [allNamespaces, "POST", "MethodNotAllowed"],
    [{ ...item, plural: "widgets" }, "GET", "NotFound"],
    [{ ...item, namespace: undefined }, "GET", "NotFound"],
  ] as const)("%o %s is %s", (path, method, reason) => {
    expect(() => resolveResourceRoute(path, method, false)).toThrow(RestError);
    try {
      resolveResourceRoute(path, method, false);
    } catch (err) {
      expect((err as RestError).reason).toBe(reason);
    }
  });
});

describe("applyMergePatch (RFC 7386 examples)", () => {
  it.each([
    [{ a: "b" }, { a: "c" }, { a: "c" }],
    [{ a: "b" }, { b: "c" }, { a: "b", b: "c" }],
    [{ a: "b" }, { a: null }, {}],
    [{ a: "b", b: "c" }, { a: null }, { b: "c" }],
    [{ a: ["b"] }, { a: "c" }, { a: "c" }],
    [{ a: "c" }, { a: ["b"] }, { a: ["b"] }],
    [{ a: { b: "c" } }, { a: { b: "d", c: null } }, { a: { b: "d" } }],
    [{ a: [{ b: "c" }] }, { a: [1] }, { a: [1] }],
    [
      ["a", "b"],
      ["c", "d"],
      ["c", "d"],
    ],
    [{ a: "b" }, ["c"], ["c"]],
    [{ a: "foo" }, null, null],
    [{ a: "foo" }, "bar", "bar"],
    [{ e: null }, { a: 1 }, { e: null, a: 1 }],
    [[1, 2], { a: "b", c: null }, { a: "b" }],
    [{}, { a: { bb: { ccc: null } } }, { a: { bb: {} } }],
  ])("%j + %j = %j", (target, patch, result) => {
    expect(applyMergePatch(target, patch)).toEqual(result);
  });

  it("never modifies its inputs, and keeps __proto__ as plain data", () => {
    const target = Object.freeze({ a: Object.freeze({ b: 1 }) });
    const patch = JSON.parse('{"a": {"c": 2}, "__proto__": {"polluted": true}}');
    const result = applyMergePatch(target, patch) as Record<string, unknown>;
    expect(result["a"]).toEqual({ b: 1, c: 2 });
    expect(Object.keys(result)).toContain("__proto__");
    expect(({} as Record<string, unknown>)["polluted"]).toBeUndefined();
    expect(Object.getPrototypeOf(result)).toBe(Object.prototype);
  });
});

describe("fieldPath", () => {
  it("writes paths the way kubectl users read them", () => {
    expect(fieldPath(["spec", "ports", 1, "port"])).toBe("spec.ports[1].port");
    expect(fieldPath(["metadata", "labels", "app.kubernetes.io/name"])).toBe("metadata.labels.app.kubernetes.io/name");
    expect(fieldPath([])).toBe("");
  });
});
