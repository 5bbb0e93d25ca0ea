// AuthorizationPolicy (issue 12, item 5), enforced by the destination's agent: an allow/deny
// matrix over HTTP/1.1, HTTP/2, gRPC and TCP by principal, namespace, source address, port,
// method, path, host and header; and the bypass corpus (test/e2e/fixtures/authz-bypass.ts), sent
// for real through the mesh, of which nothing may reach the app: the app's own record of what it
// served is the judge.

import type http2 from "node:http2";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { afterAll, beforeAll, expect, it } from "vitest";
import type { ServedCounts } from "../workload/workload.ts";
import { type Node, type Pod, World } from "../world/world.ts";
import type { GrpcArgs, GrpcReport } from "./clients/grpc-call.ts";
import { grpcCallIn } from "./clients/in-pod.ts";
import { eventually } from "./eventually.ts";
import {
  BYPASS_ATTEMPTS,
  type BypassAttempt,
  CLIENT_PRINCIPAL,
  DENY_POLICY,
  readsAsAdmin,
  readsAsAdminHost,
} from "./fixtures/authz-bypass.ts";
import { Mesh } from "./mesh.ts";
import { describeModes } from "./modes.ts";
import { echoFrom, http2SessionFrom, httpFrom, metricSum, rawHttpFrom } from "./netns-client.ts";

const VIP = "10.96.0.10";

const webYaml = `apiVersion: nodemesh.io/v1alpha1
kind: Service
metadata: { name: web, namespace: default }
spec:
  vip: ${VIP}
  ports:
    - { name: http, port: 80, targetPort: 8080, protocol: http }
    - { name: grpc, port: 9090, targetPort: 9090, protocol: grpc }
    - { name: echo, port: 9000, targetPort: 9000, protocol: tcp }
  selector: { app: web }
---
apiVersion: nodemesh.io/v1alpha1
kind: TrafficPolicy
metadata: { name: web-logged, namespace: default }
spec:
  targetRefs: [{ name: web }]
  accessLog: { sampling: 100 }
`;

function policies(strangerIp: string, otherIp: string): string {
  const objects = [
    { name: "web-deny", spec: DENY_POLICY },
    {
      name: "web-deny-address",
      spec: {
        targetRefs: [{ name: "web" }],
        action: "DENY",
        rules: [
          { from: [{ source: { ipBlocks: [`${otherIp}/32`] } }], to: [{ operation: { paths: ["/reports/secret"] } }] },
        ],
      },
    },
    {
      name: "web-allow",
      spec: {
        targetRefs: [{ name: "web" }],
        action: "ALLOW",
        rules: [
          { from: [{ source: { principals: [CLIENT_PRINCIPAL] } }], to: [{ operation: { methods: ["GET", "POST"] } }] },
          { from: [{ source: { principals: [CLIENT_PRINCIPAL] } }], to: [{ operation: { ports: [9000] } }] },
          {
            from: [{ source: { namespaces: ["default"] } }],
            to: [{ operation: { methods: ["GET"], paths: ["/reports/*"] } }],
            when: [{ key: "request.headers[x-team]", values: ["blue"] }],
          },
          { from: [{ source: { ipBlocks: [`${strangerIp}/32`] } }], to: [{ operation: { paths: ["/open/*"] } }] },
        ],
      },
    },
  ];
  return objects
    .map((o) =>
      JSON.stringify({
        apiVersion: "nodemesh.io/v1alpha1",
        kind: "AuthorizationPolicy",
        metadata: { name: o.name, namespace: "default" },
        spec: o.spec,
      }),
    )
    .join("\n---\n");
}

const statusOf = (answer: string) => Number(/^HTTP\/1\.1 (\d{3})/.exec(answer)?.[1] ?? 0);

