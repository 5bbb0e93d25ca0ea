// Where the service table comes from. Today: a static JSON file, re-read on SIGHUP; the
// controller's configuration stream will be another source behind the same `onTable` callback.

import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { type ServiceTable, validateServiceTable } from "../../api/services.ts";

export interface VersionedTable {
  version: string;
  table: ServiceTable;
}

export class ServiceTableError extends Error {}

export function loadServiceFile(path: string): VersionedTable {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new ServiceTableError(`cannot read ${path}: ${(err as Error).message}`);
  }
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    throw new ServiceTableError(`${path} is not JSON: ${(err as Error).message}`);
  }
  const errors = validateServiceTable(data);
  if (errors.length > 0) {
    throw new ServiceTableError(`${path} is invalid: ${errors.map((e) => `${e.field}: ${e.message}`).join("; ")}`);
  }
  return {
    version: `file-${createHash("sha256").update(text).digest("hex").slice(0, 12)}`,
    table: data as ServiceTable,
  };
}
