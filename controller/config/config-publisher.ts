// Keeps the current service table: rebuilds it (pure builder) when the store or the agents'
// pods change, folding bursts of changes into one rebuild (`debounceMs` of quiet), and tells the agent
// sessions a new table exists. Sessions pull the update for their own base (see agent-session.ts).

import type { Logger } from "pino";
import {
  COMPRESS_CONFIGS_FROM_BYTES,
  type ConfigEncoding,
  compressConfigMessage,
} from "../../api/config-compression.ts";
import { KINDS, type KindInfo, type Resource, type ServiceSpec } from "../../api/resources.ts";
import { TRAFFIC_KINDS } from "../../api/traffic.ts";
import type { Store, WatchEvent } from "../store/store.ts";
import type { AgentRegistry } from "./agent-registry.ts";
import { vipPortLosers } from "./analysis.ts";
import { type TableDiff, tableDiff } from "./config-diff.ts";
import { encodeConfigMessage } from "./config-encoding.ts";
import { PodIndex } from "./pod-index.ts";
import type { PropagationTracker } from "./propagation.ts";
import {
  buildServiceTable,
  type ClusterEndpoint,
  type ConfigTable,
  resourceKey,
  sameTableContent,
} from "./service-table.ts";
import { formatVersion } from "./version.ts";

const SERVICE_KIND = KINDS.find((k) => k.kind === "Service")!;
const TRAFFIC_KIND_INFOS = KINDS.filter((k) => Object.hasOwn(TRAFFIC_KINDS, k.kind));
// After a burst of changes agents sit at many bases; caching every update from each would keep
// hundreds of megabytes for a table that may be replaced in 20 ms.
const MESSAGE_CACHE_BYTES = 64 << 20;
/**
 * The longest a change waits while changes keep coming (Istio's PILOT_DEBOUNCE_MAX is 10 s): a
 * thousand agents enrolling their pods rebuilt the table every 20 ms, and each agent took the
 * tables of the storm one after another (2221 Configs to sync 1000 agents). Half a second keeps a
 * policy write within the propagation goal (1 s) even during such a storm.
 */
const DEBOUNCE_MAX_MS = 500;

export interface PublisherOptions {
  store: Store;
  agents: AgentRegistry;
  tracker: PropagationTracker;
  /**
   * A burst of changes goes out as one table once it pauses for this long (Istio's
   * PILOT_DEBOUNCE_AFTER); one that never pauses, every DEBOUNCE_MAX_MS.
   */
  debounceMs: number;
  /** No table is published before this delay, so that agents reconnecting to a restarted
   * controller report their pods before anyone receives a table without them. */
  startupGraceMs: number;
  /** Wall-clock milliseconds (sub-millisecond precision helps the propagation histogram). */
  now: () => number;
  log: Logger;
  /** Kubernetes mode: the Services' endpoints from their EndpointSlices (call topologyChanged() on change). */
  clusterEndpoints?: () => ReadonlyMap<string, readonly ClusterEndpoint[]>;
}

export class ConfigPublisher {
  private readonly opts: PublisherOptions;
  private table: ConfigTable | undefined;
  private published = false;
  private endpointsGeneration = 0;
  private topologyDirty = false;
  /** A Service was written since the last rebuild (else only traffic objects were). */
  private servicesDirty = true;
  /** The Services that go in tables (valid, routable), listed again only after a Service write. */
  private services: Resource<ServiceSpec>[] | undefined;
  private pendingWrites: number[] = [];
  /** The Services left out of the last table (logged when that changes). */
  private leftOut = "";
  private rebuildTimer: NodeJS.Timeout | undefined;
  /** When the first change not yet in a table came (performance.now()). */
  private burstStartedAt: number | undefined;
  private graceTimer: NodeJS.Timeout | undefined;
  private unwatch: (() => void) | undefined;
  private readonly listeners = new Set<() => void>();
  /**
   * Encoded messages taking an agent to the current table, by base version ("" = full): agents at
   * the same base share one encoding. Updates are kept up to MESSAGE_CACHE_BYTES, the full table always.
   */
  private messages = new Map<string, Buffer>();
  private cachedBytes = 0;
  /**
   * Stored objects (frozen, replaced on every write) → the same with their spec's defaults filled
   * in, or null when invalid. Parsed once per write, not once per rebuild; and the same object
   * each time lets the table builder reuse the entry built from it.
   */
  private readonly validated = new WeakMap<Resource, Resource | null>();
  /** The agents' pods as of the current table, brought up to date at each rebuild. */
  private readonly pods = new PodIndex();

