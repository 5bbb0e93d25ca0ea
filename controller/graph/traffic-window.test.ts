import { describe, expect, it } from "vitest";
import { type EdgeSample, LATENCY_BUCKETS_MS } from "../../api/service-graph.ts";
import { edgeSample } from "./testing/edge-sample.ts";
import { RETENTION_MS, splitService, TrafficWindow } from "./traffic-window.ts";

/** A round instant (a multiple of a minute), so series steps fall on known boundaries. */
const T0 = Date.UTC(2025, 0, 1, 12, 0, 0);
const T0S = T0 / 1000;
const s = (seconds: number) => seconds * 1000;

/** Bucket counts: `n` requests in the bucket with upper bound `upperMs`. */
function bucket(upperMs: number, n: number): number[] {
  const i = LATENCY_BUCKETS_MS.indexOf(upperMs as (typeof LATENCY_BUCKETS_MS)[number]);
  if (i < 0) throw new Error(`no bucket ${upperMs}`);
  return LATENCY_BUCKETS_MS.map((_, j) => (j === i ? n : 0));
}

/** frontend.shop → cart.shop served by cart.shop, over HTTP; `requests` all in (5, 10] ms. */
/** edgeSample, in the shop namespace: frontend → cart.shop (workload cart). */
function edge(over: Partial<EdgeSample> = {}): EdgeSample {
  return edgeSample({
    sourceNamespace: "shop",
    destinationService: "cart.shop",
    destinationWorkload: "cart",
    destinationNamespace: "shop",
    ...over,
  });
}

