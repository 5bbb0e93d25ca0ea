import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { assertListenAllowed, isLoopbackHost, TokenAuth } from "./auth.ts";
import { startRestServer } from "./rest/server.ts";
import { SERVICES, service, startTestServer, type TestServer } from "./rest/test-server.fixture.ts";
import { MemoryStore } from "./store/memory-store.ts";

const TOKENS = `
# token             role   name
reader-token-123    read   dashboard
writer-token-456    write  ci   # deploys
`;

describe("token file", () => {
  it("parses tokens, roles and names, skipping comments and blank lines", () => {
    const auth = TokenAuth.parse(TOKENS);
    expect(auth.authenticate("Bearer reader-token-123")).toEqual({ name: "dashboard", role: "read" });
    expect(auth.authenticate("bearer writer-token-456")).toEqual({ name: "ci", role: "write" });
    expect(auth.authenticate("Bearer nope")).toBeUndefined();
    expect(auth.authenticate("Basic d3JpdGVyLXRva2VuLTQ1Ng==")).toBeUndefined();
    expect(auth.authenticate(undefined)).toBeUndefined();
  });

  it("reads the tokens from a file", async () => {
    const dir = await mkdtemp(join(tmpdir(), "nodemesh-auth-"));
    try {
      await writeFile(join(dir, "tokens"), TOKENS);
      const auth = await TokenAuth.fromFile(join(dir, "tokens"));
      expect(auth.authenticate("Bearer writer-token-456")?.role).toBe("write");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it.each([
    ["a missing name", "tok read", /tokens:1: expected "TOKEN ROLE NAME"/],
    ["an unknown role", "tok admin root", /tokens:1: role must be read or write, not "admin"/],
    ["a duplicate token", "tok read a\ntok write b", /tokens:2: duplicate token/],
    ["no tokens at all", "# nothing\n", /tokens: no tokens/],
  ])("refuses %s", (_what, text, error) => {
    expect(() => TokenAuth.parse(text)).toThrow(error);
  });
});

describe("listen address without tokens", () => {
  it.each(["127.0.0.1", "127.1.2.3", "::1", "0:0:0:0:0:0:0:1", "localhost", "::ffff:127.0.0.1"])(
    "allows loopback %s",
    (host) => {
      expect(isLoopbackHost(host)).toBe(true);
      expect(() => assertListenAllowed(host, undefined)).not.toThrow();
    },
  );

  it.each(["0.0.0.0", "::", "10.0.0.1", "192.168.1.1", "::2", "example.com"])("refuses %s", (host) => {
    expect(isLoopbackHost(host)).toBe(false);
    expect(() => assertListenAllowed(host, undefined)).toThrow(/without authentication/);
    expect(() => assertListenAllowed(host, TokenAuth.parse(TOKENS))).not.toThrow();
  });

  it("makes the server refuse to start, before it listens", async () => {
    await expect(
      startRestServer({ store: new MemoryStore(), registry: new Registry(), host: "0.0.0.0", port: 0 }),
    ).rejects.toThrow(/refusing to serve the REST API on 0.0.0.0 without authentication/);
  });
});

describe("REST API with tokens", () => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer({ auth: TokenAuth.parse(TOKENS) });
  });
  afterAll(async () => {
    await t.rest.close();
  });

  it("answers 401 without a token or with an unknown one, for reads, writes and unknown paths", async () => {
    for (const [method, path] of [
      ["GET", SERVICES],
      ["POST", SERVICES],
      ["GET", "/no/such/path"],
      ["GET", "/metrics"],
      ["GET", "/openapi/v3"],
    ] as const) {
      const reply = await t.call(method, path, method === "POST" ? { body: service("web") } : {});
      expect(reply.status, `${method} ${path}`).toBe(401);
      expect(reply.body).toMatchObject({ kind: "Status", reason: "Unauthorized", code: 401 });
      expect(reply.headers.get("www-authenticate")).toMatch(/^Bearer/);
    }
    const wrong = await t.call("GET", SERVICES, { token: "guess" });
    expect(wrong.status).toBe(401);
    expect(wrong.body.message).toBe("the bearer token is not valid");
  });

  it("lets a read token read, and answers 403 when it writes; the store stays unchanged", async () => {
    expect((await t.call("GET", SERVICES, { token: "reader-token-123" })).status).toBe(200);
    expect((await t.call("GET", "/metrics", { token: "reader-token-123" })).status).toBe(200);
    const before = t.store.resourceVersion();
    for (const method of ["POST", "PUT", "PATCH", "DELETE"]) {
      const path = method === "POST" ? SERVICES : `${SERVICES}/web`;
      const reply = await t.call(method, path, {
        token: "reader-token-123",
        body: method === "DELETE" ? undefined : service("web"),
      });
      expect(reply.status, method).toBe(403);
      expect(reply.body).toMatchObject({ reason: "Forbidden", code: 403 });
      expect(reply.body.message).toContain("dashboard");
    }
    expect(t.store.resourceVersion()).toBe(before);
  });

  it("lets a write token write", async () => {
    const created = await t.call("POST", SERVICES, { token: "writer-token-456", body: service("web") });
    expect(created.status).toBe(201);
    const deleted = await t.call("DELETE", `${SERVICES}/web`, { token: "writer-token-456" });
    expect(deleted.status).toBe(200);
  });

  it("keeps the health endpoints open", async () => {
    expect((await t.call("GET", "/healthz")).status).toBe(200);
    expect((await t.call("GET", "/readyz")).status).toBe(200);
  });
});
