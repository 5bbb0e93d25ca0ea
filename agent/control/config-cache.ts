// The last configuration this agent ACKed, kept on disk so that an agent started while the
// controller is unreachable serves what it served before (static stability).

import type { Peer } from "../../api/agent-service.ts";
import { type ServiceTable, validateServiceTable } from "../../api/services.ts";
import { readJsonFile, writeFileAtomic } from "../sys/files.ts";

export interface CachedConfig {
  version: string;
  /** The controller it came from, for humans reading the file. */
  controller: string;
  savedAt: string;
  table: ServiceTable;
  peers: Peer[];
}

export class ConfigCacheError extends Error {}

export function saveConfigCache(path: string, cached: CachedConfig): void {
  writeFileAtomic(path, `${JSON.stringify(cached)}\n`);
}

/** undefined when there is no cache yet; throws ConfigCacheError when it is unusable. */
export function loadConfigCache(path: string): CachedConfig | undefined {
  const file = readJsonFile(path, (message) => new ConfigCacheError(message), { optional: true });
  if (!file) return undefined;
  const cached = file.value as CachedConfig;
  const errors = validateServiceTable(cached?.table);
  if (typeof cached?.version !== "string" || !Array.isArray(cached.peers) || errors.length > 0) {
    throw new ConfigCacheError(`${path} is not a valid config cache`);
  }
  return cached;
}
