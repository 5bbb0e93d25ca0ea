// The service-graph endpoints of the REST server, over a real GraphQueries and TrafficWindow.

import type { IncomingMessage, ServerResponse } from "node:http";
import { Registry } from "prom-client";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { Service } from "../../api/services.ts";
import { TokenAuth } from "../auth.ts";
import { GraphQueries } from "../graph/service-graph.ts";
import { edgeSample } from "../graph/testing/edge-sample.ts";
import { TrafficWindow } from "../graph/traffic-window.ts";
import { MemoryStore } from "../store/memory-store.ts";
import { type RestServer, type RestServerOptions, startRestServer } from "./server.ts";

const GRAPH = "/apis/nodemesh.io/v1alpha1/servicegraph";
const T0 = Date.UTC(2025, 0, 1, 12, 0, 0);

const WEB: Service = {
  name: "web",
  namespace: "default",
  vip: "10.96.0.10",
  ports: [{ name: "http", port: 80, protocol: "http" }],
  endpoints: [{ ip: "10.0.1.5", node: "node-1", pod: "web-abc" }],
};

const edge = edgeSample;

interface Reply {
  status: number;
  headers: Headers;
  // biome-ignore lint/suspicious/noExplicitAny: tests read arbitrary response shapes
  body: any;
}

let rest: RestServer | undefined;
let traffic: TrafficWindow;
let store: MemoryStore;
let registry: Registry;

async function start(options: Partial<RestServerOptions> = {}): Promise<void> {
  await rest?.close();
  registry = new Registry();
  rest = await startRestServer({
    store,
    registry,
    host: "127.0.0.1",
    port: 0,
    serviceGraph: new GraphQueries({
      traffic,
      store,
      service: (namespace, name) => (namespace === "default" && name === "web" ? WEB : undefined),
      propagation: () => ({ agentsApplied: 1, agentsTotal: 2 }),
      now: () => T0,
    }),
    ...options,
  });
}

async function call(method: string, path: string, token?: string): Promise<Reply> {
  const res = await fetch(`${rest!.url}${path}`, {
    method,
    headers: token ? { authorization: `Bearer ${token}` } : {},
  });
  const text = await res.text();
  const json = res.headers.get("content-type")?.startsWith("application/json");
  return { status: res.status, headers: res.headers, body: json ? JSON.parse(text) : text };
}

beforeEach(async () => {
  traffic = new TrafficWindow();
  store = new MemoryStore();
  traffic.add("node-1", T0, 30, [edge({ requests: 60, errors: 3 })]);
  traffic.add("node-1", T0 - 200_000, 10, [edge({ sourceWorkload: "old", requests: 100 })]);
  await start();
});

afterEach(async () => {
  await rest?.close();
  rest = undefined;
});

