// The L4 and L7 chains end to end over loopback, without root: the real Dataplane with plain
// sockets; the test plays the kernel's part (it accepts the "redirected" connection and names
// its original destination).

import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { Service } from "../../api/services.ts";
import type { Dataplane } from "./dataplane.ts";
import { handleInbound } from "./inbound.ts";
import { handleOutbound } from "./outbound.ts";
import { acceptor, loopbackDataplane, loopbackPod } from "./testing/loopback.ts";

const VIP = "10.96.0.1";
const CLIENT = loopbackPod("127.0.0.1", "client-0", "client");
const closers: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});

/** A TCP port on loopback where nothing listens (connections are refused). */
async function closedPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const { port } = s.address() as net.AddressInfo;
  await new Promise((r) => s.close(r));
  return port;
}

async function listen(server: net.Server): Promise<number> {
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  closers.push(() => new Promise<void>((r) => server.close(() => r())));
  if ("closeAllConnections" in server) closers.push(() => (server as http.Server).closeAllConnections());
  return (server.address() as net.AddressInfo).port;
}

function service(ports: number[], protocol?: "http" | "http2" | "tcp"): Service {
  return {
    name: "web",
    namespace: "default",
    vip: VIP,
    ports: [{ name: "p", port: 80, ...(protocol ? { protocol } : {}) }],
    endpoints: ports.map((port, i) => ({ ip: "127.0.0.1", port, node: "node-a", pod: `web-${i}` })),
  };
}

/** The "redirected" outbound connections of CLIENT to VIP:80 land here. */
async function outboundListener(dp: Dataplane): Promise<number> {
  const a = await acceptor((socket) => void handleOutbound(dp, CLIENT, socket, { ip: VIP, port: 80 }));
  closers.push(a.close);
  return a.port;
}

function get(port: number, path: string, headers: http.OutgoingHttpHeaders = {}) {
  return new Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }>((resolve, reject) => {
    const req = http.get({ host: "127.0.0.1", port, path, headers, agent: false }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c) => (body += c));
      res.on("end", () => resolve({ status: res.statusCode!, headers: res.headers, body }));
    });
    req.on("error", reject);
  });
}

describe("L4 chain", () => {
  it("fails over past a refusing endpoint and forwards bytes both ways", async () => {
    const echo = net.createServer((s) => s.pipe(s));
    const dp = loopbackDataplane([service([await closedPort(), await listen(echo)], "tcp")]);
    const port = await outboundListener(dp);
    // Round robin: each connection's failover advances the rotation too, so both start at the refusing endpoint.
    for (const text of ["ping", "pong"]) {
      const client = net.connect(port, "127.0.0.1");
      client.end(text);
      let got = "";
      for await (const chunk of client) got += chunk;
      expect(got).toBe(text);
    }
    const failures = (await dp.metrics.connectFailures.get()).values;
    expect(failures.map((v) => [v.labels.direction, v.labels.reason, v.value])).toEqual([
      ["outbound", "NM_CONNECT_FAILED", 2],
    ]);
    const json = await dp.metrics.registry.getMetricsAsJSON();
    const opened = json.find((m) => m.name === "nodemesh_tcp_connections_opened_total");
    expect(opened?.values.map((v) => [v.labels.destination_workload, v.value])).toEqual([["web-1", 2]]);
  });

  it("resets the client when no endpoint accepts", async () => {
    const dp = loopbackDataplane([service([await closedPort(), await closedPort()], "tcp")]);
    const port = await outboundListener(dp);
    const client = net.connect(port, "127.0.0.1");
    const closed = new Promise<string | undefined>((resolve) => {
      client.on("error", (e: NodeJS.ErrnoException) => resolve(e.code));
      client.on("close", () => resolve(undefined));
    });
    expect(await closed).toBe("ECONNRESET");
  });
});

