// Keeps the current service table: rebuilds it (pure builder) when the store or the agents'
// pods change, folding bursts of changes into one rebuild per `debounceMs`, and tells the agent
// sessions a new table exists. Sessions pull the update for their own base (see agent-session.ts).

import type { Logger } from "pino";
import type { ControllerMessage } from "../../api/agent-service.ts";
import { KINDS, type KindInfo, type Resource, type ServiceSpec } from "../../api/resources.ts";
import { TRAFFIC_KINDS } from "../../api/traffic.ts";
import type { Store } from "../store/store.ts";
import type { AgentRegistry } from "./agent-registry.ts";
import { diffTables } from "./config-diff.ts";
import type { PropagationTracker } from "./propagation.ts";
import { buildServiceTable, type ConfigTable } from "./service-table.ts";
import { formatVersion } from "./version.ts";

const SERVICE_KIND = KINDS.find((k) => k.kind === "Service")!;
const TRAFFIC_KIND_INFOS = KINDS.filter((k) => Object.hasOwn(TRAFFIC_KINDS, k.kind));

export interface PublisherOptions {
  store: Store;
  agents: AgentRegistry;
  tracker: PropagationTracker;
  /** Changes within this window after the first one go out as one table. */
  debounceMs: number;
  /** No table is published before this delay, so that agents reconnecting to a restarted
   * controller report their pods before anyone receives a table without them. */
  startupGraceMs: number;
  /** Wall-clock milliseconds (sub-millisecond precision helps the propagation histogram). */
  now: () => number;
  log: Logger;
}

export class ConfigPublisher {
  private readonly opts: PublisherOptions;
  private table: ConfigTable | undefined;
  private published = false;
  private endpointsGeneration = 0;
  private topologyDirty = false;
  private pendingWrites: number[] = [];
  private rebuildTimer: NodeJS.Timeout | undefined;
  private graceTimer: NodeJS.Timeout | undefined;
  private unwatch: (() => void) | undefined;
  private readonly listeners = new Set<() => void>();
  /**
   * Messages taking an agent to the current table, by base version ("" = full). Agents at the
   * same base share one message object, which the server encodes once for all of them.
   */
  private messages = new Map<string, ControllerMessage>();

  constructor(opts: PublisherOptions) {
    this.opts = opts;
  }

  start(): void {
    this.unwatch = this.opts.store.watch(() => this.storeChanged());
    this.rebuild();
    this.graceTimer = setTimeout(() => {
      this.published = true;
      this.rebuild();
    }, this.opts.startupGraceMs);
  }

  stop(): void {
    this.unwatch?.();
    clearTimeout(this.rebuildTimer);
    clearTimeout(this.graceTimer);
  }

  /** The table agents should converge to; undefined during the start-up grace. */
  current(): ConfigTable | undefined {
    return this.published ? this.table : undefined;
  }

  /** The Config taking an agent from `base` (undefined: nothing) to the current table. Do not mutate. */
  messageFrom(base: ConfigTable | undefined): ControllerMessage {
    const cacheKey = base?.version ?? "";
    let message = this.messages.get(cacheKey);
    if (!message) {
      message = { kind: "config", config: diffTables(base, this.table!) };
      this.messages.set(cacheKey, message);
    }
    return message;
  }

  onTable(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private storeChanged(): void {
    this.pendingWrites.push(this.opts.now());
    this.schedule();
  }

  /** The agents' pods or the node set changed. */
  topologyChanged(): void {
    this.topologyDirty = true;
    this.schedule();
  }

  private schedule(): void {
    this.rebuildTimer ??= setTimeout(() => {
      this.rebuildTimer = undefined;
      this.rebuild();
    }, this.opts.debounceMs);
  }

  private rebuild(): void {
    const { store, agents, tracker } = this.opts;
    if (this.topologyDirty) this.endpointsGeneration++;
    this.topologyDirty = false;
    const table = buildServiceTable({
      version: formatVersion(store.resourceVersion(), this.endpointsGeneration),
      services: this.valid(SERVICE_KIND) as Resource<ServiceSpec>[],
      traffic: TRAFFIC_KIND_INFOS.flatMap((kind) => this.valid(kind)),
      pods: agents.pods(),
      nodes: agents.peers(),
    });
    tracker.recordTable(table, this.pendingWrites);
    this.pendingWrites = [];
    this.table = table;
    this.messages = new Map();
    if (this.published) for (const listener of this.listeners) listener();
  }

  /**
   * The kind's objects with their specs' defaults filled in. Objects are validated on write; one
   * that is not valid anyway is left out, not fatal.
   */
  private valid(kind: KindInfo): Resource[] {
    const objects: Resource[] = [];
    for (const resource of this.opts.store.list(kind.plural)) {
      const spec = kind.spec.safeParse(resource.spec);
      if (spec.success) objects.push({ ...resource, spec: spec.data });
      else this.opts.log.error({ object: resource.metadata, err: spec.error.message }, `invalid ${kind.kind} skipped`);
    }
    return objects;
  }
}
