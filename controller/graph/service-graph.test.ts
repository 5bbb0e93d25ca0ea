import { beforeEach, describe, expect, it } from "vitest";
import type { PropagationStatus, Resource } from "../../api/resources.ts";
import type { Service } from "../../api/services.ts";
import { grpcRoute, httpRoute, trafficPolicy } from "../rest/test-server.fixture.ts";
import { MemoryStore } from "../store/memory-store.ts";
import {
  DEFAULT_WINDOW_SECONDS,
  GraphQueries,
  type GraphSources,
  MAX_WINDOW_SECONDS,
  MIN_WINDOW_SECONDS,
} from "./service-graph.ts";
import { edgeSample } from "./testing/edge-sample.ts";
import { TrafficWindow } from "./traffic-window.ts";

const T0 = Date.UTC(2025, 0, 1, 12, 0, 0);
const T0S = T0 / 1000;
const s = (seconds: number) => seconds * 1000;

const edge = edgeSample;

const WEB: Service = {
  name: "web",
  namespace: "default",
  vip: "10.96.0.10",
  ports: [
    { name: "http", port: 80, targetPort: 8080, protocol: "http" },
    { port: 9000, protocol: "tcp" },
  ],
  endpoints: [
    { ip: "10.0.1.5", node: "node-1", pod: "web-abc", workload: "web", meshed: true },
    { ip: "10.0.2.7" }, // neither pod nor node known
  ],
};

function inNamespace(obj: Record<string, unknown>, namespace: string): Record<string, unknown> {
  return { ...obj, metadata: { ...(obj.metadata as object), namespace } };
}

let traffic: TrafficWindow;
let store: MemoryStore;
let statuses: Map<string, PropagationStatus>;
let asked: { plural: string; namespace: string; name: string }[];
let now: number;
let queries: GraphQueries;

beforeEach(() => {
  traffic = new TrafficWindow();
  store = new MemoryStore();
  statuses = new Map();
  asked = [];
  now = T0;
  const sources: GraphSources = {
    traffic,
    store,
    service: (namespace, name) => (namespace === "default" && name === "web" ? WEB : undefined),
    propagation: (key) => {
      asked.push(key);
      return statuses.get(`${key.plural}/${key.namespace}/${key.name}`);
    },
    now: () => now,
  };
  queries = new GraphQueries(sources);
});

async function create(obj: Record<string, unknown>): Promise<void> {
  await store.create(obj as unknown as Resource);
}

