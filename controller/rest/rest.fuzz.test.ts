// Fuzzing REST input: the JSON body reader (http-io.ts), JSON merge patch (merge-patch.ts) and the
// validation of objects of every kind through their schemas (KindHandler over a MemoryStore).

import type { IncomingMessage } from "node:http";
import { Readable } from "node:stream";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { KINDS, kindOf, objectSchema } from "../../api/resources.ts";
import { fuzzParams, mutated, nestedJson } from "../../test/fuzz/fuzz.ts";
import { REST_SEEDS } from "../../test/fuzz/seeds.ts";
import { MemoryStore } from "../store/memory-store.ts";
import { RestError, toRestError } from "./errors.ts";
import { isPlainObject, MAX_JSON_DEPTH, MERGE_PATCH_TYPE, readJsonObject } from "./http-io.ts";
import { KindHandler } from "./kind-handler.ts";
import { applyMergePatch } from "./merge-patch.ts";
import { causesOf } from "./validation.ts";

function depth(value: unknown): number {
  if (typeof value !== "object" || value === null) return 0;
  return 1 + Math.max(0, ...Object.values(value).map(depth));
}

function deepFreeze<T>(value: T): T {
  if (typeof value === "object" && value !== null) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}

/** JSON values with the keys that trip up naive object code. */
const trickyJson = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    fc.jsonValue({ maxDepth: 0 }),
    fc.array(tie("value"), { maxLength: 3 }),
    tie("object"),
  ),
  object: fc
    .array(
      fc.tuple(
        fc.oneof(fc.string({ maxLength: 4 }), fc.constantFrom("__proto__", "constructor", "prototype", "a", "b")),
        fc.oneof(fc.constant(null), tie("value")),
      ),
      { maxLength: 4 },
    )
    .map((entries) =>
      JSON.parse(`{${entries.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(",")}}`),
    ),
}));
const json = trickyJson.value;

const body = fc.oneof(
  json.map((v) => Buffer.from(JSON.stringify(v) ?? "")),
  fc
    .constantFrom(...REST_SEEDS)
    .chain((s) => mutated(s))
    .map((v) => Buffer.from(JSON.stringify(v) ?? "")),
  fc.string().map((s) => Buffer.from(s)),
  fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a)),
  fc.integer({ min: MAX_JSON_DEPTH - 2, max: 20_000 }).map((d) => Buffer.from(`{"a":${nestedJson(d)}}`)),
  fc.integer({ min: MAX_JSON_DEPTH - 2, max: 20_000 }).map((d) => Buffer.from(nestedJson(d, true))),
);

function request(bytes: Buffer, headers: Record<string, string>): IncomingMessage {
  const req = Readable.from([bytes]) as unknown as IncomingMessage;
  req.headers = headers;
  return req;
}

describe("REST body reading (fuzz)", () => {
  it("readJsonObject: a plain object no deeper than the limit, or a 400, 413 or 415", async () => {
    await fc.assert(
      fc.asyncProperty(
        body,
        fc.constantFrom("application/json", "Application/JSON; charset=utf-8", MERGE_PATCH_TYPE, "text/yaml", ""),
        fc.constantFrom("application/json", MERGE_PATCH_TYPE),
        fc.oneof(fc.constant(1024 * 1024), fc.integer({ min: 0, max: 200 })),
        async (bytes, contentType, wanted, limit) => {
          const req = request(bytes, contentType ? { "content-type": contentType } : {});
          try {
            const value = await readJsonObject(req, wanted, limit);
            expect(isPlainObject(value)).toBe(true);
            expect(depth(value)).toBeLessThanOrEqual(MAX_JSON_DEPTH);
            expect(bytes.length).toBeLessThanOrEqual(limit);
          } catch (err) {
            expect(err).toBeInstanceOf(RestError);
            expect(["BadRequest", "RequestEntityTooLarge", "UnsupportedMediaType"]).toContain(
              (err as RestError).reason,
            );
          }
        },
      ),
      fuzzParams(500, 0.2),
    );
  });
});