describe("L7 chain (HTTP/1.1)", () => {
  it("routes, sets a request id, and retries a 503 on the other endpoint", async () => {
    const failing = http.createServer((_, res) => res.writeHead(503).end("down"));
    const ok = http.createServer((req, res) => res.end(`ok ${req.headers["x-request-id"] ?? "none"}`));
    const policy = {
      kind: "TrafficPolicy",
      name: "web",
      namespace: "default",
      spec: { targetRefs: [{ name: "web" }], retries: { attempts: 2, retryOn: ["5xx"] } },
    };
    const dp = loopbackDataplane([service([await listen(failing), await listen(ok)], "http")], [policy]);
    const port = await outboundListener(dp);
    for (let i = 0; i < 4; i++) {
      const r = await get(port, "/");
      expect(r.status).toBe(200);
      expect(r.body).toMatch(/^ok [0-9a-f-]{36}$/);
    }
    const retries = (await dp.metrics.retries.get()).values.reduce((n, v) => n + v.value, 0);
    expect(retries).toBeGreaterThanOrEqual(1); // round robin sends some first attempts to the 503 endpoint
  });

  it("mirrors a copy of each request, and counts the copies it could not deliver by reason", async () => {
    const app = http.createServer((_, res) => res.end("app"));
    let shadowServed = 0;
    const shadow = http.createServer((_, res) => {
      shadowServed++;
      res.end("shadow");
    });
    const named = (name: string, vip: string, ports: number[]): Service => ({
      ...service(ports, "http"),
      name,
      vip,
      endpoints: ports.map((port, i) => ({ ip: "127.0.0.1", port, node: "node-a", pod: `${name}-${i}` })),
    });
    const mirrorTo = (path: string, backend: string) => ({
      matches: [{ path: { type: "PathPrefix", value: path } }],
      backendRefs: [{ name: "web" }],
      filters: [{ type: "RequestMirror", requestMirror: { backendRef: { name: backend }, percent: 100 } }],
    });
    const route = {
      kind: "HTTPRoute",
      name: "web-mirrors",
      namespace: "default",
      spec: {
        parentRefs: [{ name: "web" }],
        rules: [mirrorTo("/ok", "shadow"), mirrorTo("/refused", "shadow-refused"), mirrorTo("/empty", "shadow-empty")],
      },
    };
    const dp = loopbackDataplane(
      [
        named("web", VIP, [await listen(app)]),
        named("shadow", "10.96.0.2", [await listen(shadow)]),
        named("shadow-refused", "10.96.0.3", [await closedPort()]),
        named("shadow-empty", "10.96.0.4", []),
      ],
      [route],
    );
    const port = await outboundListener(dp);
    for (const path of ["/ok", "/refused", "/empty"]) {
      for (let i = 0; i < 3; i++) expect((await get(port, path)).body).toBe("app"); // the client never sees a mirror
    }
    const counted = async () => {
      const dropped = (await dp.metrics.mirrorDropped.get()).values;
      const mirrored = (await dp.metrics.mirrored.get()).values;
      return {
        mirrored: mirrored.reduce((n, v) => n + v.value, 0),
        ...Object.fromEntries(dropped.map((v) => [v.labels.reason, v.value])),
      };
    };
    await vi.waitFor(async () => expect(await counted()).toEqual({ mirrored: 3, connect_failure: 3, no_endpoint: 3 }));
    expect(shadowServed).toBe(3);
  });

  it("answers 404 NM_NO_ROUTE for a path no rule routes", async () => {
    const app = http.createServer((_, res) => res.end("app"));
    const route = {
      kind: "HTTPRoute",
      name: "public-only",
      namespace: "default",
      spec: {
        parentRefs: [{ name: "web" }],
        rules: [{ matches: [{ path: { type: "PathPrefix", value: "/public" } }], backendRefs: [{ name: "web" }] }],
      },
    };
    const dp = loopbackDataplane([service([await listen(app)], "http")], [route]);
    const port = await outboundListener(dp);
    expect((await get(port, "/public/x")).body).toBe("app");
    const refused = await get(port, "/admin");
    expect([refused.status, refused.headers["x-nodemesh-error"]]).toEqual([404, "NM_NO_ROUTE"]);
  });

  it("answers 504 NM_PER_TRY_TIMEOUT when the app is slower than the per-try timeout", async () => {
    const slow = http.createServer((_, res) => setTimeout(() => res.end("late"), 1000).unref());
    const policy = {
      kind: "TrafficPolicy",
      name: "web",
      namespace: "default",
      spec: { targetRefs: [{ name: "web" }], timeouts: { perTry: "100ms" } },
    };
    const dp = loopbackDataplane([service([await listen(slow)], "http")], [policy]);
    const r = await get(await outboundListener(dp), "/");
    expect([r.status, r.headers["x-nodemesh-error"]]).toEqual([504, "NM_PER_TRY_TIMEOUT"]);
  });

  it("rate-limits inbound requests to a pod with 429 and Retry-After", async () => {
    const app = http.createServer((_, res) => res.end("app"));
    const appPort = await listen(app);
    const svc: Service = { ...service([appPort], "http") };
    const policy = {
      kind: "TrafficPolicy",
      name: "web",
      namespace: "default",
      spec: { targetRefs: [{ name: "web" }], rateLimit: { requestsPerSecond: 1, burst: 1 } },
    };
    const dp = loopbackDataplane([svc], [policy]);
    const pod = loopbackPod("127.0.0.1", "web-0", "web");
    const a = await acceptor((socket) => void handleInbound(dp, pod, socket, { ip: "127.0.0.1", port: appPort }));
    closers.push(a.close);
    const first = await get(a.port, "/");
    const second = await get(a.port, "/");
    expect(first.status).toBe(200);
    expect([second.status, second.headers["x-nodemesh-error"], second.headers["retry-after"]]).toEqual([
      429,
      "NM_RATE_LIMITED",
      "1",
    ]);
  });
});