describe("GraphQueries", () => {
  it("has the API's window bounds", () => {
    expect([MIN_WINDOW_SECONDS, DEFAULT_WINDOW_SECONDS, MAX_WINDOW_SECONDS]).toEqual([10, 300, 900]);
  });

  it("answers the graph from the traffic window at its clock", () => {
    traffic.add("node-1", T0 - s(30), 30, [edge({ requests: 60 })]);
    const g = queries.graph(60);
    expect(g).toEqual(traffic.graph(T0, 60));
    expect(g.generatedAt).toBe("2025-01-01T12:00:00.000Z");
    expect(g.services[0]).toMatchObject({ id: "svc:web.default", requestsPerSecond: 1 });
    now = T0 + s(120);
    expect(queries.graph(60).services).toEqual([]);
  });

  it("uses the wall clock without one", () => {
    const q = new GraphQueries({ traffic, store, service: () => undefined, propagation: () => undefined });
    const before = Date.now();
    const at = Date.parse(q.graph(60).generatedAt);
    expect(at).toBeGreaterThanOrEqual(before);
    expect(at).toBeLessThanOrEqual(Date.now());
  });

  it("knows no detail of a Service the agents do not have", () => {
    traffic.add("node-1", T0, 10, [edge({ destinationService: "api.default" })]);
    expect(queries.service("default", "api", 300)).toBeUndefined();
    expect(queries.service("other", "web", 300)).toBeUndefined();
  });

  it("describes a Service: ports, endpoints, totals, series and callers", () => {
    for (let k = 0; k < 6; k++) {
      traffic.add("node-1", T0 - s(50 - 10 * k), 10, [
        edge({ requests: 20 }),
        edge({ sourceWorkload: "admin", sourceNamespace: "ops", requests: 10, errors: 10 }),
        edge({ destinationService: "other.default", requests: 500 }),
      ]);
    }
    const d = queries.service("default", "web", 60)!;
    expect(d.service).toEqual({
      name: "web",
      namespace: "default",
      vip: "10.96.0.10",
      ports: [
        { name: "http", port: 80, protocol: "http" },
        { name: undefined, port: 9000, protocol: "tcp" },
      ],
    });
    expect(d.endpoints).toEqual([
      { pod: "web-abc", ip: "10.0.1.5", node: "node-1" },
      { pod: "", ip: "10.0.2.7", node: "" },
    ]);
    expect(d.totals).toMatchObject({ requestsPerSecond: 3, errorRate: 1 / 3, p50Ms: 7.5 });
    expect(d.callers.map((c) => [c.source, c.requestsPerSecond, c.errorRate])).toEqual([
      ["admin.ops", 1, 1],
      ["frontend.default", 2, 0],
    ]);
    // A 60-second window: 1-second steps; each report's counts are spread over the seconds it covers.
    expect(d.series.map((p) => p.t - T0S)).toEqual(Array.from({ length: 60 }, (_, i) => i - 60));
    expect(new Set(d.series.map((p) => p.requestsPerSecond))).toEqual(new Set([3]));
    expect(d.policies).toEqual([]);
  });

  it("steps the series at about a sixtieth of the window", () => {
    for (let k = 0; k < 90; k++) traffic.add("node-1", T0 - s(890 - 10 * k), 10, [edge()]);
    const at = (window: number) => queries.service("default", "web", window)!.series.map((p) => p.t);
    const steps = (ts: number[]) => new Set(ts.slice(1).map((t, i) => t - ts[i]!));
    // 900 s → 15 s steps, 600 s → 10 s, 300 s → 5 s: about 60 points, none missing.
    expect([...steps(at(900))]).toEqual([15]);
    expect(at(900).every((t) => t % 15 === 0)).toBe(true);
    expect(at(600).every((t) => t % 10 === 0)).toBe(true);
    expect(at(300)).toHaveLength(60);
    expect(at(300).every((t) => t % 5 === 0)).toBe(true);
    expect(at(10)).toHaveLength(10); // never finer than a second
  });

  it("lists the routes and policies that name the Service, with their propagation", async () => {
    // Named as parent, as backend, across namespaces; and some that do not name default/web.
    await create(httpRoute("web-split")); // parentRefs web
    await create(
      httpRoute("to-web", {
        parentRefs: [{ name: "gateway" }],
        rules: [{ backendRefs: [{ name: "web", weight: 1 }] }],
      }),
    );
    await create(
      httpRoute("unrelated", { parentRefs: [{ name: "api" }], rules: [{ backendRefs: [{ name: "api" }] }] }),
    );
    await create(inNamespace(httpRoute("shop-web"), "shop")); // shop/web, not default/web
    await create(inNamespace(httpRoute("cross", { parentRefs: [{ name: "web", namespace: "default" }] }), "shop"));
    await create(grpcRoute("greeter")); // greeter → greeter-v2
    await create(
      grpcRoute("to-web", { parentRefs: [{ name: "greeter" }], rules: [{ backendRefs: [{ name: "web" }] }] }),
    );
    await create(trafficPolicy("web")); // targetRefs web
    await create(trafficPolicy("api", { targetRefs: [{ name: "api" }] }));
    await create(inNamespace(trafficPolicy("shop-web"), "shop")); // targets shop/web
    statuses.set("httproutes/default/web-split", { agentsApplied: 2, agentsTotal: 3 });
    statuses.set("httproutes/shop/cross", { agentsApplied: 3, agentsTotal: 3 });
    statuses.set("trafficpolicies/default/web", { observedGeneration: 1, agentsApplied: 1, agentsTotal: 3 });

    const d = queries.service("default", "web", 300)!;
    expect(d.policies).toEqual([
      { kind: "HTTPRoute", namespace: "default", name: "to-web", agentsApplied: 0, agentsTotal: 0 },
      { kind: "HTTPRoute", namespace: "default", name: "web-split", agentsApplied: 2, agentsTotal: 3 },
      { kind: "HTTPRoute", namespace: "shop", name: "cross", agentsApplied: 3, agentsTotal: 3 },
      { kind: "GRPCRoute", namespace: "default", name: "to-web", agentsApplied: 0, agentsTotal: 0 },
      { kind: "TrafficPolicy", namespace: "default", name: "web", agentsApplied: 1, agentsTotal: 3 },
    ]);
    expect(asked).toContainEqual({ plural: "grpcroutes", namespace: "default", name: "to-web" });
    expect(asked).toHaveLength(5);
  });

  // The agents report every 5 s by default (`--report-interval-s`), and each report's counts are
  // put whole in the step its end falls in, then divided by the step. A 60-second window asks for
  // 1-second steps, so a steady 2 requests per second shows as 10 in every point (2.5 times too
  // much at 120 s with 2-second steps, 1.67 at 180 s...); only the totals and callers are right.
  it("shows a steady rate in every series point whatever the window", () => {
    for (let end = T0 - s(55); end <= T0; end += s(5)) traffic.add("node-1", end, 5, [edge({ requests: 10 })]);
    for (const window of [60, 120, 300]) {
      const d = queries.service("default", "web", window)!;
      expect(d.totals.requestsPerSecond).toBe(2);
      expect(d.series.length).toBeGreaterThan(0);
      for (const p of d.series) expect(p.requestsPerSecond).toBeCloseTo(2, 6);
    }
  });
});
