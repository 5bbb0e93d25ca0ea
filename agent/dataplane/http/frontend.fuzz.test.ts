// Fuzzing the HTTP/1.1 heads a client sends through the agent, live over loopback: the real
// Dataplane (detection, Node's parser behind the frontend, the authorization link) in front of an
// app that records what it is served, with the bypass corpus's DENY policy (/admin, admin.internal)
// on the pod. Whatever the bytes: no worker crash (an uncaught error fails the run), every answer
// is a well-formed HTTP/1.1 head, the app is never served what the policy denies as a lenient app
// would read it, and a plain request still goes through afterwards.

import http from "node:http";
import net from "node:net";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DENY_POLICY, lenientPath, readsAsAdmin } from "../../../test/e2e/fixtures/authz-bypass.ts";
import { fuzzParams, headBytes } from "../../../test/fuzz/fuzz.ts";
import { handleInbound } from "../inbound.ts";
import { acceptor, loopbackDataplane, loopbackPod } from "../testing/loopback.ts";

interface Served {
  url: string;
  host: string;
}

const served: Served[] = [];
const closers: (() => Promise<void> | void)[] = [];
let port = 0;

beforeAll(async () => {
  const app = http.createServer((req, res) => {
    served.push({ url: req.url ?? "", host: req.headers.host ?? "" });
    res.end("app");
  });
  await new Promise<void>((r) => app.listen(0, "127.0.0.1", r));
  closers.push(() => {
    app.closeAllConnections();
    return new Promise<void>((r) => app.close(() => r()));
  });
  const appPort = (app.address() as net.AddressInfo).port;
  const policy = {
    kind: "AuthorizationPolicy",
    name: "deny-admin",
    namespace: "default",
    spec: {
      ...DENY_POLICY,
      rules: DENY_POLICY.rules.map((r) => ({
        to: r.to.map((t) => ({ operation: { ...t.operation, ports: [appPort] } })),
      })),
    },
  };
  const service = {
    name: "web",
    namespace: "default",
    vip: "10.96.0.1",
    ports: [{ name: "http", port: 80, targetPort: appPort, protocol: "http" as const }],
    endpoints: [{ ip: "127.0.0.1", port: appPort, node: "node-a", pod: "web-0" }],
  };
  const dp = loopbackDataplane([service], [policy]);
  const pod = loopbackPod("127.0.0.1", "web-0", "web");
  const a = await acceptor((socket) => void handleInbound(dp, pod, socket, { ip: "127.0.0.1", port: appPort }));
  closers.push(a.close);
  port = a.port;
});

afterAll(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});

/** Sends `bytes`, half-closes, and returns what came back once the agent closed (or 2 s passed). */
function exchange(bytes: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1");
    const parts: Buffer[] = [];
    const timer = setTimeout(() => socket.destroy(), 2000);
    socket.on("data", (c) => parts.push(c));
    socket.on("error", () => {}); // a reset is an answer too
    socket.once("close", () => {
      clearTimeout(timer);
      resolve(Buffer.concat(parts));
    });
    socket.once("connect", () => socket.end(bytes));
    socket.once("timeout", () => reject(new Error("timeout")));
  });
}

/**
 * How a lenient app reads a Host: after any user info (`new URL(url, "http://" + host)` does that),
 * cut at the first ':', case and a trailing dot ignored (as the bypass corpus reads it).
 */
function readsAsAdminHost(host: string): boolean {
  const afterUser = host.slice(host.lastIndexOf("@") + 1);
  return afterUser.split(":")[0]!.toLowerCase().replace(/\.$/, "") === "admin.internal";
}

