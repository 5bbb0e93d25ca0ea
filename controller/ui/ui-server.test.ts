// The dashboard's file handler behind a plain http server on loopback: what it serves, with which
// headers, and what it leaves to the REST server.

import { createServer, request, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { uiHandler } from "./ui-server.ts";

let server: Server;
let port: number;

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** A raw request: the path goes on the wire exactly as given (fetch would normalize `..`). */
function get(path: string, headers: Record<string, string> = {}, method = "GET"): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path, method, headers }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => {
        body += c;
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

beforeAll(async () => {
  const ui = uiHandler();
  server = createServer((req, res) => {
    if (ui(req, res)) return;
    res.writeHead(418, { "content-type": "text/plain" });
    res.end("rest server");
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  port = (server.address() as AddressInfo).port;
});

afterAll(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

describe("uiHandler", () => {
  it("serves the page at / with a content security policy and revalidation", async () => {
    const r = await get("/");
    expect(r.status).toBe(200);
    expect(r.headers["content-type"]).toBe("text/html; charset=utf-8");
    expect(r.headers["cache-control"]).toBe("no-cache");
    expect(r.headers["content-security-policy"]).toContain("script-src 'self'");
    expect(r.headers["x-content-type-options"]).toBe("nosniff");
    expect(r.body).toContain('data-testid="graph"');
    expect(r.body).toContain("/ui/vendor/cytoscape.min.js");
    // The query (a token) does not change what is served.
    const withToken = await get("/?token=abc");
    expect(withToken.status).toBe(200);
    expect(withToken.body).toBe(r.body);
  });

  it("serves its own scripts and styles with their content types", async () => {
    const js = await get("/ui/app.js");
    expect(js.status).toBe(200);
    expect(js.headers["content-type"]).toBe("text/javascript; charset=utf-8");
    expect(js.body).toContain("__nodemesh");
    const css = await get("/ui/style.css");
    expect(css.headers["content-type"]).toBe("text/css; charset=utf-8");
    expect((await get("/ui/favicon.svg")).headers["content-type"]).toBe("image/svg+xml");
  });

  it("serves the vendored browser builds from node_modules, cacheable", async () => {
    for (const [path, marker] of [
      ["/ui/vendor/cytoscape.min.js", "cytoscape"],
      ["/ui/vendor/cytoscape-dagre.min.js", "dagre"],
      ["/ui/vendor/uPlot.iife.min.js", "uPlot"],
    ] as const) {
      const r = await get(path);
      expect(r.status, path).toBe(200);
      expect(r.headers["content-type"]).toBe("text/javascript; charset=utf-8");
      expect(r.headers["cache-control"]).toBe("public, max-age=86400");
      expect(Number(r.headers["content-length"])).toBeGreaterThan(10_000);
      expect(r.body).toContain(marker);
    }
    const css = await get("/ui/vendor/uPlot.min.css");
    expect(css.headers["content-type"]).toBe("text/css; charset=utf-8");
  });

  it("answers a matching If-None-Match with 304 and HEAD without a body", async () => {
    const first = await get("/ui/app.js");
    const etag = first.headers.etag as string;
    expect(etag).toMatch(/^".+"$/);
    const again = await get("/ui/app.js", { "if-none-match": etag });
    expect(again.status).toBe(304);
    expect(again.body).toBe("");
    const head = await get("/ui/app.js", {}, "HEAD");
    expect(head.status).toBe(200);
    expect(head.body).toBe("");
  });

  it("refuses paths that try to leave its files", async () => {
    for (const path of [
      "/ui/../package.json",
      "/ui/%2e%2e/package.json",
      "/ui/vendor/../../package.json",
      "/ui/vendor/..%2f..%2fpackage.json",
      "/ui//etc/passwd",
      "/ui/vendor/cytoscape/package.json",
      "/ui/ui-server.ts",
    ]) {
      const r = await get(path);
      expect(r.status, path).toBe(404);
      expect(r.body, path).not.toContain('"name"');
      expect(r.body, path).not.toContain("root:");
    }
  });

  it("returns false for everything else: the REST server answers", async () => {
    for (const path of ["/apis/nodemesh.io/v1alpha1/agents", "/healthz", "/metrics", "/package.json", "/uix"]) {
      const r = await get(path);
      expect(r.status, path).toBe(418);
      expect(r.body).toBe("rest server");
    }
    const post = await get("/", {}, "POST");
    expect(post.status).toBe(418);
  });
});
