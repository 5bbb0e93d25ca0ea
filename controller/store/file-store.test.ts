import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { asNewObject, httpRouteResource, trafficPolicyResource } from "../config/testing/fixtures.ts";
import { FileStore } from "./file-store.ts";
import { contentOf, serviceAt } from "./store-test-objects.fixture.ts";

const WRITER = fileURLToPath(new URL("./file-store-writer.fixture.ts", import.meta.url));

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "nodemesh-file-store-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function openStore(): Promise<FileStore> {
  const store = new FileStore(dir);
  await store.open();
  return store;
}

const key = (name: string, namespace = "default") => ({ plural: "services", namespace, name });

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
    expect(existsSync(join(dir, "objects", "httproutes", "default", "web.json"))).toBe(true);

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
    const bad = join(dir, "objects", "services", "default", "b.json");
    await writeFile(bad, '{"apiVersion": "nodemesh.io/v1alpha1", "kind": "Serv');

    const reopened = new FileStore(dir);
    await expect(reopened.open()).rejects.toThrow(`the store is corrupt: ${bad}: not JSON`);
    await expect(reopened.open()).rejects.toThrow(/refusing to start/);
    // Refusing must not repair by deleting: the bad file is still there for a human to look at.
    expect(existsSync(bad)).toBe(true);
  });

  it("refuses an object that parses but fails its kind's schema", async () => {
    const store = await openStore();
    const stored = await store.create(serviceAt("default", "a", 1));
    await store.close();
    const path = join(dir, "objects", "services", "default", "a.json");
    await writeFile(path, JSON.stringify({ ...stored, spec: { ...(stored.spec as object), ports: [] } }));

    await expect(new FileStore(dir).open()).rejects.toThrow(
      new RegExp(`the store is corrupt: ${path}: spec.ports: .*; refusing to start`),
    );
  });

  it("refuses an object stored under another object's name", async () => {
    const store = await openStore();
    const stored = await store.create(serviceAt("default", "a", 1));
    await store.close();
    const path = join(dir, "objects", "services", "default", "z.json");
    await writeFile(path, JSON.stringify(stored));

    await expect(new FileStore(dir).open()).rejects.toThrow(`the store is corrupt: ${path}`);
  });

  it("refuses a corrupt meta.json, and a missing one when objects exist", async () => {
    const store = await openStore();
    await store.create(serviceAt("default", "a", 1));
    await store.close();
    const meta = join(dir, "meta.json");

    await writeFile(meta, "");
    await expect(new FileStore(dir).open()).rejects.toThrow(`the store is corrupt: ${meta}`);
    await rm(meta);
    await expect(new FileStore(dir).open()).rejects.toThrow(`the store is corrupt: ${meta}: the file is missing`);
  });

  it("removes temp files left by a crash and ignores their content", async () => {
    const store = await openStore();
    await store.create(serviceAt("default", "a", 1));
    await store.close();
    const nsDir = join(dir, "objects", "services", "default");
    await writeFile(join(nsDir, "a.json.tmp"), '{"torn');
    await writeFile(join(nsDir, "ghost.json.tmp"), JSON.stringify(serviceAt("default", "ghost", 9)));
    await writeFile(join(dir, "meta.json.tmp"), '{"resourceVersion":"99"}');

    const reopened = await openStore();
    expect(reopened.list("services").map((o) => o.metadata.name)).toEqual(["a"]);
    expect(reopened.resourceVersion()).toBe("1");
    expect(await readdir(nsDir)).toEqual(["a.json"]);
    expect(existsSync(join(dir, "meta.json.tmp"))).toBe(false);
    await reopened.close();
  });

  it("writes pretty JSON a human can read and repair", async () => {
    const store = await openStore();
    await store.create(serviceAt("default", "a", 1));
    await store.close();
    const text = await readFile(join(dir, "objects", "services", "default", "a.json"), "utf8");
    expect(text).toContain('\n  "kind": "Service",\n');
    expect(JSON.parse(await readFile(join(dir, "meta.json"), "utf8"))).toEqual({ resourceVersion: "1" });
  });

  it("serializes concurrent writes in call order", async () => {
    const store = await openStore();
    const writes = Array.from({ length: 20 }, (_, i) => store.create(serviceAt("default", `s${i}`, i)));
    const stored = await Promise.all(writes);
    expect(stored.map((o) => o.metadata.resourceVersion)).toEqual(stored.map((_, i) => String(i + 1)));
    await store.close();
  });
});

interface Ack {
  namespace: string;
  name: string;
  seq: number;
  resourceVersion: string;
}

/** Runs the writer until `killAfterMs` after it is ready, then SIGKILLs it; returns its acknowledged writes. */
async function runWriterAndKill(round: number, killAfterMs: number): Promise<Ack[]> {
  const child: ChildProcess = spawn(process.execPath, [WRITER, dir, String(round)], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  const acks: Ack[] = [];
  let pending = "";
  let stderr = "";
  let killTimer: NodeJS.Timeout | undefined;
  child.stderr!.on("data", (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  child.stdout!.on("data", (chunk: Buffer) => {
    const lines = (pending + chunk.toString()).split("\n");
    pending = lines.pop()!; // a line cut by the kill was never fully acknowledged
    for (const line of lines) {
      const msg = JSON.parse(line) as Ack | { ready: true };
      if ("ready" in msg) killTimer = setTimeout(() => child.kill("SIGKILL"), killAfterMs);
      else acks.push(msg);
    }
  });
  // A writer that fails by itself (not our kill) must fail the test, never hang it.
  const exit = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    const deadline = setTimeout(() => child.kill("SIGKILL"), 10_000);
    child.once("exit", (code, signal) => {
      clearTimeout(deadline);
      clearTimeout(killTimer);
      resolve({ code, signal });
    });
  });
  if (exit.signal !== "SIGKILL" || killTimer === undefined) {
    throw new Error(`the writer ended on its own (${exit.code ?? exit.signal}): ${stderr}`);
  }
  return acks;
}

describe("FileStore under kill -9", () => {
  it("keeps every acknowledged write and always opens", { timeout: 120_000 }, async () => {
    const ROUNDS = 20;
    /** Per object, the last acknowledged seq: the store may hold that one or a later unacknowledged one. */
    const acked = new Map<string, Ack>();
    let highestAckedVersion = 0;
    let totalAcks = 0;

    for (let round = 0; round < ROUNDS; round++) {
      const acks = await runWriterAndKill(round, 20 + Math.floor(Math.random() * 600));
      totalAcks += acks.length;
      for (const ack of acks) {
        acked.set(`${ack.namespace}/${ack.name}`, ack);
        highestAckedVersion = Math.max(highestAckedVersion, Number(ack.resourceVersion));
      }

      const store = await openStore();
      expect(Number(store.resourceVersion())).toBeGreaterThanOrEqual(highestAckedVersion);
      for (const ack of acked.values()) {
        const obj = store.get(key(ack.name, ack.namespace));
        expect(obj, `${ack.namespace}/${ack.name} was acknowledged`).toBeDefined();
        const seq = Number(obj!.metadata.labels?.["seq"]);
        expect(seq).toBeGreaterThanOrEqual(ack.seq);
        expect(contentOf(obj!)).toEqual(contentOf(serviceAt(ack.namespace, ack.name, seq)));
      }
      await store.close();
    }
    // The loop proves something only if the writer got writes through before being killed.
    expect(totalAcks).toBeGreaterThan(ROUNDS);
  });
});
