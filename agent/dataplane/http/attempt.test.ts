// Both attempt implementations against real loopback servers: one outcome each, classed for the
// retry logic, with the pool's pending slot released whatever happens.

import http from "node:http";
import http2 from "node:http2";
import type net from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { dial, plainSockets } from "../dial.ts";
import type { Endpoint } from "../endpoint.ts";
import { allocateSharedBuffers, SharedState } from "../shared-state.ts";
import { loopbackPod } from "../testing/loopback.ts";
import type { Attempt, UpstreamRequest } from "./attempt.ts";
import { attemptHttp1 } from "./attempt-http1.ts";
import { attemptHttp2 } from "./attempt-http2.ts";
import { FixedBody } from "./body.ts";
import { UpstreamPools } from "./upstream.ts";

const FROM = loopbackPod("127.0.0.1", "client-0", "client");
const LIMITS = { maxConnections: 100, maxPending: 100, connectTimeoutMs: 1000, idleTimeoutMs: 10_000 };
const closers: (() => void)[] = [];
afterEach(() => {
  for (const c of closers.splice(0)) c();
});

async function serve(server: net.Server): Promise<Endpoint> {
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  closers.push(() => server.close());
  const { port } = server.address() as net.AddressInfo;
  return { ip: "127.0.0.1", port, meshed: false, pod: "p", node: "n", workload: "w", namespace: "d", slot: 3 };
}

function setup() {
  const shared = new SharedState(allocateSharedBuffers());
  const pools = new UpstreamPools(shared, (from, ep, _protocol, timeoutMs) =>
    dial(plainSockets, { netns: from.netns, ip: ep.ip, port: ep.port, timeoutMs }),
  );
  return { shared, pools };
}

const request = (body = "hello"): UpstreamRequest => ({
  method: "POST",
  target: "/x",
  authority: "web",
  grpc: false,
  headers: { host: "web", "content-length": String(body.length) },
  body: new FixedBody([Buffer.from(body)]),
});

type Start = (pools: UpstreamPools, ep: Endpoint, timeoutMs: number) => Attempt;
const h1: Start = (pools, ep, timeoutMs) => {
  const pool = pools.http1(FROM, ep, LIMITS);
  return attemptHttp1(pool, pools.enterPending(ep, pool), request(), timeoutMs);
};
const h2: Start = (pools, ep, timeoutMs) => {
  const pool = pools.http2(FROM, ep, LIMITS);
  return attemptHttp2(pool, pools.enterPending(ep, pool), request(), timeoutMs);
};

function h1Server(handler: http.RequestListener) {
  const s = http.createServer(handler);
  closers.push(() => s.closeAllConnections());
  return s;
}
function h2Server(handler: (stream: http2.ServerHttp2Stream) => void) {
  const s = http2.createServer();
  s.on("stream", (stream) => {
    stream.on("error", () => {});
    handler(stream);
  });
  s.on("session", (session) => closers.push(() => session.destroy()));
  return s;
}

const SERVERS: [string, Start, (answer: "echo" | "slow" | "reset") => net.Server][] = [
  [
    "HTTP/1.1",
    h1,
    (answer) =>
      h1Server((req, res) => {
        if (answer === "reset") return req.socket.destroy();
        if (answer === "slow") return void setTimeout(() => res.end(), 2000).unref();
        req.pipe(res);
      }),
  ],
  [
    "HTTP/2",
    h2,
    (answer) =>
      h2Server((stream) => {
        if (answer === "reset") return stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
        if (answer === "slow") return void setTimeout(() => stream.destroyed || stream.end(), 2000).unref();
        stream.respond({ ":status": 200 });
        stream.pipe(stream);
      }),
  ],
];

