import { describe, expect, it } from "vitest";
import { MemoryStore, StoreInvalidObjectError, StoreUnavailableError } from "./memory-store.ts";
import { StoreAlreadyExistsError, StoreConflictError, StoreNotFoundError, type WatchEvent } from "./store.ts";
import { serviceAt } from "./store-test-objects.fixture.ts";

const key = (name: string, namespace = "default") => ({ plural: "services", namespace, name });

describe("MemoryStore", () => {
  it("stamps uid, creationTimestamp, generation 1 and the next resourceVersion on create", async () => {
    const store = new MemoryStore();
    const a = await store.create(serviceAt("default", "a", 1));
    const b = await store.create(serviceAt("default", "b", 2));
    expect(a.metadata).toMatchObject({ generation: 1, resourceVersion: "1" });
    expect(a.metadata.uid).toMatch(/^[0-9a-f-]{36}$/);
    expect(Date.parse(a.metadata.creationTimestamp)).not.toBeNaN();
    expect(b.metadata.resourceVersion).toBe("2");
    expect(b.metadata.uid).not.toBe(a.metadata.uid);
    expect(store.resourceVersion()).toBe("2");
  });

  it("bumps generation when the spec changes, not on metadata or status updates", async () => {
    const store = new MemoryStore();
    const created = await store.create(serviceAt("default", "a", 1));
    const relabelled = await store.update({ ...created, metadata: { ...created.metadata, labels: { x: "y" } } });
    expect(relabelled.metadata.generation).toBe(1);
    const withStatus = await store.update({ ...relabelled, status: { agentsApplied: 2, agentsTotal: 3 } });
    expect(withStatus.metadata.generation).toBe(1);
    const respecced = await store.update({ ...withStatus, spec: serviceAt("default", "a", 2).spec });
    expect(respecced.metadata.generation).toBe(2);
    expect(respecced.metadata.resourceVersion).toBe("4");
  });

  it("keeps server-owned identity fields whatever an update carries", async () => {
    const store = new MemoryStore();
    const created = await store.create(serviceAt("default", "a", 1));
    const forged = { ...created.metadata, uid: "forged", creationTimestamp: "1970-01-01T00:00:00Z", generation: 99 };
    const updated = await store.update({ ...created, metadata: forged });
    expect(updated.metadata).toMatchObject({
      uid: created.metadata.uid,
      creationTimestamp: created.metadata.creationTimestamp,
      generation: 1,
    });
  });

  it("refuses a duplicate create, a missing object and a stale resourceVersion", async () => {
    const store = new MemoryStore();
    const created = await store.create(serviceAt("default", "a", 1));
    await expect(store.create(serviceAt("default", "a", 1))).rejects.toBeInstanceOf(StoreAlreadyExistsError);
    await expect(store.update(serviceAt("default", "nope", 1))).rejects.toBeInstanceOf(StoreNotFoundError);
    await expect(store.delete(key("nope"))).rejects.toBeInstanceOf(StoreNotFoundError);
    await store.update(serviceAt("default", "a", 2), created.metadata.resourceVersion);
    await expect(store.update(serviceAt("default", "a", 3), created.metadata.resourceVersion)).rejects.toBeInstanceOf(
      StoreConflictError,
    );
    await expect(store.delete(key("a"), created.metadata.resourceVersion)).rejects.toBeInstanceOf(StoreConflictError);
    expect(store.resourceVersion()).toBe("2");
  });

  it("refuses an object its kind's schema rejects, without consuming a resourceVersion", async () => {
    const store = new MemoryStore();
    const bad = serviceAt("default", "a", 1);
    await expect(store.create({ ...bad, spec: { ...(bad.spec as object), ports: [] } })).rejects.toBeInstanceOf(
      StoreInvalidObjectError,
    );
    await expect(store.create({ ...bad, kind: "Gadget" })).rejects.toBeInstanceOf(StoreInvalidObjectError);
    // A kind is known by its group too.
    await expect(store.create({ ...bad, apiVersion: "gateway.networking.k8s.io/v1" })).rejects.toThrow(
      /unknown kind "Service" in "gateway.networking.k8s.io\/v1"/,
    );
    expect(store.resourceVersion()).toBe("0");
    expect(store.list("services")).toEqual([]);
  });

  it("lists sorted by namespace then name, optionally in one namespace", async () => {
    const store = new MemoryStore();
    for (const [ns, name] of [
      ["b", "x"],
      ["a", "y"],
      ["a", "x"],
    ] as const) {
      await store.create(serviceAt(ns, name, 1));
    }
    const names = (ns?: string) => store.list("services", ns).map((o) => `${o.metadata.namespace}/${o.metadata.name}`);
    expect(names()).toEqual(["a/x", "a/y", "b/x"]);
    expect(names("b")).toEqual(["b/x"]);
    expect(store.list("unknown")).toEqual([]);
  });

  it("hands out frozen objects, so no reader can change the store behind its back", async () => {
    const store = new MemoryStore();
    await store.create(serviceAt("default", "a", 1));
    const obj = store.get(key("a"))!;
    expect(() => {
      (obj.metadata as { name: string }).name = "b";
    }).toThrow(TypeError);
  });

  it("announces every change in order to watchers, until they unsubscribe", async () => {
    const store = new MemoryStore();
    const seen: string[] = [];
    const unsubscribe = store.watch((e: WatchEvent) =>
      seen.push(`${e.type} ${e.object.metadata.name} ${e.object.metadata.resourceVersion}`),
    );
    await store.create(serviceAt("default", "a", 1));
    await store.update(serviceAt("default", "a", 2));
    await store.delete(key("a"));
    unsubscribe();
    await store.create(serviceAt("default", "b", 1));
    expect(seen).toEqual(["ADDED a 1", "MODIFIED a 2", "DELETED a 3"]);
  });

  it("refuses writes once closed", async () => {
    const store = new MemoryStore();
    await store.close();
    await expect(store.create(serviceAt("default", "a", 1))).rejects.toBeInstanceOf(StoreUnavailableError);
  });
});