const target = fc.oneof(
  fc.constantFrom(
    "/",
    "/public/x",
    "/public/x",
    "/admin",
    "/ADMIN",
    "//admin",
    "/public/../admin",
    "/%61dmin",
    "/admin;x",
    "*",
  ),
  fc.constantFrom("http://admin.internal/x", "http://web/admin", "http://admin.internal:80:80/x", "/a b", "/\u00e9"),
  fc
    .array(fc.constantFrom("/", "a", "admin", "..", ".", "%2e", "%2f", "%", ";", "\\", "?", "#", "%00"), {
      maxLength: 8,
    })
    .map((p) => `/${p.join("")}`),
);
const host = fc.oneof(
  fc.constantFrom("web", "admin.internal", "ADMIN.internal.", "admin.internal:80", "admin.internal:80:80"),
  fc.constantFrom("admin.internal:x", "admin.internal..", "a@admin.internal", "[::1]", "admin.internal ", ""),
  fc.string({ maxLength: 12 }),
);
/** Header lines: mostly ordinary, now and then one that a parser must refuse or a proxy must handle. */
const header = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom("Accept: */*", "User-Agent: fuzz", "X-Team: a", "Content-Length: 0") },
  {
    weight: 2,
    arbitrary: fc
      .tuple(fc.stringMatching(/^[A-Za-z-]{1,10}$/), fc.string({ maxLength: 10 }))
      .map(([n, v]) => `${n}: ${v}`),
  },
  { weight: 1, arbitrary: host.map((h) => `Host: ${h}`) },
  {
    weight: 2,
    arbitrary: fc.constantFrom(
      "Content-Length: 5",
      "Content-Length: -1",
      "Content-Length: 5, 6",
      "Transfer-Encoding: chunked",
      "Transfer-Encoding: gzip, chunked",
      "Transfer-Encoding: chunked\r\nContent-Length: 3",
      " folded",
      "\tfolded",
      "X-HTTP-Method-Override: DELETE",
      "Connection: close, Host",
      "Upgrade: websocket\r\nConnection: Upgrade",
      "Expect: 100-continue",
      "x-nodemesh-source: default/evil",
      "Bad Header: x",
      ": empty",
    ),
  },
);
const head = fc
  .record({
    method: fc.oneof(
      { weight: 8, arbitrary: fc.constantFrom("GET", "POST", "DELETE") },
      fc.constantFrom("get", "GET ", "CONNECT", "PRI"),
    ),
    target,
    version: fc.oneof(
      { weight: 8, arbitrary: fc.constant("HTTP/1.1") },
      fc.constantFrom("HTTP/1.0", "HTTP/2.0", "HTTP/1.1 ", "http/1.1"),
    ),
    host: fc.oneof({ weight: 8, arbitrary: host.map((h) => [`Host: ${h}`]) }, fc.constant([])),
    headers: fc.array(header, { maxLength: 4 }),
    eol: fc.oneof({ weight: 8, arbitrary: fc.constant("\r\n") }, fc.constant("\n")),
    body: fc.oneof(
      { weight: 6, arbitrary: fc.constant("") },
      fc.constantFrom(
        "hello",
        "0\r\n\r\n",
        "5\r\nhello\r\n0\r\n\r\n",
        "0\r\n\r\nGET /admin HTTP/1.1\r\nHost: web\r\n\r\n",
      ),
    ),
    pipelined: fc.boolean(),
  })
  .map(({ method, target, version, host, headers, eol, body, pipelined }) => {
    const lines = [...host, ...headers];
    const text = `${method} ${target} ${version}${eol}${lines.map((l) => l + eol).join("")}${eol}${body}`;
    return Buffer.from(pipelined ? `${text}GET /public/y HTTP/1.1\r\nHost: web\r\n\r\n` : text, "latin1");
  });

describe("HTTP/1.1 heads through the agent (fuzz, loopback)", () => {
  it("any head: a well-formed answer or a close, and nothing the policy denies reaches the app", async () => {
    await fc.assert(
      fc.asyncProperty(fc.oneof({ weight: 4, arbitrary: head }, { weight: 1, arbitrary: headBytes }), async (bytes) => {
        served.length = 0;
        const answer = (await exchange(bytes)).toString("latin1");
        if (answer.length > 0) expect(answer).toMatch(/^HTTP\/1\.1 \d{3} /);
        for (const s of served) {
          expect(readsAsAdmin(s.url), `app served ${JSON.stringify(s)} (reads as ${lenientPath(s.url)})`).toBe(false);
          expect(readsAsAdminHost(s.host), `app served host ${JSON.stringify(s.host)}`).toBe(false);
        }
      }),
      fuzzParams(40, 0.005),
    );
    // And the agent still serves.
    served.length = 0;
    const ok = (await exchange(Buffer.from("GET /public/x HTTP/1.1\r\nHost: web\r\n\r\n"))).toString("latin1");
    expect(ok).toMatch(/^HTTP\/1\.1 200 /);
    expect(served).toEqual([{ url: "/public/x", host: "web" }]);
  });

  it.each(["admin.internal:80:80", "admin.internal:x", "a@admin.internal"])(
    "found by fuzzing: Host %j does not slip past a DENY on hosts",
    async (h) => {
      served.length = 0;
      const answer = (await exchange(Buffer.from(`GET /public/x HTTP/1.1\r\nHost: ${h}\r\n\r\n`))).toString("latin1");
      expect(answer).toMatch(/^HTTP\/1\.1 (400|403) /);
      expect(served).toEqual([]);
    },
  );
});