describe("GET servicegraph", () => {
  it("serves the graph over the default 300-second window", async () => {
    const r = await call("GET", GRAPH);
    expect(r.status).toBe(200);
    expect(r.headers.get("content-type")).toMatch(/^application\/json/);
    expect(r.body.windowSeconds).toBe(300);
    expect(r.body.generatedAt).toBe("2025-01-01T12:00:00.000Z");
    expect(r.body.nodes.map((n: { id: string }) => n.id)).toEqual([
      "svc:web.default",
      "wl:frontend.default",
      "wl:old.default",
      "wl:web.default",
    ]);
    // 160 requests from T0-210 s: the covered seconds, not the whole window.
    expect(r.body.services).toEqual([
      expect.objectContaining({
        id: "svc:web.default",
        name: "web",
        namespace: "default",
        protocol: "http",
        requestsPerSecond: 160 / 210,
      }),
    ]);
  });

  it("takes the window from ?window=", async () => {
    const r = await call("GET", `${GRAPH}?window=60`);
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ windowSeconds: 60 });
    expect(r.body.edges).toEqual([
      {
        source: "svc:web.default",
        target: "wl:web.default",
        protocol: "http",
        mtls: false,
        requestsPerSecond: 2,
        errorRate: 0.05,
        p50Ms: 7.5,
        p99Ms: expect.closeTo(9.95, 10),
        bytesPerSecond: 0,
      },
      expect.objectContaining({ source: "wl:frontend.default", target: "svc:web.default", requestsPerSecond: 2 }),
    ]);
    expect(r.body.services).toHaveLength(1);
    // A trailing slash is the same resource.
    expect((await call("GET", `${GRAPH}/?window=60`)).body).toEqual(r.body);
  });

  it("accepts windows from 10 to 900 seconds", async () => {
    for (const w of [10, 900]) {
      const r = await call("GET", `${GRAPH}?window=${w}`);
      expect(r.status).toBe(200);
      expect(r.body.windowSeconds).toBe(w);
    }
  });

  it.each(["9", "901", "0", "-60", "10.5", "abc", "", "1e9", "NaN"])("refuses ?window=%s with 400", async (w) => {
    const r = await call("GET", `${GRAPH}?window=${w}`);
    expect(r.status).toBe(400);
    expect(r.body).toMatchObject({
      kind: "Status",
      status: "Failure",
      reason: "BadRequest",
      code: 400,
      message: "window must be an integer number of seconds from 10 to 900",
    });
  });

  it("is read-only: other methods get 405 with Allow: GET", async () => {
    for (const method of ["POST", "PUT", "PATCH", "DELETE"]) {
      for (const path of [GRAPH, `${GRAPH}/services/default/web`]) {
        const r = await call(method, path);
        expect(r.status, `${method} ${path}`).toBe(405);
        expect(r.headers.get("allow")).toBe("GET");
        expect(r.body).toMatchObject({ kind: "Status", reason: "MethodNotAllowed", code: 405 });
      }
    }
  });

  it("is 404 when the server has no service graph", async () => {
    await start({ serviceGraph: undefined });
    const r = await call("GET", GRAPH);
    expect(r.status).toBe(404);
    expect(r.body).toMatchObject({
      kind: "Status",
      reason: "NotFound",
      message: "the service graph is not served here",
    });
    expect((await call("GET", `${GRAPH}/services/default/web`)).status).toBe(404);
  });

  it("counts its requests in the REST metrics as the servicegraph resource", async () => {
    await call("GET", `${GRAPH}?window=60`);
    await call("GET", `${GRAPH}?window=5`);
    const text = await registry.metrics();
    expect(text).toMatch(
      /nodemesh_controller_rest_requests_total\{[^}]*resource="servicegraph"[^}]*code="200"[^}]*\} 1/,
    );
    expect(text).toMatch(
      /nodemesh_controller_rest_requests_total\{[^}]*resource="servicegraph"[^}]*code="400"[^}]*\} 1/,
    );
  });
});

describe("GET servicegraph/services/{namespace}/{name}", () => {
  it("serves a Service's detail", async () => {
    const r = await call("GET", `${GRAPH}/services/default/web?window=60`);
    expect(r.status).toBe(200);
    expect(Object.keys(r.body).sort()).toEqual(["callers", "endpoints", "policies", "series", "service", "totals"]);
    expect(r.body.service).toEqual({
      name: "web",
      namespace: "default",
      vip: "10.96.0.10",
      ports: [{ name: "http", port: 80, protocol: "http" }],
    });
    expect(r.body.totals).toMatchObject({ requestsPerSecond: 2, errorRate: 0.05, p50Ms: 7.5 });
    expect(r.body.callers).toEqual([expect.objectContaining({ source: "frontend.default", requestsPerSecond: 2 })]);
    // One 30 s report spread over 1 s steps: 30 points at the same rate.
    expect(r.body.series).toHaveLength(30);
    expect(r.body.series.at(-1)).toMatchObject({ t: T0 / 1000 - 1, requestsPerSecond: 2, errorRate: 0.05 });
    expect(r.body.endpoints).toEqual([{ pod: "web-abc", ip: "10.0.1.5", node: "node-1" }]);
    expect(r.body.policies).toEqual([]);
  });

  it("lists the policies naming the Service with their propagation", async () => {
    await store.create({
      apiVersion: "nodemesh.io/v1alpha1",
      kind: "TrafficPolicy",
      metadata: { name: "web", namespace: "default" },
      spec: { targetRefs: [{ name: "web" }], retries: { attempts: 2 } },
    } as never);
    const r = await call("GET", `${GRAPH}/services/default/web`);
    expect(r.body.policies).toEqual([
      { kind: "TrafficPolicy", namespace: "default", name: "web", agentsApplied: 1, agentsTotal: 2 },
    ]);
  });

  it("decodes percent-encoded names", async () => {
    const r = await call("GET", `${GRAPH}/services/def%61ult/w%65b`);
    expect(r.status).toBe(200);
    expect(r.body.service.name).toBe("web");
  });

  it("is 404 for a Service the agents do not have", async () => {
    const r = await call("GET", `${GRAPH}/services/default/api?window=60`);
    expect(r.status).toBe(404);
    expect(r.body).toMatchObject({ kind: "Status", reason: "NotFound", message: "service default/api not found" });
    expect((await call("GET", `${GRAPH}/services/other/web`)).status).toBe(404);
  });

  it("checks the window before looking the Service up", async () => {
    expect((await call("GET", `${GRAPH}/services/default/web?window=1000`)).status).toBe(400);
    expect((await call("GET", `${GRAPH}/services/default/api?window=abc`)).status).toBe(400);
  });

  it("does not match deeper or partial paths", async () => {
    expect((await call("GET", `${GRAPH}/services/default`)).status).toBe(404);
    expect((await call("GET", `${GRAPH}/services/default/web/extra`)).status).toBe(404);
    expect((await call("GET", `${GRAPH}x`)).status).toBe(404);
  });

  // routes.ts treats malformed percent-encoding as an unknown path (404); here decodeURIComponent
  // throws a URIError, which becomes a 500 InternalError (and is logged as a server failure).
  it("answers malformed percent-encoding with a 4xx", async () => {
    const r = await call("GET", `${GRAPH}/services/default/%E0%A4%A`);
    expect(r.status).toBeGreaterThanOrEqual(400);
    expect(r.status).toBeLessThan(500);
  });
});