describe("TrafficWindow.graph", () => {
  it("is empty without reports, and says which window and when", () => {
    const g = new TrafficWindow().graph(T0, 300);
    expect(g).toEqual({
      windowSeconds: 300,
      generatedAt: "2025-01-01T12:00:00.000Z",
      nodes: [],
      edges: [],
      services: [],
    });
  });

  it("draws workload → service → workload with rates, error rate, latency and bytes", () => {
    const w = new TrafficWindow();
    w.add("node-1", T0, 60, [
      edge({ requests: 120, errors: 6, bytesSent: 600, bytesReceived: 1200, latencyBuckets: bucket(10, 120) }),
    ]);
    const g = w.graph(T0, 60);
    expect(g.nodes).toEqual([
      { id: "svc:cart.shop", kind: "service", name: "cart", namespace: "shop" },
      { id: "wl:cart.shop", kind: "workload", name: "cart", namespace: "shop" },
      { id: "wl:frontend.shop", kind: "workload", name: "frontend", namespace: "shop" },
    ]);
    const stats = { requestsPerSecond: 2, errorRate: 0.05, p50Ms: 7.5, p99Ms: 9.95, bytesPerSecond: 30 };
    expect(g.edges).toHaveLength(2);
    expect(g.edges[0]).toEqual({
      source: "svc:cart.shop",
      target: "wl:cart.shop",
      protocol: "http",
      mtls: false,
      ...stats,
      p99Ms: expect.closeTo(9.95, 10),
    });
    expect(g.edges[1]).toEqual({
      source: "wl:frontend.shop",
      target: "svc:cart.shop",
      protocol: "http",
      mtls: false,
      ...stats,
      p99Ms: expect.closeTo(9.95, 10),
    });
    expect(g.services).toEqual([
      {
        id: "svc:cart.shop",
        name: "cart",
        namespace: "shop",
        protocol: "http",
        ...stats,
        p99Ms: expect.closeTo(9.95, 10),
      },
    ]);
  });

  it("adds up two agents' reports: callers apart, the service and its workload together", () => {
    const w = new TrafficWindow();
    w.add("node-1", T0, 60, [edge({ requests: 60, errors: 3, latencyBuckets: bucket(1, 60) })]);
    w.add("node-2", T0 - s(1), 59, [
      edge({ sourceWorkload: "checkout", requests: 120, errors: 0, latencyBuckets: bucket(25, 120) }),
    ]);
    const g = w.graph(T0, 60);
    expect(g.nodes.map((n) => n.id)).toEqual(["svc:cart.shop", "wl:cart.shop", "wl:checkout.shop", "wl:frontend.shop"]);
    const byEdge = Object.fromEntries(g.edges.map((e) => [`${e.source}>${e.target}`, e]));
    expect(Object.keys(byEdge)).toEqual([
      "svc:cart.shop>wl:cart.shop",
      "wl:checkout.shop>svc:cart.shop",
      "wl:frontend.shop>svc:cart.shop",
    ]);
    expect(byEdge["wl:frontend.shop>svc:cart.shop"]).toMatchObject({ requestsPerSecond: 1, errorRate: 0.05 });
    expect(byEdge["wl:checkout.shop>svc:cart.shop"]).toMatchObject({ requestsPerSecond: 2, errorRate: 0 });
    // 60 of 180 in (0.5, 1], 120 in (10, 25]: the median is in the second bucket.
    const together = { requestsPerSecond: 3, errorRate: 3 / 180, p50Ms: 10 + (15 * 30) / 120 };
    expect(byEdge["svc:cart.shop>wl:cart.shop"]).toMatchObject(together);
    expect(g.services).toHaveLength(1);
    expect(g.services[0]).toMatchObject(together);
    expect(g.services[0]!.p50Ms).toBeCloseTo(13.75, 10);
  });

  it("marks a hop mutual TLS only when every request of the window was", () => {
    const w = new TrafficWindow();
    w.add("node-1", T0, 60, [edge({ requests: 60, mtlsRequests: 60 })]);
    w.add("node-2", T0, 60, [edge({ sourceWorkload: "checkout", requests: 60, mtlsRequests: 59 })]);
    const byEdge = Object.fromEntries(w.graph(T0, 60).edges.map((e) => [`${e.source}>${e.target}`, e.mtls]));
    expect(byEdge).toEqual({
      "svc:cart.shop>wl:cart.shop": false, // one plaintext request among both callers'
      "wl:checkout.shop>svc:cart.shop": false,
      "wl:frontend.shop>svc:cart.shop": true,
    });
  });

  it("counts only the reports that end within a window shorter than the data", () => {
    const w = new TrafficWindow();
    // 5 minutes of 10-second reports at a steady 1 request per second, the last 2 minutes failing.
    for (let end = T0 - s(290); end <= T0; end += s(10)) {
      w.add("node-1", end, 10, [edge({ requests: 10, errors: end > T0 - s(120) ? 10 : 0 })]);
    }
    const minute = w.graph(T0, 60).services[0]!;
    expect(minute.requestsPerSecond).toBe(1);
    expect(minute.errorRate).toBe(1);
    const five = w.graph(T0, 300).services[0]!;
    expect(five.requestsPerSecond).toBe(1);
    expect(five.errorRate).toBeCloseTo(120 / 300, 10);
    // Ending exactly on the window's start is out; ending exactly now is in.
    const ten = new TrafficWindow();
    ten.add("node-1", T0 - s(10), 10, [edge({ requests: 100 })]);
    ten.add("node-1", T0, 10, [edge({ requests: 30 })]);
    expect(ten.graph(T0, 10).services[0]!.requestsPerSecond).toBe(3);
  });

  it("ignores reports older than the window and reports from after `now`", () => {
    const w = new TrafficWindow();
    w.add("node-1", T0 - s(120), 10, [edge({ sourceWorkload: "old" })]);
    w.add("node-1", T0 + s(10), 10, [edge({ sourceWorkload: "later" })]);
    expect(w.graph(T0, 60)).toMatchObject({ nodes: [], edges: [], services: [] });
    expect(w.graph(T0, 300).nodes.map((n) => n.id)).toContain("wl:old.shop");
    expect(w.graph(T0 + s(10), 60).nodes.map((n) => n.id)).toContain("wl:later.shop");
  });

  it("forgets reports older than 15 minutes", () => {
    expect(RETENTION_MS).toBe(15 * 60_000);
    const w = new TrafficWindow();
    w.add("node-1", T0, 10, [edge({ sourceWorkload: "first" })]);
    w.add("node-1", T0 + RETENTION_MS, 10, [edge({ sourceWorkload: "second" })]);
    // Exactly 15 minutes old is still kept (a window longer than the API allows sees it).
    const wide = (now: number) => w.graph(now, 3600).nodes.map((n) => n.id);
    expect(wide(T0 + RETENTION_MS)).toEqual(["svc:cart.shop", "wl:cart.shop", "wl:first.shop", "wl:second.shop"]);
    w.add("node-2", T0 + RETENTION_MS + 1, 10, [edge({ sourceWorkload: "third" })]);
    expect(wide(T0 + RETENTION_MS + 1)).toEqual(["svc:cart.shop", "wl:cart.shop", "wl:second.shop", "wl:third.shop"]);
  });

  it("takes its retention from the constructor", () => {
    const w = new TrafficWindow({ retentionMs: s(30) });
    w.add("node-1", T0, 10, [edge({ sourceWorkload: "a" })]);
    w.add("node-1", T0 + s(31), 10, [edge({ sourceWorkload: "b" })]);
    expect(w.graph(T0 + s(31), 900).nodes.map((n) => n.id)).not.toContain("wl:a.shop");
  });

  it("divides by the seconds the reports cover when there is less data than the window", () => {
    const w = new TrafficWindow();
    w.add("node-1", T0, 20, [edge({ requests: 40, bytesSent: 100, bytesReceived: 100 })]);
    const g = w.graph(T0, 300);
    expect(g.services[0]).toMatchObject({ requestsPerSecond: 2, bytesPerSecond: 10 });
    expect(g.windowSeconds).toBe(300);

    // Two agents: from the earliest start among them.
    w.add("node-2", T0, 40, [edge({ sourceWorkload: "checkout", requests: 40 })]);
    expect(w.graph(T0, 300).services[0]!.requestsPerSecond).toBe(2); // 80 over 40 s

    // A report that started before the window: the window bounds the seconds.
    const straddling = new TrafficWindow();
    straddling.add("node-1", T0 - s(10), 60, [edge({ requests: 120 })]);
    expect(straddling.graph(T0, 60).services[0]!.requestsPerSecond).toBe(2);
  });

  it("never divides by less than a second", () => {
    const w = new TrafficWindow();
    w.add("node-1", T0, 0, [edge({ requests: 5 })]);
    expect(w.graph(T0, 60).services[0]!.requestsPerSecond).toBe(5);
  });

  it("omits the service → workload edge when the destination workload is unknown", () => {
    const w = new TrafficWindow();
    w.add("node-1", T0, 10, [edge({ destinationWorkload: "unknown", destinationNamespace: "unknown", errors: 10 })]);
    const g = w.graph(T0, 60);
    expect(g.nodes.map((n) => n.id)).toEqual(["svc:cart.shop", "wl:frontend.shop"]);
    expect(g.edges.map((e) => `${e.source}>${e.target}`)).toEqual(["wl:frontend.shop>svc:cart.shop"]);
    expect(g.services[0]).toMatchObject({ id: "svc:cart.shop", requestsPerSecond: 1, errorRate: 1 });
  });

  it("shows passthrough traffic as a service without namespace, TCP without latency", () => {
    const w = new TrafficWindow();
    w.add("node-1", T0, 10, [
      edge({
        destinationService: "passthrough",
        destinationWorkload: "unknown",
        destinationNamespace: "unknown",
        protocol: "tcp",
        requests: 20,
        errors: 2,
        bytesSent: 300,
        bytesReceived: 700,
        latencyBuckets: [],
      }),
    ]);
    const g = w.graph(T0, 60);
    expect(g.nodes).toEqual([
      { id: "svc:passthrough", kind: "service", name: "passthrough", namespace: "" },
      { id: "wl:frontend.shop", kind: "workload", name: "frontend", namespace: "shop" },
    ]);
    expect(g.edges).toEqual([
      {
        source: "wl:frontend.shop",
        target: "svc:passthrough",
        protocol: "tcp",
        mtls: false,
        requestsPerSecond: 2,
        errorRate: 0.1,
        p50Ms: null,
        p99Ms: null,
        bytesPerSecond: 100,
      },
    ]);
    expect(g.services).toEqual([
      {
        id: "svc:passthrough",
        name: "passthrough",
        namespace: "",
        protocol: "tcp",
        requestsPerSecond: 2,
        errorRate: 0.1,
        p50Ms: null,
        p99Ms: null,
        bytesPerSecond: 100,
      },
    ]);
  });

  it("totals each service over all its callers, sorted by id", () => {
    const w = new TrafficWindow();
    w.add("node-1", T0, 10, [
      edge({ destinationService: "web.shop", destinationWorkload: "web", requests: 50, errors: 5 }),
      edge({ requests: 10, errors: 1 }),
      edge({ sourceWorkload: "checkout", requests: 30, errors: 1, latencyBuckets: bucket(100, 30) }),
      edge({ sourceWorkload: "checkout", destinationWorkload: "cart-v2", requests: 10 }),
      edge({
        destinationService: "db.data",
        destinationWorkload: "db",
        destinationNamespace: "data",
        protocol: "tcp",
        requests: 4,
        latencyBuckets: [],
      }),
    ]);
    const g = w.graph(T0, 60);
    expect(g.services.map((x) => [x.id, x.name, x.namespace, x.protocol, x.requestsPerSecond, x.errorRate])).toEqual([
      ["svc:cart.shop", "cart", "shop", "http", 5, 2 / 50],
      ["svc:db.data", "db", "data", "tcp", 0.4, 0],
      ["svc:web.shop", "web", "shop", "http", 5, 0.1],
    ]);
    // cart: 20 in (5, 10], 30 in (50, 100] → p50 is 5/30 of the way through (50, 100].
    expect(g.services[0]!.p50Ms).toBeCloseTo(50 + (50 * 5) / 30, 10);
    const ids = g.edges.map((e) => `${e.source}>${e.target}`);
    expect(ids).toEqual([...ids].sort());
    expect(ids).toContain("svc:cart.shop>wl:cart-v2.shop");
    expect(g.edges.find((e) => e.source === "svc:cart.shop" && e.target === "wl:cart.shop")).toMatchObject({
      requestsPerSecond: 4,
    });
  });
});