describe.each(SERVERS)("attempt over %s", (_, start, server) => {
  it("resolves with the upstream's answer, body streaming, and frees its pending slot", async () => {
    const { shared, pools } = setup();
    const ep = await serve(server("echo"));
    const outcome = await start(pools, ep, Number.POSITIVE_INFINITY).outcome;
    expect(outcome.kind).toBe("response");
    if (outcome.kind !== "response") return;
    expect(outcome.status).toBe(200);
    let body = "";
    for await (const chunk of outcome.body) body += chunk;
    expect(body).toBe("hello");
    expect(shared.tryStartPending(ep.slot, 1)).toBe(true); // nothing left pending
  });

  it("fails with class timeout after its per-try time", async () => {
    const { pools } = setup();
    const ep = await serve(server("slow"));
    const t0 = performance.now();
    const outcome = await start(pools, ep, 100).outcome;
    expect(outcome).toMatchObject({ kind: "failure", class: "timeout" });
    expect(performance.now() - t0).toBeLessThan(1500);
  });

  it("fails with class reset when the upstream resets", async () => {
    const { pools } = setup();
    const ep = await serve(server("reset"));
    expect(await start(pools, ep, 5000).outcome).toMatchObject({ kind: "failure", class: "reset" });
  });

  it("fails with class connect-failure when nothing listens", async () => {
    const { pools } = setup();
    const ep = await serve(server("echo"));
    for (const c of closers.splice(0)) c();
    await new Promise((r) => setTimeout(r, 20));
    const outcome = await start(pools, ep, 5000).outcome;
    expect(outcome).toMatchObject({ kind: "failure", class: "connect-failure" });
  });

  it("ends at once when aborted", async () => {
    const { pools } = setup();
    const ep = await serve(server("slow"));
    const attempt = start(pools, ep, Number.POSITIVE_INFINITY);
    setTimeout(() => attempt.abort(), 50);
    expect(await attempt.outcome).toMatchObject({ kind: "failure" });
  });
});

describe("attempt over HTTP/1.1: the head the upstream reads", () => {
  /** The request line and headers as the app's server parsed them. */
  async function seen(up: Partial<UpstreamRequest>): Promise<{ url: string; headers: http.IncomingHttpHeaders }> {
    let got: { url: string; headers: http.IncomingHttpHeaders } | undefined;
    const ep = await serve(
      h1Server((req, res) => {
        got = { url: req.url ?? "", headers: req.headers };
        req.resume();
        res.end();
      }),
    );
    const { pools } = setup();
    const pool = pools.http1(FROM, ep, LIMITS);
    const outcome = await attemptHttp1(pool, pools.enterPending(ep, pool), { ...request(), ...up }, 5000).outcome;
    expect(outcome).toMatchObject({ kind: "response", status: 200 });
    return got!;
  }

  it("names the host of a request that came over HTTP/2 (its :authority) in Host", async () => {
    const r = await seen({ headers: { "content-length": "5" }, authority: "web.default:8080" });
    expect(r.headers.host).toBe("web.default:8080");
  });

  it("keeps the client's Host, and does not pass Expect on (the agent's server answered it)", async () => {
    const r = await seen({ headers: { host: "web", expect: "100-continue", "content-length": "5" } });
    expect(r.headers.host).toBe("web");
    expect(r.headers.expect).toBeUndefined();
  });

  it("sends an absolute-form target with its scheme in lower case", async () => {
    const r = await seen({ target: "HTTP://web/Admin?q=1" });
    expect(r.url).toBe("http://web/Admin?q=1");
  });

  it("fails at once when aborted while it waits for its connection", async () => {
    const shared = new SharedState(allocateSharedBuffers());
    // A connection that never comes (as a tunnel whose peer has not answered yet).
    const pools = new UpstreamPools(shared, () => new Promise(() => {}));
    const ep: Endpoint = {
      ip: "127.0.0.1",
      port: 9,
      meshed: false,
      pod: "p",
      node: "n",
      workload: "w",
      namespace: "d",
      slot: 4,
    };
    const pool = pools.http1(FROM, ep, LIMITS);
    const attempt = attemptHttp1(pool, pools.enterPending(ep, pool), request(), Number.POSITIVE_INFINITY);
    setTimeout(() => attempt.abort(), 20);
    expect(await attempt.outcome).toMatchObject({ kind: "failure", error: { code: "NM_TIMEOUT" } });
    expect(shared.tryStartPending(ep.slot, 1)).toBe(true); // its pending slot was released
  });
});