  constructor(opts: PublisherOptions) {
    this.opts = opts;
  }

  start(): void {
    this.unwatch = this.opts.store.watch((event) => this.storeChanged(event));
    this.rebuild();
    this.graceTimer = setTimeout(() => {
      this.published = true;
      this.rebuild(true);
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

  /**
   * The encoded ControllerMessage taking an agent from `base` (undefined: nothing) to the current
   * table; compressed when the agent reads `encoding` and the Config is large (config-compression.ts).
   * Only what goes out is kept: the plain bytes of a compressed Config are a step on the way (a
   * 10,000-Service table is 3.9 MB plain, 0.3 MB compressed), and kept they held 8–15 MB of the
   * controller's memory after a 1000-agent sync (heap snapshots).
   */
  messageFrom(base: ConfigTable | undefined, encoding?: ConfigEncoding): { message: Buffer; compressed: boolean } {
    const plainKey = base?.version ?? "";
    const compressedKey = `${plainKey}|${encoding}`;
    const kept = encoding ? this.messages.get(compressedKey) : undefined;
    if (kept) return { message: kept, compressed: true };
    const plain = this.messages.get(plainKey) ?? encodeConfigMessage(tableDiff(base, this.table!));
    if (!encoding || plain.length < COMPRESS_CONFIGS_FROM_BYTES) {
      this.keep(plainKey, !base, plain);
      return { message: plain, compressed: false };
    }
    const compressed = compressConfigMessage(plain, this.table!.version, encoding);
    this.keep(compressedKey, !base, compressed);
    return { message: compressed, compressed: true };
  }

  /** The full table's messages are always kept; updates up to MESSAGE_CACHE_BYTES. */
  private keep(key: string, full: boolean, message: Buffer): void {
    if (this.messages.has(key)) return;
    if (full || this.cachedBytes + message.length <= MESSAGE_CACHE_BYTES) {
      this.messages.set(key, message);
      this.cachedBytes += message.length;
    }
  }

  /**
   * What a dry run's write would change in the agents' tables: the table built from `view` (the
   * store with the write applied) against the current one. Nothing is published or kept.
   */
  preview(view: Pick<Store, "list">): TableDiff | undefined {
    const current = this.current();
    if (!current) return undefined;
    const { agents } = this.opts;
    const table = buildServiceTable({
      version: current.version,
      services: this.routable(this.valid(SERVICE_KIND, view) as Resource<ServiceSpec>[], false),
      pods: this.pods,
      ...(this.opts.clusterEndpoints ? { clusterEndpoints: this.opts.clusterEndpoints() } : {}),
      traffic: TRAFFIC_KIND_INFOS.flatMap((kind) => this.valid(kind, view)),
      nodes: agents.peers(),
      previous: current,
    });
    return tableDiff(current, table);
  }

  onTable(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private storeChanged(event: WatchEvent): void {
    if (event.object.kind === SERVICE_KIND.kind) {
      this.servicesDirty = true;
      this.services = undefined;
    }
    this.pendingWrites.push(this.opts.now());
    this.schedule();
  }

  /** The agents' pods, the node set or (Kubernetes mode) the EndpointSlices changed. */
  topologyChanged(): void {
    this.topologyDirty = true;
    this.schedule();
  }

  private schedule(): void {
    const now = performance.now();
    this.burstStartedAt ??= now;
    clearTimeout(this.rebuildTimer);
    const untilMax = Math.max(0, this.burstStartedAt + DEBOUNCE_MAX_MS - now);
    this.rebuildTimer = setTimeout(
      () => {
        this.rebuildTimer = undefined;
        this.burstStartedAt = undefined;
        this.rebuild();
      },
      Math.min(this.opts.debounceMs, untilMax),
    );
  }

  /** `announce`: tell the sessions even if nothing changed (the end of the start-up grace). */
  private rebuild(announce = false): void {
    const { store, agents, tracker } = this.opts;
    const generation = this.endpointsGeneration + (this.topologyDirty ? 1 : 0);
    // A policy or route write leaves every service entry as it is: no need to rebuild 10,000 of them.
    const servicesUnchanged = !this.topologyDirty && !this.servicesDirty;
    this.topologyDirty = false;
    this.servicesDirty = false;
    const table = buildServiceTable({
      version: formatVersion(store.resourceVersion(), generation),
      ...(servicesUnchanged
        ? { servicesUnchanged, services: [], pods: [] }
        : {
            services: this.tableServices(),
            pods: this.pods,
            changedPods: this.pods.update(agents.podsByNode()),
            ...(this.opts.clusterEndpoints ? { clusterEndpoints: this.opts.clusterEndpoints() } : {}),
          }),
      traffic: TRAFFIC_KIND_INFOS.flatMap((kind) => this.valid(kind, store)),
      nodes: agents.peers(),
      previous: this.table,
    });
    // Pods that no Service selects, or a report repeating the pods, change no entry: not a new
    // table (a node enrolling 1000 such pods had every agent apply 600 identical ones).
    if (!announce && this.table && this.pendingWrites.length === 0 && sameTableContent(this.table, table)) return;
    this.endpointsGeneration = generation;
    tracker.recordTable(table, this.pendingWrites);
    this.pendingWrites = [];
    this.table = table;
    this.messages = new Map();
    this.cachedBytes = 0;
    if (this.published) for (const listener of this.listeners) listener();
  }

  private tableServices(): Resource<ServiceSpec>[] {
    this.services ??= this.routable(this.valid(SERVICE_KIND, this.opts.store) as Resource<ServiceSpec>[], true);
    return this.services;
  }

  /**
   * The Services that can go in a table: where two hold one VIP:port (a write the controller
   * could not refuse, as on Kubernetes) the younger is left out (analysis.ts), not every agent's
   * table broken. Its status says so.
   */
  private routable(services: Resource<ServiceSpec>[], log: boolean): Resource<ServiceSpec>[] {
    const losers = vipPortLosers(services);
    const named = [...losers.keys()].join(",");
    if (log && named !== this.leftOut) {
      for (const [key, lost] of losers) {
        this.opts.log.warn(
          { service: key, vipPort: lost.vipPort, holder: lost.holder },
          "Service left out: VIP:port taken",
        );
      }
      this.leftOut = named;
    }
    if (losers.size === 0) return services;
    return services.filter((s) => !losers.has(resourceKey("services", s.metadata.namespace, s.metadata.name)));
  }

  /**
   * The kind's objects with their specs' defaults filled in. Objects are validated on write; one
   * that is not valid anyway is left out, not fatal.
   */
  private valid(kind: KindInfo, store: Pick<Store, "list">): Resource[] {
    const objects: Resource[] = [];
    for (const resource of store.list(kind.plural)) {
      let valid = this.validated.get(resource);
      if (valid === undefined) {
        const spec = kind.spec.safeParse(resource.spec);
        valid = spec.success ? { ...resource, spec: spec.data } : null;
        if (!spec.success) {
          this.opts.log.error({ object: resource.metadata, err: spec.error.message }, `invalid ${kind.kind} skipped`);
        }
        this.validated.set(resource, valid);
      }
      if (valid) objects.push(valid);
    }
    return objects;
  }
}
