// The embedded default store: one directory, one file per object.
//
//   <dir>/meta.json                                   {"resourceVersion":"42"}: the highest ever assigned
//   <dir>/objects/<plural>/<namespace>/<name>.json    one object ("_cluster" for cluster-scoped kinds)
//   (<dir>/node-bindings.json, beside them, is controller/config/node-bindings.ts's; the store ignores it)
//
// Every file is replaced atomically (temp file, fsync, rename, fsync of the directory): after a
// crash at any instant each file is the old or the new version, never torn, and a write is
// acknowledged only once it is on disk. meta.json is written before each object change, so it is
// never behind an object and resourceVersions never go back, even after deletes and restarts.
// Anything unreadable on open is refused, never skipped: silently dropping objects would delete
// them from every agent at the next snapshot.

import { mkdir, open, readdir, readFile, rename, rm, unlink } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import type { Resource } from "../../api/resources.ts";
import { keyOf, MemoryStore, StoreUnavailableError, storedObjectProblem } from "./memory-store.ts";
import type { ObjectKey, WatchEvent } from "./store.ts";

export class StoreCorruptError extends Error {}

const TEMP_SUFFIX = ".tmp";
const CLUSTER_SCOPE_DIR = "_cluster"; // not a DNS label, so it cannot collide with a namespace

export class FileStore extends MemoryStore {
  readonly #dir: string;
  readonly #metaPath: string;
  readonly #objectsDir: string;
  /** Directories known to exist durably, so each is created (and its parent fsynced) once. */
  readonly #durableDirs = new Set<string>();
  #opened = false;

  constructor(dir: string) {
    super();
    this.#dir = resolve(dir);
    this.#metaPath = join(this.#dir, "meta.json");
    this.#objectsDir = join(this.#dir, "objects");
  }

  override async open(): Promise<void> {
    if (this.#opened) throw new Error(`the store ${this.#dir} is already open`);
    await this.#ensureDurableDir(this.#dir);
    await removeTempFile(`${this.#metaPath}${TEMP_SUFFIX}`);
    const objects = await this.#loadObjects();
    const metaVersion = await this.#loadMetaVersion(objects.length > 0);
    const highest = objects.reduce((max, o) => Math.max(max, Number(o.metadata.resourceVersion)), metaVersion);
    this.load(objects, highest);
    this.#opened = true;
  }

  protected override async persist(event: WatchEvent): Promise<void> {
    if (!this.#opened) throw new StoreUnavailableError("open() the file store before writing to it");
    const resourceVersion = event.object.metadata.resourceVersion;
    await writeFileAtomic(this.#metaPath, `${JSON.stringify({ resourceVersion })}\n`);
    const path = this.#objectPath(keyOf(event.object));
    if (event.type === "DELETED") {
      await unlink(path);
      await fsyncDir(dirname(path));
    } else {
      await this.#ensureDurableDir(dirname(path));
      await writeFileAtomic(path, `${JSON.stringify(event.object, null, 2)}\n`);
    }
  }

  #objectPath(key: ObjectKey): string {
    return join(this.#objectsDir, key.plural, key.namespace || CLUSTER_SCOPE_DIR, `${key.name}.json`);
  }

  async #ensureDurableDir(path: string): Promise<void> {
    if (this.#durableDirs.has(path)) return;
    if (path !== this.#dir && path.startsWith(this.#dir)) await this.#ensureDurableDir(dirname(path));
    try {
      await mkdir(path);
      await fsyncDir(dirname(path)); // the new entry is durable only once its parent is synced
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    this.#durableDirs.add(path);
  }

  async #loadMetaVersion(hasObjects: boolean): Promise<number> {
    let text: string;
    try {
      text = await readFile(this.#metaPath, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
      if (hasObjects) throw this.#corrupt(this.#metaPath, "the file is missing but the store holds objects");
      return 0; // a new store
    }
    let version: unknown;
    try {
      version = (JSON.parse(text) as { resourceVersion?: unknown })?.resourceVersion;
    } catch (err) {
      throw this.#corrupt(this.#metaPath, `not JSON (${(err as Error).message})`);
    }
    if (typeof version !== "string" || !/^\d+$/.test(version)) {
      throw this.#corrupt(this.#metaPath, "resourceVersion is not a decimal string");
    }
    return Number(version);
  }

  /** Reads objects/<plural>/<namespace>/<name>.json, removing temp files left by a crash. */
  async #loadObjects(): Promise<Resource[]> {
    const objects: Resource[] = [];
    for (const pluralDir of await listDir(this.#objectsDir)) {
      if (!pluralDir.isDirectory()) throw this.#corrupt(pluralDir.path, "expected a directory per kind");
      for (const nsDir of await listDir(pluralDir.path)) {
        if (!nsDir.isDirectory()) throw this.#corrupt(nsDir.path, "expected a directory per namespace");
        for (const file of await listDir(nsDir.path)) {
          if (file.name.endsWith(TEMP_SUFFIX)) await removeTempFile(file.path);
          else if (file.name.endsWith(".json")) objects.push(await this.#loadObject(file.path));
        }
      }
    }
    return objects;
  }

  async #loadObject(path: string): Promise<Resource> {
    let obj: Resource;
    try {
      obj = JSON.parse(await readFile(path, "utf8")) as Resource;
    } catch (err) {
      throw this.#corrupt(path, `not JSON (${(err as Error).message})`);
    }
    const problem = storedObjectProblem(obj);
    if (problem) throw this.#corrupt(path, problem);
    // The path is the object's key: a file under the wrong name would shadow or duplicate another.
    const expected = this.#objectPath(keyOf(obj));
    if (expected !== path) throw this.#corrupt(path, `its kind, namespace and name belong at ${expected}`);
    return obj;
  }

  #corrupt(path: string, reason: string): StoreCorruptError {
    return new StoreCorruptError(`the store is corrupt: ${path}: ${reason}; refusing to start`);
  }
}

interface DirEntry {
  name: string;
  path: string;
  isDirectory(): boolean;
}

async function listDir(dir: string): Promise<DirEntry[]> {
  try {
    const entries = await readdir(dir, { withFileTypes: true });
    return entries.map((e) => ({ name: e.name, path: join(dir, e.name), isDirectory: () => e.isDirectory() }));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw err;
  }
}

/** Temp, fsync, rename, fsync the directory: readers and crashes see the old or the new file. */
export async function writeFileAtomic(path: string, data: string): Promise<void> {
  const temp = `${path}${TEMP_SUFFIX}`;
  const handle = await open(temp, "w", 0o600);
  try {
    await handle.writeFile(data, "utf8");
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(temp, path);
  await fsyncDir(dirname(path));
}

async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** A temp file is a write that never completed (never acknowledged): dropping it loses nothing. */
async function removeTempFile(path: string): Promise<void> {
  await rm(path, { force: true });
  await fsyncDir(dirname(path));
}
