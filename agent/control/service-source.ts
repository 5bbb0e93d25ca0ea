// Where the service table comes from: a static JSON file, re-read on SIGHUP, or the controller's
// configuration stream (controller-client.ts), which serves its cache until the controller answers.

import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { type ServiceTable, validateServiceTable } from "../../api/services.ts";

/** Where a table came from; the table in force carries it, so /readyz and /metrics say one thing. */
export type ConfigSource = "file" | "controller" | "cache" | "none";

export interface VersionedTable {
  version: string;
  table: ServiceTable;
  source: ConfigSource;
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
    source: "file",
  };
}