describe("L7 chain (HTTP/2)", () => {
  it("proxies an h2c request and its trailers", async () => {
    const app = http2.createServer();
    app.on("stream", (stream) => {
      stream.respond({ ":status": 200 }, { waitForTrailers: true });
      stream.on("wantTrailers", () => stream.sendTrailers({ "x-done": "yes" }));
      stream.end("h2 app");
    });
    app.on("session", (s) => closers.push(() => void s.destroy()));
    const dp = loopbackDataplane([service([await listen(app)], "http2")]);
    const port = await outboundListener(dp);
    const session = http2.connect(`http://127.0.0.1:${port}`);
    closers.push(() => void session.destroy());
    const stream = session.request({ ":path": "/" });
    let body = "";
    let trailers: http2.IncomingHttpHeaders = {};
    stream.setEncoding("utf8");
    stream.on("data", (c) => (body += c));
    stream.on("trailers", (t) => (trailers = t));
    const status = await new Promise<number>((r) => stream.once("response", (h) => r(Number(h[":status"]))));
    await new Promise((r) => stream.once("end", r));
    expect([status, body, trailers["x-done"]]).toEqual([200, "h2 app", "yes"]);
  });
});

/** Sends raw bytes, returns everything received until the peer closes (or `untilMs` passes). */
function exchange(port: number, bytes: string, after?: (text: string, socket: net.Socket) => void, untilMs = 2000) {
  return new Promise<string>((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    let text = "";
    socket.setEncoding("latin1");
    socket.on("data", (c: string) => {
      text += c;
      after?.(text, socket);
    });
    socket.on("error", () => {});
    socket.on("close", () => resolve(text));
    setTimeout(() => socket.destroy(), untilMs).unref();
    socket.write(bytes);
  });
}

const UPGRADE = (path: string) => `GET ${path} HTTP/1.1\r\nHost: web\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n`;

