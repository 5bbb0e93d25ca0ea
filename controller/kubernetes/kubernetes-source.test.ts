// The Kubernetes source against the stand-in API server (test/kubernetes/api-server.ts): chunked
// lists, watches resumed from bookmarks, 410 Gone → relist, objects deleted while the API server
// was down, and the service table built from Kubernetes objects equal to the file store's.
import pino from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { Resource, ServiceSpec } from "../../api/resources.ts";
import { FakeApiServer } from "../../test/kubernetes/api-server.ts";
import { kubeConfigFor } from "../../test/kubernetes/kubeconfig.ts";
import { httpRoute, namespace, service, trafficPolicy } from "../../test/kubernetes/objects.ts";
import type { NodePod } from "../config/pod-index.ts";
import { buildServiceTable } from "../config/service-table.ts";
import { MemoryStore } from "../store/memory-store.ts";
import { StoreReadOnlyError } from "../store/store.ts";
import { KubeApiError, KubeClient } from "./kube-client.ts";
import { KubernetesSource } from "./kubernetes-source.ts";

let api: FakeApiServer;
let source: KubernetesSource | undefined;
const log = pino({ level: "silent" });

beforeEach(async () => {
  api = new FakeApiServer({ bookmarkIntervalMs: 0 });
  await api.start();
  api.apply(namespace("shop", { "nodemesh.io/intercept": "enabled" }));
  api.apply(namespace("plain"));
  api.apply(service("shop", "reviews", "10.96.0.10"));
  api.apply(
    service("shop", "ratings", "10.96.0.11", [{ name: "grpc", port: 9090, protocol: "TCP", appProtocol: "grpc" }]),
  );
  api.apply(service("plain", "web", "10.96.0.20"));
});

afterEach(async () => {
  await source?.stop();
  source = undefined;
  await api.stop();
});

async function startSource(pageSize = 500): Promise<KubernetesSource> {
  source = new KubernetesSource({ client: new KubeClient(kubeConfigFor(api.url)), log, pageSize });
  await source.start();
  await source.synced;
  return source;
}