describe("JSON merge patch (fuzz)", () => {
  it("never modifies its inputs, and the patched keys end as RFC 7386 says", () => {
    fc.assert(
      fc.property(json, json, (target, patch) => {
        const before = JSON.stringify([target, patch]);
        const result = applyMergePatch(deepFreeze(target), deepFreeze(patch));
        expect(JSON.stringify([target, patch])).toBe(before);
        if (!isPlainObject(patch)) {
          expect(result).toBe(patch);
          return;
        }
        expect(isPlainObject(result)).toBe(true);
        const r = result as Record<string, unknown>;
        for (const [k, v] of Object.entries(patch)) {
          if (v === null) expect(Object.hasOwn(r, k)).toBe(false);
          else if (!isPlainObject(v)) expect(r[k]).toEqual(v);
          else expect(Object.hasOwn(r, k)).toBe(true);
        }
        if (isPlainObject(target)) {
          for (const [k, v] of Object.entries(target)) if (!Object.hasOwn(patch, k)) expect(r[k]).toBe(v);
        }
      }),
      fuzzParams(2000),
    );
  });

  it("is idempotent, and a '__proto__' key stays data (no prototype is touched)", () => {
    fc.assert(
      fc.property(json, json, (target, patch) => {
        const once = applyMergePatch(target, patch);
        expect(applyMergePatch(once, patch)).toEqual(once);
        expect(({} as Record<string, unknown>).x).toBeUndefined();
        if (isPlainObject(once)) expect(Object.getPrototypeOf(once)).toBe(Object.prototype);
        expect(depth(once)).toBeLessThanOrEqual(Math.max(depth(target), depth(patch)));
      }),
      fuzzParams(2000),
    );
  });
});

const handlers = new Map(KINDS.map((k) => [k.kind, k]));

/** A fresh store with the seed of each kind, and the handler of `kind` over it. */
async function storeWithSeeds(): Promise<{ store: MemoryStore; handler: (kind: string) => KindHandler }> {
  const store = new MemoryStore();
  for (const seed of REST_SEEDS) {
    const kind = kindOf(seed)!;
    await new KindHandler(kind, store).create({ namespace: "default" }, structuredClone(seed)).catch(() => {});
  }
  return { store, handler: (kind) => new KindHandler(handlers.get(kind) ?? KINDS[0]!, store) };
}

const operation = fc.record({
  seed: fc.constantFrom(...REST_SEEDS),
  verb: fc.constantFrom("create", "replace", "patch"),
  body: fc.oneof(
    fc.constantFrom(...REST_SEEDS).chain((s) => mutated(s)),
    json,
  ),
  kindOfHandler: fc.constantFrom(...KINDS.map((k) => k.kind)),
});

describe("REST validation of every kind (fuzz)", () => {
  it("schemas and causes: any input parses or gives causes with field paths, never a throw", () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...KINDS),
        fc.oneof(
          fc.constantFrom(...REST_SEEDS).chain((s) => mutated(s, 4)),
          json,
        ),
        (kind, input) => {
          const schema = objectSchema(kind);
          const parsed = schema.safeParse(input);
          if (parsed.success) return;
          const causes = causesOf(parsed.error.issues, input, schema);
          expect(causes.length).toBeGreaterThan(0);
          for (const c of causes) {
            expect(typeof c.field).toBe("string");
            expect(typeof c.message).toBe("string");
            expect(c.reason).toMatch(/^Field/);
          }
        },
      ),
      fuzzParams(1000, 0.2),
    );
  });

  it("create, replace, patch with any body: the object, or a Kubernetes error that is not internal", async () => {
    await fc.assert(
      fc.asyncProperty(operation, async ({ seed, verb, body, kindOfHandler }) => {
        const { handler } = await storeWithSeeds();
        const h = handler(kindOfHandler);
        const name = (seed.metadata as { name: string }).name;
        const target = verb === "create" ? { namespace: "default" } : { namespace: "default", name };
        const input = (isPlainObject(body) ? body : { body }) as Record<string, unknown>;
        try {
          const stored = await (verb === "create"
            ? h.create(target, input)
            : verb === "replace"
              ? h.replace(target, input)
              : h.patch(target, input));
          // What was stored is valid as it is: read back and written again unchanged, it is accepted.
          const again = await h.replace(
            { namespace: "default", name: stored.metadata.name },
            structuredClone(stored) as unknown as Record<string, unknown>,
          );
          expect(again.spec).toEqual(stored.spec);
          expect(objectSchema(h.kind).safeParse(JSON.parse(JSON.stringify(again))).success).toBe(true);
        } catch (err) {
          const e = toRestError(err);
          expect(e.reason).not.toBe("InternalError");
        }
      }),
      fuzzParams(300, 0.05),
    );
  });

  it("an empty merge patch changes no spec", async () => {
    const { handler } = await storeWithSeeds();
    for (const seed of REST_SEEDS) {
      const h = handler(seed.kind as string);
      const name = (seed.metadata as { name: string }).name;
      const before = h.get({ namespace: "default", name });
      const after = await h.patch({ namespace: "default", name }, {});
      expect(after.spec).toEqual(before.spec);
    }
  });
});
