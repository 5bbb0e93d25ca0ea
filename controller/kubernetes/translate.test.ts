// Kubernetes objects → service-table resources: what is kept, what is left out and why.
import { describe, expect, it } from "vitest";
import { KINDS } from "../../api/resources.ts";
import { service } from "../../test/kubernetes/objects.ts";
import { isMeshRoute, sliceEndpoints, translateService, translateTraffic } from "./translate.ts";

describe("translateService", () => {
  it("keeps TCP ports with numeric targets, maps appProtocol, drops a targetPort equal to the port", () => {
    const t = translateService(
      service("shop", "api", "10.96.3.4", [
        { name: "http", port: 80, targetPort: 8080, protocol: "TCP", appProtocol: "http" },
        { name: "h2c", port: 81, targetPort: 81, protocol: "TCP", appProtocol: "kubernetes.io/h2c" },
        { name: "grpc", port: 9090, protocol: "TCP", appProtocol: "grpc" },
        { name: "tls", port: 443, targetPort: 8443, appProtocol: "https" },
        { name: "dns", port: 53, targetPort: 53, protocol: "UDP" },
        { name: "named", port: 8000, targetPort: "web", protocol: "TCP" },
      ]),
    );
    expect(t.ok && t.resource.spec).toEqual({
      vip: "10.96.3.4",
      ports: [
        { name: "http", port: 80, targetPort: 8080, protocol: "http" },
        { name: "h2c", port: 81, protocol: "http2" },
        { name: "grpc", port: 9090, protocol: "grpc" },
        { name: "tls", port: 443, targetPort: 8443 },
      ],
      selector: { app: "api" },
    });
  });

  it("leaves out what the mesh cannot route, saying why", () => {
    const headless = service("shop", "db", "None");
    const external = {
      ...service("shop", "ext", "10.96.0.1"),
      spec: { type: "ExternalName", externalName: "example.org" },
    };
    const noSelector = service("shop", "manual", "10.96.0.2", undefined, {});
    const udpOnly = service("shop", "dns", "10.96.0.3", [{ port: 53, protocol: "UDP" }]);
    const ipv6 = service("shop", "v6", "fd00::10");
    const reasons = [headless, external, noSelector, udpOnly, ipv6].map((s) => {
      const t = translateService(s);
      return t.ok ? "kept" : t.reason;
    });
    expect(reasons).toEqual([
      "headless Service (no ClusterIP)",
      "ExternalName Service",
      "Service without a selector (its endpoints are not pods nodemesh knows)",
      "no TCP port with a numeric targetPort",
      expect.stringContaining("vip: must be an IPv4 address"),
    ]);
  });
});

describe("translateTraffic", () => {
  const httpRoute = KINDS.find((k) => k.kind === "HTTPRoute")!;

  it("validates with the REST API's schema and fills its defaults", () => {
    const t = translateTraffic(httpRoute, {
      metadata: { name: "r", namespace: "shop", generation: 3 },
      spec: { parentRefs: [{ name: "reviews" }], rules: [{ backendRefs: [{ name: "reviews-v1" }] }] },
    });
    expect(t.ok && t.resource.spec).toMatchObject({
      rules: [
        { matches: [{ path: { type: "PathPrefix", value: "/" } }], backendRefs: [{ name: "reviews-v1", weight: 1 }] },
      ],
    });
  });

  it("refuses a Gateway API field nodemesh does not serve, naming it", () => {
    const t = translateTraffic(httpRoute, {
      metadata: { name: "r", namespace: "shop" },
      spec: { parentRefs: [{ group: "", kind: "Service", name: "reviews", sectionName: "http" }], rules: [{}] },
    });
    expect(t.ok).toBe(false);
    expect(!t.ok && t.reason).toMatch(/spec.parentRefs\[0\]/);
  });

  it("tells mesh routes (a Service parent) from a gateway's routes (kind defaults to Gateway)", () => {
    const route = (parentRefs: unknown[]) => ({ spec: { parentRefs } });
    expect(isMeshRoute(route([{ group: "", kind: "Service", name: "reviews" }]))).toBe(true);
    expect(isMeshRoute(route([{ kind: "Service", name: "reviews" }]))).toBe(true);
    expect(isMeshRoute(route([{ group: "gateway.networking.k8s.io", kind: "Gateway", name: "edge" }]))).toBe(false);
    expect(isMeshRoute(route([{ name: "edge" }]))).toBe(false);
    expect(isMeshRoute({ spec: {} })).toBe(false);
  });
});

describe("sliceEndpoints", () => {
  const slice = (endpoints: Record<string, unknown>[], extra: Record<string, unknown> = {}) => ({
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    metadata: { name: "web-x1", namespace: "shop", labels: { "kubernetes.io/service-name": "web" } },
    addressType: "IPv4",
    endpoints,
    ...extra,
  });

  it("keeps the ready endpoints, as kube-proxy reads them, with their pod and node", () => {
    const found = sliceEndpoints(
      slice([
        {
          addresses: ["10.1.0.11"],
          conditions: { ready: true },
          nodeName: "node-a",
          targetRef: { kind: "Pod", name: "web-1" },
        },
        { addresses: ["10.1.0.12"] }, // conditions absent: ready
        { addresses: ["10.1.0.13"], conditions: { ready: false } },
        { addresses: ["10.1.0.14"], conditions: { ready: true, terminating: true } },
        { addresses: ["not-an-ip"], conditions: { ready: true } },
        { conditions: { ready: true } },
      ]),
    );
    expect(found).toEqual({
      service: "shop/web",
      endpoints: [{ ip: "10.1.0.11", pod: "shop/web-1", node: "node-a" }, { ip: "10.1.0.12" }],
    });
  });

  it("ignores slices of no Service and IPv6 slices", () => {
    expect(sliceEndpoints({ ...slice([]), metadata: { name: "x", namespace: "shop" } })).toBeUndefined();
    expect(sliceEndpoints(slice([{ addresses: ["fd00::1"] }], { addressType: "IPv6" }))).toBeUndefined();
  });
});
