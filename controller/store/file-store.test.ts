import { existsSync } from "node:fs";
import { readdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { asNewObject, httpRouteResource, trafficPolicyResource } from "../config/testing/fixtures.ts";
import { FileStore } from "./file-store.ts";
import { serviceAt } from "./store-test-objects.fixture.ts";
import { serviceKey, useTempStore } from "./temp-store.fixture.ts";

const temp = useTempStore();
const openStore = temp.open;
const key = serviceKey;

describe("FileStore", () => {
  it("keeps objects, generations and the resourceVersion across a restart", async () => {
    const first = await openStore();
    await first.create(serviceAt("default", "a", 1));
    await first.create(serviceAt("other", "b", 2));
    const updated = await first.update(serviceAt("default", "a", 3));
    await first.close();

    const second = await openStore();
    expect(second.resourceVersion()).toBe("3");
    expect(second.get(key("a"))).toEqual(updated);
    expect(second.get(key("a"))?.metadata.generation).toBe(2);
    expect(second.list("services").map((o) => o.metadata.name)).toEqual(["a", "b"]);
    await second.close();
  });

  it("keeps each kind in its own directory, the Gateway API group's too", async () => {
    const first = await openStore();
    const route = await first.create(asNewObject(httpRouteResource("web")));
    const policy = await first.create(asNewObject(trafficPolicyResource("web")));
    await first.create(serviceAt("default", "web", 1));
    await first.close();
    expect(existsSync(join(temp.dir(), "objects", "httproutes", "default", "web.json"))).toBe(true);

    const second = await openStore();
    expect(second.get({ plural: "httproutes", namespace: "default", name: "web" })).toEqual(route);
    expect(second.get({ plural: "trafficpolicies", namespace: "default", name: "web" })).toEqual(policy);
    expect(second.list("services").map((o) => o.kind)).toEqual(["Service"]);
    await second.close();
  });

  it("never hands out a resourceVersion again after deletes and a restart", async () => {
    const first = await openStore();
    await first.create(serviceAt("default", "a", 1));
    await first.create(serviceAt("default", "b", 2));
    await first.delete(key("b"));
    await first.delete(key("a"));
    expect(first.resourceVersion()).toBe("4");
    await first.close();

    const second = await openStore();
    expect(second.list("services")).toEqual([]);
    expect(second.resourceVersion()).toBe("4");
    const again = await second.create(serviceAt("default", "a", 5));
    expect(again.metadata.resourceVersion).toBe("5");
    await second.close();
  });

  it("refuses to open a store with a corrupt object file, naming the file", async () => {
    const store = await openStore();
    await store.create(serviceAt("default", "a", 1));
    await store.create(serviceAt("default", "b", 2));
    await store.close();
    const bad = join(temp.dir(), "objects", "services", "default", "b.json");
    await writeFile(bad, '{"apiVersion": "nodemesh.io/v1alpha1", "kind": "Serv');

    const reopened = new FileStore(temp.dir());
    await expect(reopened.open()).rejects.toThrow(`the store is corrupt: ${bad}: not JSON`);
    await expect(reopened.open()).rejects.toThrow(/refusing to start/);
    // Refusing must not repair by deleting: the bad file is still there for a human to look at.
    expect(existsSync(bad)).toBe(true);
  });

  it("refuses an object that parses but fails its kind's schema", async () => {
    const store = await openStore();
    const stored = await store.create(serviceAt("default", "a", 1));
    await store.close();
    const path = join(temp.dir(), "objects", "services", "default", "a.json");
    await writeFile(path, JSON.stringify({ ...stored, spec: { ...(stored.spec as object), ports: [] } }));

    await expect(new FileStore(temp.dir()).open()).rejects.toThrow(
      new RegExp(`the store is corrupt: ${path}: spec.ports: .*; refusing to start`),
    );
  });

  it("refuses an object stored under another object's name", async () => {
    const store = await openStore();
    const stored = await store.create(serviceAt("default", "a", 1));
    await store.close();
    const path = join(temp.dir(), "objects", "services", "default", "z.json");
    await writeFile(path, JSON.stringify(stored));

    await expect(new FileStore(temp.dir()).open()).rejects.toThrow(`the store is corrupt: ${path}`);
  });

  it("refuses a corrupt meta.json, and a missing one when objects exist", async () => {
    const store = await openStore();
    await store.create(serviceAt("default", "a", 1));
    await store.close();
    const meta = join(temp.dir(), "meta.json");

    await writeFile(meta, "");
    await expect(new FileStore(temp.dir()).open()).rejects.toThrow(`the store is corrupt: ${meta}`);
    await rm(meta);
    await expect(new FileStore(temp.dir()).open()).rejects.toThrow(
      `the store is corrupt: ${meta}: the file is missing`,
    );
  });

  it("removes temp files left by a crash and ignores their content", async () => {
    const store = await openStore();
    await store.create(serviceAt("default", "a", 1));
    await store.close();
    const nsDir = join(temp.dir(), "objects", "services", "default");
    await writeFile(join(nsDir, "a.json.tmp"), '{"torn');
    await writeFile(join(nsDir, "ghost.json.tmp"), JSON.stringify(serviceAt("default", "ghost", 9)));
    await writeFile(join(temp.dir(), "meta.json.tmp"), '{"resourceVersion":"99"}');

    const reopened = await openStore();
    expect(reopened.list("services").map((o) => o.metadata.name)).toEqual(["a"]);
    expect(reopened.resourceVersion()).toBe("1");
    expect(await readdir(nsDir)).toEqual(["a.json"]);
    expect(existsSync(join(temp.dir(), "meta.json.tmp"))).toBe(false);
    await reopened.close();
  });

  it("writes pretty JSON a human can read and repair", async () => {
    const store = await openStore();
    await store.create(serviceAt("default", "a", 1));
    await store.close();
    const text = await readFile(join(temp.dir(), "objects", "services", "default", "a.json"), "utf8");
    expect(text).toContain('\n  "kind": "Service",\n');
    expect(JSON.parse(await readFile(join(temp.dir(), "meta.json"), "utf8"))).toEqual({ resourceVersion: "1" });
  });

  it("serializes concurrent writes in call order", async () => {
    const store = await openStore();
    const writes = Array.from({ length: 20 }, (_, i) => store.create(serviceAt("default", `s${i}`, i)));
    const stored = await Promise.all(writes);
    expect(stored.map((o) => o.metadata.resourceVersion)).toEqual(stored.map((_, i) => String(i + 1)));
    await store.close();
  });
});
