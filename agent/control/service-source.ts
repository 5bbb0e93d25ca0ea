// Where the service table comes from: a static JSON file, re-read on SIGHUP, or the controller's
// configuration stream (controller-client.ts), which serves its cache until the controller answers.

import { createHash } from "node:crypto";
import { type ServiceTable, validateServiceTable } from "../../api/services.ts";
import { readJsonFile } from "../sys/files.ts";

/** Where a table came from; the table in force carries it, so /readyz and /metrics say one thing. */
export type ConfigSource = "file" | "controller" | "cache" | "none";

export interface VersionedTable {
  version: string;
  table: ServiceTable;
  source: ConfigSource;
}

export class ServiceTableError extends Error {}

export function loadServiceFile(path: string): VersionedTable {
  const { text, value: data } = readJsonFile(path, (message) => new ServiceTableError(message))!;
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