/** Polls `check` until it holds (bounded: 5 s). */
async function eventually(check: () => void, what = "condition"): Promise<void> {
  const deadline = Date.now() + 5000;
  for (;;) {
    try {
      check();
      return;
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`${what} not reached in 5 s: ${(err as Error).message}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

const names = (s: KubernetesSource, plural: string) =>
  s.store.list(plural).map((r) => `${r.metadata.namespace}/${r.metadata.name}`);

describe("the Kubernetes source", () => {
  it("mirrors the Services of annotated namespaces: ClusterIP as VIP, appProtocol as protocol", async () => {
    const s = await startSource();
    await eventually(() => expect(names(s, "services")).toEqual(["shop/ratings", "shop/reviews"]));
    const reviews = s.store.get({ plural: "services", namespace: "shop", name: "reviews" }) as Resource<ServiceSpec>;
    expect(reviews.spec).toEqual({
      vip: "10.96.0.10",
      ports: [{ name: "http", port: 80, targetPort: 8080, protocol: "http" }],
      selector: { app: "reviews" },
    });
    expect(s.store.get({ plural: "services", namespace: "shop", name: "ratings" })?.spec).toMatchObject({
      ports: [{ name: "grpc", port: 9090, protocol: "grpc" }],
    });
  });

  it("builds the same service table as the standalone controller's store would", async () => {
    const s = await startSource();
    await eventually(() => expect(names(s, "services")).toHaveLength(2));
    const standalone = new MemoryStore();
    await standalone.create({
      apiVersion: "nodemesh.io/v1alpha1",
      kind: "Service",
      metadata: { name: "reviews", namespace: "shop" },
      spec: {
        vip: "10.96.0.10",
        ports: [{ name: "http", port: 80, targetPort: 8080, protocol: "http" }],
        selector: { app: "reviews" },
      },
    } as unknown as Resource);
    await standalone.create({
      apiVersion: "nodemesh.io/v1alpha1",
      kind: "Service",
      metadata: { name: "ratings", namespace: "shop" },
      spec: {
        vip: "10.96.0.11",
        ports: [{ name: "grpc", port: 9090, protocol: "grpc" }],
        selector: { app: "ratings" },
      },
    } as unknown as Resource);
    const pods: NodePod[] = [
      {
        name: "reviews-1",
        namespace: "shop",
        ip: "10.244.1.5",
        labels: { app: "reviews" },
        node: "node-1",
      },
      {
        name: "reviews-2",
        namespace: "shop",
        ip: "10.244.2.5",
        labels: { app: "reviews" },
        node: "node-2",
      },
    ] as NodePod[];
    const table = (services: Resource[]) =>
      [
        ...buildServiceTable({
          version: "1",
          services: services as Resource<ServiceSpec>[],
          pods,
          nodes: [],
        }).services.values(),
      ].map((e) => e.service);
    expect(table(s.store.list("services"))).toEqual(table(standalone.list("services")));
    expect(JSON.stringify(table(s.store.list("services")))).toContain("10.244.2.5");
  });

  it("reads lists in chunks and watches with bookmarks", async () => {
    for (let i = 0; i < 5; i++) api.apply(service("shop", `svc-${i}`, `10.96.1.${i}`));
    const s = await startSource(2);
    await eventually(() => expect(names(s, "services")).toHaveLength(7));
    const serviceLists = api.requests.filter((r) => r.path === "/api/v1/services" && r.query.watch !== "true");
    expect(serviceLists.length).toBeGreaterThanOrEqual(4); // 8 services in pages of 2
    expect(serviceLists.every((r) => r.query.limit === "2")).toBe(true);
    expect(serviceLists.some((r) => r.query.continue)).toBe(true);
    const watches = () => api.requests.filter((r) => r.query.watch === "true");
    await eventually(() => expect(watches().length).toBeGreaterThanOrEqual(5), "a watch per collection");
    expect(watches().every((r) => r.query.allowWatchBookmarks === "true" && r.query.resourceVersion)).toBe(true);
  });

  it("follows changes: updates, deletions, a namespace opting in and out", async () => {
    const s = await startSource();
    await eventually(() => expect(names(s, "services")).toHaveLength(2));
    api.apply(service("shop", "reviews", "10.96.0.10", [{ name: "http", port: 8000, protocol: "TCP" }]));
    await eventually(() =>
      expect(s.store.get({ plural: "services", namespace: "shop", name: "reviews" })?.spec).toMatchObject({
        ports: [{ port: 8000 }],
      }),
    );
    api.delete("services", "shop", "ratings");
    await eventually(() => expect(names(s, "services")).toEqual(["shop/reviews"]));
    api.apply(namespace("plain", { "nodemesh.io/intercept": "enabled" }));
    await eventually(() => expect(names(s, "services")).toEqual(["plain/web", "shop/reviews"]));
    api.apply(namespace("shop"));
    await eventually(() => expect(names(s, "services")).toEqual(["plain/web"]));
  });

  it("follows EndpointSlices: each Service's ready endpoints, merged across its slices, told on change", async () => {
    const s = await startSource();
    let changes = 0;
    s.onEndpointsChange(() => changes++);
    const slice = (name: string, ips: string[]) => ({
      apiVersion: "discovery.k8s.io/v1",
      kind: "EndpointSlice",
      metadata: { name, namespace: "shop", labels: { "kubernetes.io/service-name": "reviews" } },
      addressType: "IPv4",
      endpoints: ips.map((ip) => ({ addresses: [ip], conditions: { ready: true } })),
    });
    api.apply(slice("reviews-a", ["10.1.0.11", "10.1.0.12"]));
    api.apply(slice("reviews-b", ["10.1.0.12", "10.1.0.13"]));
    await eventually(() =>
      expect(
        s
          .clusterEndpoints()
          .get("shop/reviews")
          ?.map((e) => e.ip),
      ).toEqual(["10.1.0.11", "10.1.0.12", "10.1.0.13"]),
    );
    expect(changes).toBeGreaterThanOrEqual(2);
    api.delete("endpointslices", "shop", "reviews-a");
    await eventually(() =>
      expect(
        s
          .clusterEndpoints()
          .get("shop/reviews")
          ?.map((e) => e.ip),
      ).toEqual(["10.1.0.12", "10.1.0.13"]),
    );
  });

  it("checks an agent's report of a pod against the API's Pod, and then has the API's labels", async () => {
    const s = await startSource();
    let changes = 0;
    s.onPodsChange(() => changes++);
    const apiPod = (status?: Record<string, unknown>) => ({
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name: "web-1", namespace: "shop", labels: { app: "web", version: "v2" } },
      spec: { nodeName: "node-a", serviceAccountName: "web", containers: [] },
      ...(status ? { status } : {}),
    });
    const report = {
      name: "web-1",
      namespace: "shop",
      ip: "10.1.0.11",
      labels: { app: "admin" },
      serviceAccount: "web",
    };
    expect(s.verifyPod("node-a", report)).toEqual({ ok: false, reason: "no such pod in the API server" });
    api.apply(apiPod());
    await eventually(() => expect(changes).toBeGreaterThan(0));
    expect(s.verifyPod("node-a", report)).toEqual({ ok: false, reason: "its address is not assigned yet" });
    api.apply(apiPod({ podIP: "10.1.0.11", podIPs: [{ ip: "10.1.0.11" }] }));
    await eventually(() => expect(s.verifyPod("node-a", report).ok).toBe(true));
    // The API's labels replace what the agent said (it claimed app: admin).
    expect(s.verifyPod("node-a", report)).toEqual({
      ok: true,
      pod: { ...report, labels: { app: "web", version: "v2" }, serviceAccount: "web" },
    });
    expect(s.verifyPod("node-b", report)).toEqual({ ok: false, reason: "it runs on node-a" });
    expect(s.verifyPod("node-a", { ...report, ip: "10.1.0.99" })).toEqual({
      ok: false,
      reason: "its address is 10.1.0.11",
    });
    expect(s.verifyPod("node-a", { ...report, serviceAccount: "admin" })).toEqual({
      ok: false,
      reason: "its service account is web",
    });
  });

  it("resumes a cut watch from its last bookmark without listing again", async () => {
    const s = await startSource();
    await eventually(() => expect(api.watchCount()).toBe(7));
    api.apply(namespace("other")); // the services watch sees nothing of it ...
    api.sendBookmarks(); // ... but its bookmark moves it past it
    await new Promise((r) => setTimeout(r, 500)); // (bookmarks are read asynchronously)
    api.compact();
    const listsBefore = api.requests.filter((r) => r.query.watch !== "true").length;
    api.closeWatches();
    api.apply(service("shop", "details", "10.96.0.12"));
    await eventually(() => expect(names(s, "services")).toContain("shop/details"));
    const listsAfter = api.requests.filter((r) => r.query.watch !== "true" && r.path === "/api/v1/services").length;
    // Namespaces, routes and policies had their bookmark too: nobody lists again.
    expect(api.requests.filter((r) => r.query.watch !== "true").length).toBe(listsBefore);
    expect(listsAfter).toBe(1);
  });

  it("lists again after 410 Gone, deleting what went while the API server was down; keeps its objects meanwhile", async () => {
    const s = await startSource();
    await eventually(() => expect(names(s, "services")).toHaveLength(2));
    await api.down();
    api.delete("services", "shop", "ratings");
    api.apply(service("shop", "details", "10.96.0.12"));
    api.compact(); // the history the watches would resume from is gone: they get 410
    await new Promise((r) => setTimeout(r, 700));
    expect(names(s, "services")).toEqual(["shop/ratings", "shop/reviews"]); // the last known objects stay
    await api.up();
    await eventually(() => expect(names(s, "services")).toEqual(["shop/details", "shop/reviews"]), "relist after 410");
  });

  it("mirrors mesh routes and policies, reports the ones the schemas refuse, ignores gateways' routes", async () => {
    api.apply(
      httpRoute("shop", "reviews-split", {
        parentRefs: [{ group: "", kind: "Service", name: "reviews", port: 80 }],
        rules: [
          {
            backendRefs: [
              { name: "reviews", port: 80, weight: 90 },
              { name: "ratings", port: 9090, weight: 10 },
            ],
          },
        ],
      }),
    );
    api.apply(trafficPolicy("shop", "bad", { targetRefs: [{ name: "reviews" }], retries: { attempts: 99 } }));
    api.apply(
      httpRoute("shop", "ingress", {
        parentRefs: [{ group: "gateway.networking.k8s.io", kind: "Gateway", name: "edge" }],
        rules: [{ backendRefs: [{ name: "reviews", port: 80 }] }],
      }),
    );
    const s = await startSource();
    await eventually(() => expect(names(s, "httproutes")).toEqual(["shop/reviews-split"]));
    expect(s.store.list("trafficpolicies")).toEqual([]);
    expect(s.refusal("trafficpolicies", "shop", "bad")).toMatch(/spec.retries.attempts/);
    expect(s.refusal("httproutes", "shop", "ingress")).toBeUndefined(); // a gateway's route: not ours at all
    api.apply(trafficPolicy("shop", "bad", { targetRefs: [{ name: "reviews" }], retries: { attempts: 3 } }));
    await eventually(() => expect(names(s, "trafficpolicies")).toEqual(["shop/bad"]));
    expect(s.refusal("trafficpolicies", "shop", "bad")).toBeUndefined();
  });

  it("answers namespace annotations from its cache or the API server, and refuses writes", async () => {
    const s = await startSource();
    expect(await s.namespaceAnnotations("shop")).toEqual({ "nodemesh.io/intercept": "enabled" });
    await expect(s.namespaceAnnotations("nowhere")).rejects.toBeInstanceOf(KubeApiError);
    await expect(s.store.create({} as Resource)).rejects.toBeInstanceOf(StoreReadOnlyError);
  });
});

describe("KubeClient.listAll", () => {
  it("fails with 410 when the continue token expired mid-list (the informer then lists from scratch)", async () => {
    const client = new KubeClient(kubeConfigFor(api.url));
    const first = await client.get<{ metadata: { continue: string } }>("/api/v1/services?limit=1");
    api.compact();
    const err = await client.get(`/api/v1/services?limit=1&continue=${first.metadata.continue}`).catch((e) => e);
    expect(err).toBeInstanceOf(KubeApiError);
    expect(err.code).toBe(410);
    expect((await client.listAll("/api/v1/services", 1)).items).toHaveLength(3);
  });
});

describe("the REST API over the Kubernetes mirror", () => {
  it("serves reads and refuses writes with 405, pointing at kubectl", async () => {
    const { startRestServer } = await import("../rest/server.ts");
    const { Registry } = await import("prom-client");
    const { ReadOnlyStore } = await import("./kubernetes-source.ts");
    const rest = await startRestServer({
      store: new ReadOnlyStore(new MemoryStore()),
      registry: new Registry(),
      host: "127.0.0.1",
      port: 0,
    });
    try {
      const url = `${rest.url}/apis/nodemesh.io/v1alpha1/namespaces/shop/trafficpolicies`;
      expect((await fetch(url)).status).toBe(200);
      const res = await fetch(url, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          apiVersion: "nodemesh.io/v1alpha1",
          kind: "TrafficPolicy",
          metadata: { name: "p", namespace: "shop" },
          spec: { targetRefs: [{ name: "reviews" }] },
        }),
      });
      expect(res.status).toBe(405);
      expect(((await res.json()) as { message: string }).message).toMatch(/kubectl/);
    } finally {
      await rest.close();
    }
  });
});
