// A fresh store directory for each test of the calling file, removed after it.

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach } from "vitest";
import { FileStore } from "./file-store.ts";

export interface TempStore {
  /** This test's store directory. */
  dir(): string;
  /** Opens a FileStore on it. */
  open(): Promise<FileStore>;
}

export function useTempStore(): TempStore {
  let dir = "";
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "nodemesh-file-store-"));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  return {
    dir: () => dir,
    open: async () => {
      const store = new FileStore(dir);
      await store.open();
      return store;
    },
  };
}

export const serviceKey = (name: string, namespace = "default") => ({ plural: "services", namespace, name });