describe("TrafficWindow.service", () => {
  /** Six 10-second reports ending at T0-50 … T0, with 10, 20, … 60 requests. */
  function sixReports(): TrafficWindow {
    const w = new TrafficWindow();
    for (let k = 0; k < 6; k++) {
      const requests = (k + 1) * 10;
      w.add("node-1", T0 - s(50 - 10 * k), 10, [
        edge({ requests, errors: k === 5 ? requests : 0, latencyBuckets: bucket(10, requests) }),
        edge({ destinationService: "web.shop", destinationWorkload: "web", requests: 1000 }),
      ]);
    }
    return w;
  }

  it("totals the service over the window, its other traffic apart", () => {
    const d = sixReports().service(T0, 60, "cart.shop", 20);
    expect(d.totals).toEqual({
      requestsPerSecond: 210 / 60,
      errorRate: 60 / 210,
      p50Ms: 7.5,
      p99Ms: expect.closeTo(9.95, 10),
      bytesPerSecond: 0,
    });
  });

  it("steps the series by `stepSeconds`, oldest first, each rate over its step", () => {
    const d = sixReports().service(T0, 60, "cart.shop", 20);
    // Reports cover [-60,-50] … [-10,0]: two of them fill each 20 s step.
    expect(d.series.map((p) => [p.t - T0S, p.requestsPerSecond, p.errorRate])).toEqual([
      [-60, 30 / 20, 0],
      [-40, 70 / 20, 0],
      [-20, 110 / 20, 60 / 110],
    ]);
    expect(d.series[1]!.p50Ms).toBe(7.5);
  });

  it("lists callers by source workload, sorted, rates over the window", () => {
    const w = new TrafficWindow();
    w.add("node-1", T0, 60, [
      edge({ sourceWorkload: "web", requests: 60 }),
      edge({ sourceWorkload: "api", sourceNamespace: "edge", requests: 120, errors: 12 }),
      edge({ sourceWorkload: "web", destinationWorkload: "cart-v2", requests: 60 }),
    ]);
    w.add("node-2", T0, 60, [edge({ sourceWorkload: "web", requests: 60 })]);
    const d = w.service(T0, 60, "cart.shop", 1);
    expect(d.callers.map((c) => [c.source, c.requestsPerSecond, c.errorRate])).toEqual([
      ["api.edge", 2, 0.1],
      ["web.shop", 3, 0],
    ]);
    expect(d.totals.requestsPerSecond).toBe(5);
  });

  it("is empty for a service without traffic in the window", () => {
    const w = new TrafficWindow();
    w.add("node-1", T0 - s(120), 10, [edge()]);
    expect(w.service(T0, 60, "cart.shop", 1)).toEqual({
      totals: { requestsPerSecond: 0, errorRate: 0, p50Ms: null, p99Ms: null, bytesPerSecond: 0 },
      series: [],
      callers: [],
    });
    expect(w.service(T0, 300, "other.shop", 5).callers).toEqual([]);
  });
});

