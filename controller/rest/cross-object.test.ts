// Cross-object validation at write time (controller/config/analysis.ts through the store's
// admission) and the server-side dry run, over a real REST server and store.

import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ObjectStatuses } from "../config/object-status.ts";
import { MemoryStore } from "../store/memory-store.ts";
import { HTTPROUTES, SERVICES, service, startTestServer, type TestServer } from "./test-server.fixture.ts";

let t: TestServer;
let statuses: ObjectStatuses;

beforeEach(async () => {
  const store = new MemoryStore();
  // The table preview stands in for the config publisher: it names the Services the view holds.
  statuses = new ObjectStatuses(
    store,
    () => undefined,
    (view) => ({ agents: ["node-1"], changes: view.list("services").map((s) => `Service ${s.metadata.name}`) }),
  );
  t = await startTestServer({
    store,
    statusFor: (r) => statuses.status(r),
    preview: (change) => statuses.preview(change),
  });
});

afterEach(async () => {
  await t.rest.close();
});

const snapshot = () => JSON.stringify({ rv: t.store.resourceVersion(), objects: t.store.list("services") });

describe("a Service whose VIP:port another Service holds", () => {
  it("is refused with 409 naming both Services and the port; nothing is stored", async () => {
    expect((await t.call("POST", SERVICES, { body: service("web", { vip: "10.96.0.10" }) })).status).toBe(201);
    const before = snapshot();
    const refused = await t.call("POST", SERVICES, {
      body: service("web-b", { vip: "10.96.0.10", ports: [{ port: 443 }, { port: 80 }] }),
    });
    expect(refused.status).toBe(409);
    expect(refused.body).toMatchObject({
      reason: "Conflict",
      message:
        "Service default/web-b conflicts: spec.ports[1].port: VIP:port 10.96.0.10:80 is already Service default/web's",
      details: {
        name: "web-b",
        kind: "Service",
        causes: [
          {
            field: "spec.ports[1].port",
            reason: "FieldValueDuplicate",
            message: "VIP:port 10.96.0.10:80 is already Service default/web's",
          },
        ],
      },
    });
    expect(snapshot()).toBe(before);
  });

  it("is refused on update and patch too, while a Service may keep its own VIP:port", async () => {
    await t.call("POST", SERVICES, { body: service("web", { vip: "10.96.0.10" }) });
    await t.call("POST", SERVICES, { body: service("api", { vip: "10.96.0.11" }) });
    const patched = await t.call("PATCH", `${SERVICES}/api`, { body: { spec: { vip: "10.96.0.10" } } });
    expect(patched.status).toBe(409);
    expect(patched.body.message).toContain("default/web");
    const same = await t.call("PATCH", `${SERVICES}/web`, { body: { spec: { selector: { app: "web2" } } } });
    expect(same.status).toBe(200);
  });

  it("two creates racing for one VIP:port: exactly one is stored", async () => {
    const replies = await Promise.all(
      ["a", "b", "c", "d"].map((name) => t.call("POST", SERVICES, { body: service(name, { vip: "10.96.0.20" }) })),
    );
    expect(replies.map((r) => r.status).sort()).toEqual([201, 409, 409, 409]);
    expect(t.store.list("services")).toHaveLength(1);
  });
});

describe("status conditions from the cross-object checks", () => {
  it("a route to a backend that does not exist is stored, with ResolvedRefs False until it exists", async () => {
    await t.call("POST", SERVICES, { body: service("web") });
    const route = {
      apiVersion: "gateway.networking.k8s.io/v1",
      kind: "HTTPRoute",
      metadata: { name: "split" },
      spec: { parentRefs: [{ name: "web" }], rules: [{ backendRefs: [{ name: "web-v2" }] }] },
    };
    const created = await t.call("POST", HTTPROUTES, { body: route });
    expect(created.status).toBe(201);
    expect(created.body.status.conditions).toEqual([
      expect.objectContaining({ type: "Accepted", status: "True", observedGeneration: 1 }),
      expect.objectContaining({ type: "ResolvedRefs", status: "False", reason: "BackendNotFound" }),
      expect.objectContaining({ type: "RulesReachable", status: "True" }),
    ]);
    await t.call("POST", SERVICES, { body: service("web-v2") });
    const read = await t.call("GET", `${HTTPROUTES}/split`);
    expect(read.body.status.conditions[1]).toMatchObject({ type: "ResolvedRefs", status: "True" });
  });
});

describe("?dryRun=All", () => {
  it("answers what a write would store, with its conditions and table changes, and stores nothing", async () => {
    const before = snapshot();
    const dry = await t.call("POST", `${SERVICES}?dryRun=All`, { body: service("web") });
    expect(dry.status).toBe(201);
    expect(dry.body.metadata).toMatchObject({ name: "web", generation: 1 });
    expect(dry.body.status.conditions).toEqual([expect.objectContaining({ type: "Accepted", status: "True" })]);
    expect(dry.body.status.dryRun).toEqual({ agents: ["node-1"], changes: ["Service web"] });
    expect(snapshot()).toBe(before);
  });

  it("gives the same verdicts as a real write: 422 for an invalid object, 409 for a conflict, 404, stale versions", async () => {
    await t.call("POST", SERVICES, { body: service("web", { vip: "10.96.0.10" }) });
    const before = snapshot();
    const cases: [string, string, unknown][] = [
      ["POST", SERVICES, service("bad", { vip: "not-an-ip" })],
      ["POST", SERVICES, service("web-b", { vip: "10.96.0.10" })],
      ["POST", SERVICES, service("web")],
      ["PUT", `${SERVICES}/nope`, service("nope")],
      ["PUT", `${SERVICES}/web`, { ...service("web"), metadata: { name: "web", resourceVersion: "999" } }],
      ["DELETE", `${SERVICES}/nope`, undefined],
    ];
    for (const [method, path, body] of cases) {
      const dry = await t.call(method, `${path}?dryRun=All`, body === undefined ? {} : { body });
      const real = await t.call(method, path, body === undefined ? {} : { body });
      expect(dry.status, `${method} ${path}`).toBe(real.status);
      expect(dry.body.reason).toBe(real.body.reason);
      expect(dry.body.message).toBe(real.body.message);
      expect(snapshot()).toBe(before);
    }
  });

  it("a dry-run delete answers the object and what would leave the tables", async () => {
    await t.call("POST", SERVICES, { body: service("web") });
    await t.call("POST", SERVICES, { body: service("api") });
    const dry = await t.call("DELETE", `${SERVICES}/web?dryRun=All`);
    expect(dry.status).toBe(200);
    expect(dry.body.status.dryRun.changes).toEqual(["Service api"]);
    expect(t.store.list("services")).toHaveLength(2);
  });

  it("refuses any other dryRun value rather than writing for real", async () => {
    const reply = await t.call("POST", `${SERVICES}?dryRun=true`, { body: service("web") });
    expect(reply.status).toBe(400);
    expect(reply.body.message).toBe('dryRun: the only value is "All" (got "true")');
    expect(t.store.list("services")).toEqual([]);
  });
});