describe("L7 chain: HTTP/1.1 Upgrade (issue 21, item 1)", () => {
  /** Answers an Upgrade with 101 and then echoes bytes uppercased; anything else gets 200 "plain". */
  async function upgradeApp(seen: string[]) {
    const app = http.createServer((req, res) => {
      seen.push(`${req.method} ${req.url} ${req.headers["x-forged"] ?? ""}`);
      res.end("plain");
    });
    app.on("upgrade", (req, socket) => {
      seen.push(`UPGRADE ${req.url}`);
      closers.push(() => void socket.destroy()); // upgraded: no longer the server's to close
      socket.write("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n");
      socket.on("data", (d: Buffer) => socket.write(d.toString().toUpperCase()));
    });
    return listen(app);
  }
  const publicOnly = {
    kind: "HTTPRoute",
    name: "public-only",
    namespace: "default",
    spec: {
      parentRefs: [{ name: "web" }],
      rules: [{ matches: [{ path: { type: "PathPrefix", value: "/public" } }], backendRefs: [{ name: "web" }] }],
    },
  };

  it("routes an Upgrade like any request: 404 off the routes, 101 and a pipe on them", async () => {
    const seen: string[] = [];
    const dp = loopbackDataplane([service([await upgradeApp(seen)], "http")], [publicOnly]);
    const port = await outboundListener(dp);
    const refused = await exchange(port, UPGRADE("/admin"));
    expect(refused).toMatch(/^HTTP\/1\.1 404 .*\r\nX-Nodemesh-Error: NM_NO_ROUTE\r\n/);
    const piped = await exchange(port, UPGRADE("/public/chat"), (text, socket) => {
      if (text.endsWith("\r\n\r\n")) socket.write("hello");
      if (text.endsWith("HELLO")) socket.destroy();
    });
    expect(piped).toMatch(/^HTTP\/1\.1 101 Switching Protocols\r\n/);
    expect(piped.endsWith("HELLO")).toBe(true);
    expect(seen).toEqual(["UPGRADE /public/chat"]);
  });

  it("keeps nothing raw after a non-101 answer: the connection closes, the next bytes reach no app", async () => {
    const seen: string[] = [];
    const plainOnly = http.createServer((req, res) => {
      seen.push(`${req.method} ${req.url} ${req.headers["x-nodemesh-forged"] ?? ""}`);
      res.end("plain");
    });
    const dp = loopbackDataplane([service([await listen(plainOnly)], "http")]);
    const port = await outboundListener(dp);
    const smuggled = "GET /second HTTP/1.1\r\nHost: web\r\nX-Nodemesh-Forged: yes\r\n\r\n";
    const text = await exchange(port, UPGRADE("/first"), (t, socket) => {
      if (t.includes("plain")) socket.write(smuggled);
    });
    expect(text).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(text).toMatch(/\r\nconnection: close\r\n/i);
    expect(seen).toEqual(["GET /first "]);
  });

  it("rate-limits Upgrade requests at the destination like any other", async () => {
    const seen: string[] = [];
    const appPort = await upgradeApp(seen);
    const policy = {
      kind: "TrafficPolicy",
      name: "web",
      namespace: "default",
      spec: { targetRefs: [{ name: "web" }], rateLimit: { requestsPerSecond: 1, burst: 1 } },
    };
    const dp = loopbackDataplane([service([appPort], "http")], [policy]);
    const pod = loopbackPod("127.0.0.1", "web-0", "web");
    const a = await acceptor((socket) => void handleInbound(dp, pod, socket, { ip: "127.0.0.1", port: appPort }));
    closers.push(a.close);
    const answers: string[] = [];
    for (let i = 0; i < 5; i++) {
      answers.push((await exchange(a.port, UPGRADE("/chat"), (_, s) => s.end(), 500)).slice(0, 12));
    }
    expect(answers.filter((x) => x === "HTTP/1.1 101")).toHaveLength(1);
    expect(answers.filter((x) => x === "HTTP/1.1 429")).toHaveLength(4);
    expect(seen).toEqual(["UPGRADE /chat"]);
  });
});

describe("L7 chain: forwarded headers (issue 21, item 8)", () => {
  async function echoHeaders() {
    const app = http.createServer((req, res) =>
      res.end(JSON.stringify([req.headers["x-forwarded-for"], req.headers["x-forwarded-client-cert"] ?? null])),
    );
    return listen(app);
  }
  const forged = {
    "x-forwarded-for": "6.6.6.6",
    "x-forwarded-client-cert": "By=spiffe://evil;URI=spiffe://evil/admin",
  };

  it("appends the source pod's address to X-Forwarded-For and drops a client's X-Forwarded-Client-Cert", async () => {
    const dp = loopbackDataplane([service([await echoHeaders()], "http")]);
    const r = await get(await outboundListener(dp), "/", forged);
    expect(JSON.parse(r.body)).toEqual([`6.6.6.6, ${CLIENT.pod.ip}`, null]);
  });

  it("replaces X-Forwarded-For with the caller's address when the policy says Sanitize", async () => {
    const policy = {
      kind: "TrafficPolicy",
      name: "web",
      namespace: "default",
      spec: { targetRefs: [{ name: "web" }], forwardedFor: "Sanitize" },
    };
    const appPort = await echoHeaders();
    const dp = loopbackDataplane([service([appPort], "http")], [policy]);
    expect(JSON.parse((await get(await outboundListener(dp), "/", forged)).body)).toEqual([CLIENT.pod.ip, null]);
    // A caller outside the mesh, on the pod's inbound port: its address as the agent saw it.
    const pod = loopbackPod("127.0.0.1", "web-0", "web");
    const a = await acceptor((socket) => void handleInbound(dp, pod, socket, { ip: "127.0.0.1", port: appPort }));
    closers.push(a.close);
    expect(JSON.parse((await get(a.port, "/", forged)).body)).toEqual(["127.0.0.1", null]);
  });
});