describeModes("AuthorizationPolicy", (mode) => {
  let world: World;
  let mesh: Mesh;
  let n1: Node;
  let n2: Node;
  let client: Pod; // sa client
  let other: Pod; // sa other, same namespace
  let stranger: Pod; // not meshed
  let web: Pod;

  const request = (from: Pod, method: string, path: string, headers: string[] = [], host = "web") =>
    rawHttpFrom(
      from.netnsPath,
      VIP,
      80,
      `${method} ${path} HTTP/1.1\r\nHost: ${host}\r\n${headers.map((h) => `${h}\r\n`).join("")}Connection: close\r\n\r\n`,
    );
  const served = async (): Promise<ServedCounts> =>
    JSON.parse((await httpFrom(web.netnsPath, `http://${web.ip}:8080/_control`)).body).served;
  const grpcCall = (from: Pod, args: GrpcArgs): Promise<GrpcReport> => grpcCallIn(world, from, args);
  const h2 = (from: Pod, headers: http2.OutgoingHttpHeaders) =>
    new Promise<{ status: number; body: string }>((resolve) => {
      const session = http2SessionFrom(from.netnsPath, VIP, 80);
      session.on("error", () => resolve({ status: 0, body: "" }));
      const stream = session.request({ ":method": "GET", ...headers });
      let status = 0;
      let body = "";
      stream.setEncoding("utf8");
      stream.on("response", (h) => {
        status = Number(h[":status"]);
      });
      stream.on("data", (c: string) => {
        body += c;
      });
      stream.on("close", () => {
        session.close();
        resolve({ status, body });
      });
      stream.on("error", () => {});
      stream.end();
    });
  const accessLines = () =>
    mesh.agents
      .get(n2)!
      .proc.lines.filter((l) => l.includes('"msg":"access"'))
      .map((l) => JSON.parse(l));

  beforeAll(async () => {
    world = await World.create({ nodes: 2, cgroups: mode === "ebpf" });
    mesh = new Mesh(world, { mode });
    [n1, n2] = world.nodes as [Node, Node];
    await mesh.startController();
    await Promise.all([mesh.startAgent(n1), mesh.startAgent(n2)]);
    client = await world.addPod(n1, "client");
    other = await world.addPod(n1, "other");
    stranger = await world.addPod(n1, "stranger");
    web = await world.addPod(n2, "web-1");
    await mesh.startWorkload(web, ["--http-port", "8080", "--grpc-port", "9090", "--tcp-echo-port", "9000"]);
    await mesh.enroll(client, ["--label", "app=client", "--service-account", "client"]);
    await mesh.enroll(other, ["--label", "app=other", "--service-account", "other"]);
    await mesh.enroll(web, ["--label", "app=web", "--service-account", "web"]);
    const applied = await mesh.cli(["apply", "-f", "-"], webYaml);
    expect(applied.code, applied.stderr).toBe(0);
    await eventually("the Service applied on both nodes", 15_000, async () =>
      /web\s+10\.96\.0\.10\s+.*2\/2/.test((await mesh.cli(["get", "services"])).stdout) ? true : undefined,
    );
    // Every caller proves who it is before the policies go in (the certificates are there).
    await eventually("mTLS from client and other", 15_000, async () => {
      const a = await httpFrom(client.netnsPath, `http://${VIP}/ready`).catch(() => undefined);
      const b = await httpFrom(other.netnsPath, `http://${VIP}/ready`).catch(() => undefined);
      return a?.body.includes("sa/client") && b?.body.includes("sa/other") ? true : undefined;
    });
    const authz = await mesh.cli(["apply", "-f", "-"], policies(stranger.ip, other.ip));
    expect(authz.code, authz.stderr).toBe(0);
    await eventually("the policies in force on node-2", 15_000, async () =>
      statusOf(await request(client, "DELETE", "/probe")) === 403 ? true : undefined,
    );
  }, 120_000);

  afterAll(async () => {
    await mesh?.destroy();
  });

  it("shows the policies like every other kind", async () => {
    const get = await mesh.cli(["get", "authorizationpolicies"]);
    expect(get.code, get.stderr).toBe(0);
    for (const name of ["web-allow", "web-deny", "web-deny-address"]) expect(get.stdout).toContain(name);
  });

  it("HTTP/1.1: allows and denies by principal, namespace, method, path, header and source address", async () => {
    const cases: [string, Pod, string, string, string[], number][] = [
      ["the client's GET", client, "GET", "/public", [], 200],
      ["the client's POST", client, "POST", "/public", ["Content-Length: 0"], 200],
      ["the client's DELETE (no ALLOW rule)", client, "DELETE", "/public", [], 403],
      ["the client at /admin (DENY)", client, "GET", "/admin", [], 403],
      ["another workload with the team header", other, "GET", "/reports/q", ["X-Team: blue"], 200],
      ["… without it", other, "GET", "/reports/q", [], 403],
      ["… with another team", other, "GET", "/reports/q", ["X-Team: red"], 403],
      ["… elsewhere", other, "GET", "/public", ["X-Team: blue"], 403],
      ["… at the path denied to its address", other, "GET", "/reports/secret", ["X-Team: blue"], 403],
      ["the client there (another address)", client, "GET", "/reports/secret", [], 200],
    ];
    for (const [name, from, method, path, headers, status] of cases) {
      expect(statusOf(await request(from, method, path, headers)), name).toBe(status);
    }
    const denied = await request(client, "GET", "/admin/users");
    expect(denied).toMatch(/\r\nx-nodemesh-error: NM_AUTHZ_DENIED\r\n/i);
    expect(denied).toContain("AuthorizationPolicy default/web-deny denies it");
    const nomatch = await request(other, "GET", "/public");
    expect(nomatch).toContain("no ALLOW AuthorizationPolicy of the workload matches it");
    // A caller outside the mesh: no principal, but its address is known.
    const plain = (path: string) => httpFrom(stranger.netnsPath, `http://${web.ip}:8080${path}`).then((r) => r.status);
    expect(await plain("/open/door")).toBe(200);
    expect(await plain("/public")).toBe(403);
  });

  it("HTTP/2 and gRPC: the same decisions; gRPC denials are PERMISSION_DENIED", async () => {
    expect((await h2(client, { ":path": "/public" })).status).toBe(200);
    expect((await h2(client, { ":path": "/ADMIN/x" })).status).toBe(403);
    expect((await h2(other, { ":path": "/reports/q", "x-team": "blue" })).status).toBe(200);
    expect((await h2(other, { ":path": "/public", "x-team": "blue" })).status).toBe(403);

    const allowed = await grpcCall(client, { target: `${VIP}:9090`, mode: "unary", calls: 3 });
    expect(allowed.codes).toEqual({ OK: 3 });
    const denied = await grpcCall(other, { target: `${VIP}:9090`, mode: "unary", calls: 3 });
    expect(denied.codes).toEqual({ PERMISSION_DENIED: 3 });
    expect(denied.nmErrors).toEqual({ NM_AUTHZ_DENIED: 3 });
  });

  it("TCP: an allowed caller's bytes are echoed; a denied caller's connection is closed with nothing delivered", async () => {
    const payload = Buffer.from("authorized bytes\n");
    expect((await echoFrom(client.netnsPath, VIP, 9000, payload)).equals(payload)).toBe(true);
    const refused = await echoFrom(other.netnsPath, VIP, 9000, Buffer.from("denied bytes\n")).catch(() =>
      Buffer.alloc(0),
    );
    expect(refused.length).toBe(0);
    // Straight to the pod from outside the mesh: no principal, no ALLOW rule for TCP.
    const direct = await echoFrom(stranger.netnsPath, web.ip, 9000, Buffer.from("plain\n")).catch(() =>
      Buffer.alloc(0),
    );
    expect(direct.length).toBe(0);
  });

  it("counts and logs denials with the policy's name", async () => {
    const m = await mesh.metrics(n2);
    const denied = (labels: Record<string, string>) => metricSum(m, "nodemesh_authorization_denied_total", labels);
    expect(
      denied({ policy: "default/web-deny", reason: "deny_policy", destination_service: "web.default" }),
    ).toBeGreaterThan(0);
    expect(denied({ policy: "default/web-deny-address", reason: "deny_policy" })).toBeGreaterThan(0);
    expect(denied({ reason: "no_allow_match" })).toBeGreaterThan(0);
    await eventually("an access-log line naming the DENY policy", 5000, async () =>
      accessLines().some((l) => l.authorizationPolicy === "default/web-deny" && l.status === 403) ? true : undefined,
    );
    const tcpDenials = await eventually("access-log lines for both denied TCP connections", 5000, async () => {
      const lines = accessLines().filter((l) => l.type === "tcp" && l.error === "NM_AUTHZ_DENIED");
      return lines.length >= 2 ? lines : undefined;
    });
    // Through the tunnel, the caller is known; straight from outside the mesh, only its address.
    expect(tcpDenials.map((l) => [l.sourceWorkload, l.sourceIp, l.destinationService]).sort()).toEqual([
      ["other", other.ip, "web.default"],
      ["unknown", stranger.ip, "web.default"],
    ]);
  });

  it("lets none of the bypass attempts reach the app (HTTP/1.1 and HTTP/2)", async () => {
    const before = await served();
    const send = (a: BypassAttempt, i: number) => {
      const headers = [...(a.headers ?? [])];
      const host = headers.some(([n]) => n === "Host") ? "" : "Host: web\r\n";
      const lines = headers.map(([n, v]) => `${n}: ${v}\r\n`).join("");
      const length = a.method === "POST" ? "Content-Length: 0\r\n" : "";
      return rawHttpFrom(
        client.netnsPath,
        VIP,
        80,
        `${a.method ?? "GET"} ${a.target} HTTP/1.1\r\n${host}${lines}${length}X-Attempt: ${i}\r\nConnection: close\r\n\r\n`,
      );
    };
    const outcomes: string[] = [];
    for (const [i, a] of BYPASS_ATTEMPTS.entries()) {
      const status = statusOf(await send(a, i));
      outcomes.push(`${a.name}: ${status}`);
      // Refused by a parser (400, 431), by the normaliser (400) or by a policy (403); never served.
      expect([0, 400, 403, 431], `${a.name} (${a.target})`).toContain(status);
    }
    const h2Attempts: [string, http2.OutgoingHttpHeaders][] = [
      ["h2 upper case", { ":path": "/ADMIN" }],
      ["h2 double slash", { ":path": "//admin/users" }],
      ["h2 encoded letter", { ":path": "/%61dmin" }],
      ["h2 dot-dot", { ":path": "/public/%2e%2e/admin" }],
      ["h2 path parameter", { ":path": "/admin;x" }],
      ["h2 lower-case method", { ":method": "delete", ":path": "/public" }],
      ["h2 denied authority with a trailing dot", { ":path": "/public/x", ":authority": "admin.internal." }],
      ["h2 host header against :authority", { ":path": "/public/x", ":authority": "web", host: "admin.internal" }],
    ];
    for (const [i, [name, headers]] of h2Attempts.entries()) {
      const { status } = await h2(client, { ...headers, "x-attempt": `h2-${i}` });
      outcomes.push(`${name}: ${status}`);
      expect([0, 400, 403], name).toContain(status);
    }
    expect(outcomes.length).toBeGreaterThanOrEqual(60);
    const after = await served();
    const seen = after.recent.slice(Math.max(0, after.recent.length - (after.http - before.http)));
    // The judge: the app served no attempt at all, and nothing a lenient app reads as protected.
    expect(seen.filter((r) => r.headers["x-attempt"] !== undefined)).toEqual([]);
    expect(seen.filter((r) => readsAsAdmin(r.path) || readsAsAdminHost(r.host))).toEqual([]);
    expect(after.http - before.http).toBe(0);
  });

  it("RequestAuthentication: validates JWTs (inline and fetched JWKS) for requestPrincipals and claims; 401 without a valid one", async () => {
    const [a, b, rogue] = await Promise.all([
      generateKeyPair("ES256"),
      generateKeyPair("ES256"),
      generateKeyPair("ES256"),
    ]);
    const jwk = async (k: typeof a, kid: string) => ({ ...(await exportJWK(k.publicKey)), kid, alg: "ES256" });
    const jwksB = JSON.stringify({ keys: [await jwk(b, "b1")] });
    // Issuer B's keys, served on node-2's loopback for its agent to fetch.
    const server = world.spawn(n2, process.execPath, [
      "-e",
      `require("node:http").createServer((q, s) => s.end(${JSON.stringify(jwksB)})).listen(18443, "127.0.0.1", () => console.log("listening"))`,
    ]);
    await server.waitForLine(/listening/, 10_000);
    const token = (key: typeof a, kid: string, iss: string, claims: Record<string, unknown> = {}) => {
      const now = Math.floor(Date.now() / 1000);
      return new SignJWT({ iss, sub: "alice", aud: "web", iat: now, exp: now + 300, ...claims })
        .setProtectedHeader({ alg: "ES256", kid })
        .sign(key.privateKey);
    };
    const objects = [
      {
        kind: "RequestAuthentication",
        metadata: { name: "web-jwt", namespace: "default" },
        spec: {
          targetRefs: [{ name: "web" }],
          jwtRules: [
            { issuer: "https://a.test", audiences: ["web"], jwks: JSON.stringify({ keys: [await jwk(a, "a1")] }) },
            { issuer: "https://b.test", jwksUri: "http://127.0.0.1:18443/jwks" },
          ],
        },
      },
      {
        kind: "AuthorizationPolicy",
        metadata: { name: "web-allow-jwt", namespace: "default" },
        spec: {
          targetRefs: [{ name: "web" }],
          rules: [
            {
              from: [{ source: { requestPrincipals: ["https://a.test/alice", "https://b.test/*"] } }],
              to: [{ operation: { paths: ["/jwt/*"] } }],
            },
            {
              to: [{ operation: { paths: ["/jwt-admin/*"] } }],
              when: [{ key: "request.auth.claims[groups]", values: ["admins"] }],
            },
          ],
        },
      },
    ];
    const yaml = objects.map((o) => JSON.stringify({ apiVersion: "nodemesh.io/v1alpha1", ...o })).join("\n---\n");
    expect((await mesh.cli(["apply", "-f", "-"], yaml)).code).toBe(0);
    // From outside the mesh, straight to the pod: the token is the caller's only credential.
    const call = async (path: string, jwt?: string) => {
      const auth = jwt ? `Authorization: Bearer ${jwt}\r\n` : "";
      const answer = await rawHttpFrom(
        stranger.netnsPath,
        web.ip,
        8080,
        `GET ${path} HTTP/1.1\r\nHost: web\r\n${auth}Connection: close\r\n\r\n`,
      );
      return `${statusOf(answer)} ${/\r\nx-nodemesh-error: (\S+)/i.exec(answer)?.[1] ?? ""}`.trim();
    };
    const alice = await token(a, "a1", "https://a.test");
    await eventually("the JWT rules in force on node-2", 15_000, async () =>
      (await call("/jwt/x", alice)) === "200" ? true : undefined,
    );
    const past = Math.floor(Date.now() / 1000) - 3600;
    const cases: [string, string, string | undefined, string][] = [
      ["a valid token of issuer A", "/jwt/x", alice, "200"],
      [
        "a valid token of issuer B (fetched JWKS)",
        "/jwt/x",
        await token(b, "b1", "https://b.test", { sub: "carol" }),
        "200",
      ],
      ["no token", "/jwt/x", undefined, "401 NM_JWT_REQUIRED"],
      ["a token signed by another key", "/jwt/x", await token(rogue, "a1", "https://a.test"), "401 NM_JWT_INVALID"],
      [
        "an expired token",
        "/jwt/x",
        await token(a, "a1", "https://a.test", { exp: past, iat: past - 60 }),
        "401 NM_JWT_INVALID",
      ],
      [
        "a token for another audience",
        "/jwt/x",
        await token(a, "a1", "https://a.test", { aud: "db" }),
        "401 NM_JWT_INVALID",
      ],
      [
        "another subject of issuer A",
        "/jwt/x",
        await token(a, "a1", "https://a.test", { sub: "bob" }),
        "403 NM_AUTHZ_DENIED",
      ],
      ["a valid token without the claim", "/jwt-admin/x", alice, "403 NM_AUTHZ_DENIED"],
      [
        "a valid token with the claim",
        "/jwt-admin/x",
        await token(a, "a1", "https://a.test", { sub: "bob", groups: ["users", "admins"] }),
        "200",
      ],
      ["a valid token elsewhere", "/public", alice, "403 NM_AUTHZ_DENIED"],
    ];
    for (const [name, path, jwt, expected] of cases) expect(await call(path, jwt), name).toBe(expected);
    // A mesh caller allowed by its certificate is still refused with a bad token.
    expect(
      statusOf(
        await request(client, "GET", "/public", [
          `Authorization: Bearer ${await token(rogue, "a1", "https://a.test")}`,
        ]),
      ),
    ).toBe(401);
    // The validated token is not passed on to the app (forwardOriginalToken is false).
    const seen = (await served()).recent.filter((r) => r.path === "/jwt/x");
    expect(seen.length).toBeGreaterThanOrEqual(2);
    for (const r of seen) expect(r.headers.authorization).toBeUndefined();
    await server.stop();
  });

  it("leaves a pod no policy selects as it was: paths unnormalised, every caller served", async () => {
    for (const name of ["web-allow", "web-deny", "web-deny-address", "web-allow-jwt"]) {
      const del = await mesh.cli(["delete", "authorizationpolicies", name]);
      expect(del.code, del.stderr).toBe(0);
    }
    expect((await mesh.cli(["delete", "requestauthentications", "web-jwt"])).code).toBe(0);
    let reply = "";
    await eventually("every policy gone on node-2", 15_000, async () => {
      reply = await request(client, "GET", "//a/./b;c");
      return statusOf(reply) === 200 ? true : undefined;
    });
    expect(statusOf(await request(other, "GET", "/admin"))).toBe(200);
    expect(statusOf(reply)).toBe(200);
    expect(reply).toContain('"path":"//a/./b;c"');
  });
});