describe("servicegraph with auth on", () => {
  beforeEach(async () => {
    await start({ auth: TokenAuth.parse("reader-token read alice\nwriter-token write bob\n") });
  });

  it("needs a token: 401 without one or with an unknown one", async () => {
    for (const path of [GRAPH, `${GRAPH}/services/default/web`]) {
      const none = await call("GET", path);
      expect(none.status).toBe(401);
      expect(none.headers.get("www-authenticate")).toBe('Bearer realm="nodemesh"');
      expect(none.body).toMatchObject({
        kind: "Status",
        reason: "Unauthorized",
        message: "a bearer token is required",
      });
      const bad = await call("GET", path, "nope");
      expect(bad.status).toBe(401);
      expect(bad.body.message).toBe("the bearer token is not valid");
    }
  });

  it("serves a reader and a writer", async () => {
    expect((await call("GET", `${GRAPH}?window=60`, "reader-token")).status).toBe(200);
    expect((await call("GET", `${GRAPH}?window=60`, "writer-token")).status).toBe(200);
    expect((await call("GET", `${GRAPH}/services/default/web`, "reader-token")).status).toBe(200);
  });

  it("authenticates before validating: a bad window or unknown service without a token is 401", async () => {
    expect((await call("GET", `${GRAPH}?window=1`)).status).toBe(401);
    expect((await call("GET", `${GRAPH}/services/default/nope`)).status).toBe(401);
    expect((await call("GET", `${GRAPH}?window=1`, "reader-token")).status).toBe(400);
    expect((await call("POST", GRAPH, "reader-token")).status).toBe(405);
  });
});

describe("the ui handler", () => {
  let seen: string[];
  const ui = (req: IncomingMessage, res: ServerResponse): boolean => {
    seen.push(`${req.method} ${req.url}`);
    if (req.url !== "/" && !req.url?.startsWith("/ui/")) return false;
    res.writeHead(200, { "content-type": "text/html" });
    res.end("<html>nodemesh</html>");
    return true;
  };

  beforeEach(() => {
    seen = [];
  });

  it("serves the dashboard's pages without a token, and only GET outside /apis/", async () => {
    await start({ ui, auth: TokenAuth.parse("reader-token read alice\n") });
    const page = await call("GET", "/");
    expect(page).toMatchObject({ status: 200, body: "<html>nodemesh</html>" });
    expect((await call("GET", "/ui/app.js")).status).toBe(200);
    // Not the dashboard's: normal routing, so auth first.
    expect((await call("GET", "/elsewhere")).status).toBe(401);
    expect((await call("GET", GRAPH)).status).toBe(401);
    expect((await call("POST", "/")).status).toBe(401);
    expect(seen).toEqual(["GET /", "GET /ui/app.js", "GET /elsewhere"]);
    expect((await call("GET", "/elsewhere", "reader-token")).status).toBe(404);
    expect((await call("GET", "/healthz")).status).toBe(200);
  });

  it("leaves health and the API alone when auth is off", async () => {
    await start({ ui });
    expect((await call("GET", "/healthz")).body).toEqual({ status: "ok" });
    expect((await call("GET", `${GRAPH}?window=60`)).status).toBe(200);
    expect(seen).toEqual(["GET /healthz"]);
  });
});
