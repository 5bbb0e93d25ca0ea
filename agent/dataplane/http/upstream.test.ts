import http from "node:http";
import net from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import type { Endpoint } from "../endpoint.ts";
import type { PodContext } from "../pod.ts";
import { allocateSharedBuffers, SharedState } from "../shared-state.ts";
import { isPooledSocket, UpstreamPools } from "./upstream.ts";

const LIMITS = { maxConnections: 100, maxPending: 100, connectTimeoutMs: 1000, idleTimeoutMs: 60_000 };
const from = { key: "default/client" } as PodContext;

let server: http.Server | undefined;
afterEach(() => new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve())));

async function startServer(): Promise<{ port: number; closed: () => number }> {
  let closed = 0;
  server = http.createServer((_req, res) => res.end("ok"));
  server.on("connection", (s) => s.on("close", () => closed++));
  await new Promise<void>((resolve) => server!.listen(0, "127.0.0.1", resolve));
  return { port: (server.address() as net.AddressInfo).port, closed: () => closed };
}

function endpoint(port: number): Endpoint {
  return { ip: "127.0.0.1", port, meshed: false, pod: "p", node: "", workload: "w", namespace: "default", slot: 1 };
}

function get(pool: http.Agent, port: number): Promise<{ body: string; pooled: boolean }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ agent: pool, host: "127.0.0.1", port, path: "/" }, (res) => {
      let body = "";
      res.on("data", (c) => {
        body += c;
      });
      res.on("end", () => resolve({ body, pooled: isPooledSocket(req.socket) }));
    });
    req.on("error", reject);
    req.end();
  });
}

describe("UpstreamPools", () => {
  it("connects through its connector only, reuses the connection, and counts it", async () => {
    const { port } = await startServer();
    const shared = new SharedState(allocateSharedBuffers());
    let dials = 0;
    const pools = new UpstreamPools(shared, async () => {
      dials++;
      return net.connect(port, "127.0.0.1");
    });
    const pool = pools.http1(from, endpoint(port), LIMITS);
    expect(await get(pool, port)).toEqual({ body: "ok", pooled: true });
    expect(await get(pool, port)).toEqual({ body: "ok", pooled: true });
    expect(dials).toBe(1);
    expect(shared.tryOpenConnection(1, 1)).toBe(false); // the one open connection is counted
  });

  it("refuses a connection beyond maxConnections with NM_CIRCUIT_OPEN", async () => {
    const { port } = await startServer();
    const shared = new SharedState(allocateSharedBuffers());
    const pools = new UpstreamPools(shared, async () => net.connect(port, "127.0.0.1"));
    const pool = pools.http1(from, endpoint(port), { ...LIMITS, maxConnections: 0 });
    await expect(get(pool, port)).rejects.toMatchObject({ code: "NM_CIRCUIT_OPEN" });
  });

  it("closes the idle connections of endpoints that left the configuration", async () => {
    const { port, closed } = await startServer();
    const pools = new UpstreamPools(new SharedState(allocateSharedBuffers()), async () =>
      net.connect(port, "127.0.0.1"),
    );
    const pool = pools.http1(from, endpoint(port), LIMITS);
    await get(pool, port);
    pools.retain(new Set([`127.0.0.1:${port}`]));
    await new Promise((r) => setTimeout(r, 50));
    expect(closed()).toBe(0);
    pools.retain(new Set());
    await new Promise((r) => setTimeout(r, 50));
    expect(closed()).toBe(1);
    // A new request makes a new pool.
    expect(pools.http1(from, endpoint(port), LIMITS)).not.toBe(pool);
  });

  it("drain() (the agent stopping) closes idle connections now and busy ones after their request", async () => {
    let release: (() => void) | undefined;
    let closed = 0;
    server = http.createServer((req, res) => {
      if (req.url === "/slow") release = () => res.end("slow");
      else res.end("ok");
    });
    server.on("connection", (s) => s.on("close", () => closed++));
    await new Promise<void>((resolve) => server!.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as net.AddressInfo).port;
    const pools = new UpstreamPools(new SharedState(allocateSharedBuffers()), async () =>
      net.connect(port, "127.0.0.1"),
    );
    const pool = pools.http1(from, endpoint(port), LIMITS);
    await get(pool, port); // one idle connection in the pool
    const slow = new Promise<string>((resolve, reject) => {
      const req = http.request({ agent: pool, host: "127.0.0.1", port, path: "/slow" }, (res) => {
        let body = "";
        res.on("data", (c) => (body += c));
        res.on("end", () => resolve(body));
      });
      req.on("error", reject);
      req.end();
    });
    // The slow request took the idle connection: make a second one idle beside it.
    await get(pool, port);
    for (let i = 0; i < 100 && !release; i++) await new Promise((r) => setTimeout(r, 10));
    expect(closed).toBe(0);

    pools.drain();
    await new Promise((r) => setTimeout(r, 50));
    expect(closed).toBe(1); // the idle one; kept, it would hold the destination's drain open
    release!();
    expect(await slow).toBe("slow");
    await new Promise((r) => setTimeout(r, 50));
    expect(closed).toBe(2); // not put back in the pool
  });
});
