import http from "node:http";
import net from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import type { Endpoint } from "../endpoint.ts";
import type { PodContext } from "../pod.ts";
import { allocateSharedBuffers, SharedState } from "../shared-state.ts";
import { type Http1Pool, UpstreamPools } from "./upstream.ts";

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

/** A connector's socket: connected, as dial() gives it. */
function connected(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1", () => resolve(socket));
    socket.once("error", reject);
  });
}

function endpoint(port: number): Endpoint {
  return { ip: "127.0.0.1", port, meshed: false, pod: "p", node: "", workload: "w", namespace: "default", slot: 1 };
}

/**
 * A request through the pool's dispatcher interface: its body, once the connection is back in the
 * pool (undici reuses a connection one event-loop turn after a response's end, in case the server
 * closes it meanwhile; a client's next request, over the network, comes later than that).
 */
function get(pool: Http1Pool, path = "/"): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    let body = "";
    pool.dispatch(
      { method: "GET", path },
      {
        onRequestStart: () => {},
        onResponseData: (_c, chunk) => {
          body += chunk;
        },
        onResponseEnd: () => setTimeout(() => resolve(body), 0),
        onResponseError: (_c, err) => reject(err),
      },
    );
  });
}

describe("UpstreamPools", () => {
  it("connects through its connector only (the pod's namespace), reuses the connection, and counts it", async () => {
    const { port } = await startServer();
    const shared = new SharedState(allocateSharedBuffers());
    let dials = 0;
    const pools = new UpstreamPools(shared, async () => {
      dials++;
      return connected(port);
    });
    const pool = pools.http1(from, endpoint(port), LIMITS);
    expect(await get(pool)).toBe("ok");
    expect(await get(pool)).toBe("ok");
    expect(dials).toBe(1);
    expect(shared.tryOpenConnection(1, 1)).toBe(false); // the one open connection is counted
  });

  it("refuses a connection beyond maxConnections with NM_CIRCUIT_OPEN", async () => {
    const { port } = await startServer();
    const shared = new SharedState(allocateSharedBuffers());
    const pools = new UpstreamPools(shared, async () => connected(port));
    const pool = pools.http1(from, endpoint(port), { ...LIMITS, maxConnections: 0 });
    await expect(get(pool)).rejects.toMatchObject({ code: "NM_CIRCUIT_OPEN" });
  });

  it("closes the idle connections of endpoints that left the configuration", async () => {
    const { port, closed } = await startServer();
    const pools = new UpstreamPools(new SharedState(allocateSharedBuffers()), async () => connected(port));
    const pool = pools.http1(from, endpoint(port), LIMITS);
    await get(pool);
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
    const pools = new UpstreamPools(new SharedState(allocateSharedBuffers()), async () => connected(port));
    const pool = pools.http1(from, endpoint(port), LIMITS);
    await get(pool); // one idle connection in the pool
    const slow = get(pool, "/slow");
    // The slow request took the idle connection: make a second one idle beside it.
    await get(pool);
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

describe("UpstreamPools with an IPv6 endpoint", () => {
  it("makes its pool (the origin in brackets) and sends through the connector", async () => {
    const { port } = await startServer();
    const pools = new UpstreamPools(new SharedState(allocateSharedBuffers()), async () => connected(port));
    const pool = pools.http1(from, { ...endpoint(port), ip: "fd00::1" }, LIMITS);
    expect(await get(pool)).toBe("ok");
  });
});