describe("TrafficWindow at scale", () => {
  // Idle agents still report (with no edges); 1000 nodes reporting every 5 s fill a 15-minute
  // window with 180 000 reports. `within` spreads them all into Math.min(...), which overflows
  // the stack past roughly 120 000 arguments: the graph request then fails with a RangeError.
  it("answers over the reports of a large mesh", () => {
    const w = new TrafficWindow();
    for (let end = T0 - s(895); end <= T0; end += s(5)) {
      for (let n = 0; n < 1000; n++) w.add(`node-${n}`, end, 5, []);
    }
    w.add("node-0", T0, 5, [edge({ requests: 900 })]);
    expect(w.graph(T0, 900).services[0]!.requestsPerSecond).toBe(1);
  });
});

describe("splitService", () => {
  it("splits at the last dot; passthrough has no namespace", () => {
    expect(splitService("cart.shop")).toEqual(["cart", "shop"]);
    expect(splitService("passthrough")).toEqual(["passthrough", ""]);
  });
});

describe("TrafficWindow limits", () => {
  it("forgets the least recently reported edges past maxEdges, and counts them", () => {
    let evicted = 0;
    const w = new TrafficWindow({ maxEdges: 3, onEvicted: (n) => (evicted += n) });
    for (const name of ["a", "b", "c"]) w.add("node-1", T0, 10, [edge({ sourceWorkload: name })]);
    w.add("node-1", T0 + s(1), 10, [edge({ sourceWorkload: "a" })]); // a is now the most recent
    w.add("node-1", T0 + s(2), 10, [edge({ sourceWorkload: "d" }), edge({ sourceWorkload: "e" })]);
    expect(evicted).toBe(2);
    expect(w.size()).toEqual({ edges: 3, samples: 4 });
    const sources = w
      .graph(T0 + s(2), 300)
      .nodes.filter((n) => n.id.startsWith("wl:") && n.name !== "cart")
      .map((n) => n.name);
    expect(sources).toEqual(["a", "d", "e"]);
  });

  it("keeps at most maxSamples samples, forgetting whole edges, least recently reported first", () => {
    let evicted = 0;
    const w = new TrafficWindow({ maxSamples: 10, onEvicted: (n) => (evicted += n) });
    for (let i = 0; i < 8; i++) w.add("node-1", T0 + s(i), 1, [edge({ sourceWorkload: "old" })]);
    for (let i = 0; i < 3; i++) w.add("node-1", T0 + s(10 + i), 1, [edge({ sourceWorkload: "new" })]);
    expect(evicted).toBe(1);
    expect(w.size()).toEqual({ edges: 1, samples: 3 });
  });

  it("merges an edge's oldest samples past 1000, keeping its totals", () => {
    const w = new TrafficWindow();
    for (let i = 0; i < 1500; i++) w.add("node-1", T0 - s(1500 - i) / 2, 0.5, [edge({ requests: 2 })]);
    expect(w.size()).toEqual({ edges: 1, samples: 1000 });
    // 1500 reports of 2 requests over the 750.5 s they cover (the first starts 0.5 s before it ends).
    expect(w.graph(T0, 900).services[0]!.requestsPerSecond).toBeCloseTo(3000 / 750.5, 9);
  });

  it("frees what retention expired", () => {
    const w = new TrafficWindow({ retentionMs: s(30) });
    w.add("node-1", T0, 10, [edge({ sourceWorkload: "a" })]);
    w.add("node-1", T0 + s(40), 10, [edge({ sourceWorkload: "b" })]);
    expect(w.size()).toEqual({ edges: 1, samples: 1 });
  });
});
