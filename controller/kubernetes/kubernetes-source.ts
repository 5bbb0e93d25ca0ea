// Kubernetes as the source of truth: informers on Namespaces, Services and the traffic kinds
// (Gateway API routes, TrafficPolicies) keep a mirror store of the resources the service table is
// built from; one on EndpointSlices keeps each Service's ready endpoints (clusterEndpoints); one
// on Pods is what the agents' reports of their pods are checked against (verifyPod). The rest of the controller (agent server, REST API, status) reads the mirror as it
// reads the file store; writes go to Kubernetes (kubectl), the mirror refuses them.
//
// The API server's real behaviours: a watch that ends is resumed from the last resourceVersion
// (bookmarks keep it fresh); `410 Gone` makes the informer list again, and objects deleted while
// it was away are deleted then; any other failure (API server down) restarts the informer after a
// backoff, while the mirror — and so the agents' configuration — stays as it was.

import { isDeepStrictEqual } from "node:util";
import type { Logger } from "pino";
import type { WirePod } from "../../api/agent-service.ts";
import type { KindInfo, Resource } from "../../api/resources.ts";
import type { ClusterView } from "../config/agent-server.ts";
import type { ClusterEndpoint } from "../config/service-table.ts";
import { MemoryStore } from "../store/memory-store.ts";
import { type ObjectKey, type Store, StoreNotFoundError, StoreReadOnlyError, type WatchEvent } from "../store/store.ts";
import { KubeApiError, type KubeClient, type KubeJson } from "./kube-client.ts";
import {
  isMeshRoute,
  type KubeObjectLike,
  namespaceIntercepted,
  sliceEndpoints,
  type Translation,
  translateService,
  translateTraffic,
  WATCHED_TRAFFIC_KINDS,
} from "./translate.ts";

const RESTART_MIN_MS = 500;
const RESTART_MAX_MS = 30_000;

/** The mirror as the rest of the controller sees it: readable, watchable, not writable. */
export class ReadOnlyStore implements Store {
  readonly #inner: Store;
  constructor(inner: Store) {
    this.#inner = inner;
  }
  open(): Promise<void> {
    return this.#inner.open();
  }
  close(): Promise<void> {
    return this.#inner.close();
  }
  get(key: ObjectKey): Resource | undefined {
    return this.#inner.get(key);
  }
  list(plural: string, namespace?: string): Resource[] {
    return this.#inner.list(plural, namespace);
  }
  resourceVersion(): string {
    return this.#inner.resourceVersion();
  }
  watch(listener: (event: WatchEvent) => void): () => void {
    return this.#inner.watch(listener);
  }
  create(): Promise<Resource> {
    return Promise.reject(readOnly());
  }
  update(): Promise<Resource> {
    return Promise.reject(readOnly());
  }
  delete(): Promise<Resource> {
    return Promise.reject(readOnly());
  }
}

function readOnly(): StoreReadOnlyError {
  return new StoreReadOnlyError("the controller reads its objects from Kubernetes: change them with kubectl");
}

/** A collection the source watches. */
interface Collection {
  readonly name: string;
  readonly path: string;
  readonly informer: ReturnType<KubeClient["informer"]>;
  listed: boolean;
  failures: number;
  restart?: NodeJS.Timeout;
}

export interface KubernetesSourceOptions {
  client: KubeClient;
  log: Logger;
  /** Objects per list page (default 500). */
  pageSize?: number;
}

export function collectionPath(kind: KindInfo): string {
  return `/apis/${kind.group}/${kind.version}/${kind.plural}`;
}

export class KubernetesSource {
  /** What the controller reads: the mirror, read-only. */
  readonly store: Store;
  readonly #mirror = new MemoryStore();
  readonly #o: KubernetesSourceOptions;
  readonly #collections: Collection[] = [];
  /** Objects Kubernetes holds that could not become resources, and why (status reports it). */
  readonly #refused = new Map<string, string>();
  #stopped = false;
  /** Ready endpoints by Service ("namespace/name"), rebuilt from the slices' cache when they change. */
  #endpoints: ReadonlyMap<string, readonly ClusterEndpoint[]> = new Map();
  #endpointsDirty = true;
  readonly #endpointListeners = new Set<() => void>();
  readonly #podListeners = new Set<() => void>();
  #synced!: () => void;
  /** Resolves once every collection was listed once. */
  readonly synced = new Promise<void>((resolve) => {
    this.#synced = resolve;
  });

  constructor(options: KubernetesSourceOptions) {
    this.#o = options;
    this.store = new ReadOnlyStore(this.#mirror);
    const namespaces = this.#collection("namespaces", "/api/v1/namespaces");
    const services = this.#collection("services", "/api/v1/services");
    // ("change" would include deletions: "add" and "update" are named one by one.)
    for (const verb of ["add", "update", "delete"] as const)
      namespaces.informer.on(verb, (ns: KubeJson) => this.#namespaceChanged(ns.metadata?.name ?? ""));
    for (const verb of ["add", "update"] as const) services.informer.on(verb, (svc) => this.#serviceChanged(svc));
    services.informer.on("delete", (svc: KubeJson) => this.#removed("services", svc));
    const slices = this.#collection("endpointslices", "/apis/discovery.k8s.io/v1/endpointslices");
    for (const verb of ["add", "update", "delete"] as const) slices.informer.on(verb, () => this.#slicesChanged());
    const pods = this.#collection("pods", "/api/v1/pods");
    for (const verb of ["add", "update", "delete"] as const)
      pods.informer.on(verb, () => {
        for (const listener of this.#podListeners) listener();
      });
    for (const kind of WATCHED_TRAFFIC_KINDS) {
      const c = this.#collection(kind.plural, collectionPath(kind));
      const route = kind.kind !== "TrafficPolicy";
      for (const verb of ["add", "update"] as const)
        c.informer.on(verb, (obj: KubeJson) => {
          if (route && !isMeshRoute(obj))
            this.#removed(kind.plural, obj); // a gateway's route
          else this.#upsert(kind.plural, obj, translateTraffic(kind, obj));
        });
      c.informer.on("delete", (obj: KubeJson) => this.#removed(kind.plural, obj));
    }
  }

  async start(): Promise<void> {
    for (const c of this.#collections) this.#startCollection(c);
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    for (const c of this.#collections) {
      clearTimeout(c.restart);
      await c.informer.stop();
    }
    await this.#mirror.close();
  }

  /** The object as Kubernetes last sent it (its generation and status, for the status writer). */
  kubernetesObject(plural: string, namespace: string, name: string): KubeJson | undefined {
    return this.#collections.find((c) => c.name === plural)?.informer.get(name, namespace);
  }

  kubernetesObjects(plural: string): KubeJson[] {
    return [...(this.#collections.find((c) => c.name === plural)?.informer.list() ?? [])];
  }

  /**
   * Each Service's ready endpoints, from every EndpointSlice labelled with its name (the service
   * table keeps those of the Services it has: opted-in namespaces).
   */
  clusterEndpoints(): ReadonlyMap<string, readonly ClusterEndpoint[]> {
    if (!this.#endpointsDirty) return this.#endpoints;
    const byService = new Map<string, ClusterEndpoint[]>();
    for (const slice of this.kubernetesObjects("endpointslices")) {
      const found = sliceEndpoints(slice);
      if (!found) continue;
      const list = byService.get(found.service) ?? [];
      // One address once, even when two slices list it (as during a slice's replacement).
      for (const e of found.endpoints) if (!list.some((x) => x.ip === e.ip)) list.push(e);
      byService.set(found.service, list);
    }
    this.#endpoints = byService;
    this.#endpointsDirty = false;
    return byService;
  }

  /** Called whenever an EndpointSlice changed. */
  onEndpointsChange(listener: () => void): void {
    this.#endpointListeners.add(listener);
  }

  /** Called whenever a Pod changed. */
  onPodsChange(listener: () => void): void {
    this.#podListeners.add(listener);
  }

  /**
   * An agent's report of a pod, checked against the API's Pod: the same node, one of its
   * addresses, its service account. The API's labels are the pod's labels.
   */
  verifyPod(node: string, reported: WirePod): ReturnType<ClusterView["verifyPod"]> {
    const pod = this.kubernetesObject("pods", reported.namespace, reported.name) as
      | (KubeJson & {
          spec?: { nodeName?: string; serviceAccountName?: string };
          status?: { podIP?: string; podIPs?: { ip?: string }[] };
        })
      | undefined;
    if (!pod) return { ok: false, reason: "no such pod in the API server" };
    if (pod.spec?.nodeName !== node) return { ok: false, reason: `it runs on ${pod.spec?.nodeName ?? "no node yet"}` };
    const addresses = [...new Set([pod.status?.podIP, ...(pod.status?.podIPs ?? []).map((a) => a.ip)])].filter(Boolean);
    if (!addresses.includes(reported.ip))
      return { ok: false, reason: `its address is ${addresses.join(", ") || "not assigned yet"}` };
    const serviceAccount = pod.spec?.serviceAccountName || "default";
    if ((reported.serviceAccount || "default") !== serviceAccount)
      return { ok: false, reason: `its service account is ${serviceAccount}` };
    return { ok: true, pod: { ...reported, labels: pod.metadata?.labels ?? {}, serviceAccount } };
  }

  /** What the agent server reads of the cluster. */
  clusterView(): ClusterView {
    return {
      endpoints: () => this.clusterEndpoints(),
      verifyPod: (node, pod) => this.verifyPod(node, pod),
      onEndpointsChange: (listener) => this.onEndpointsChange(listener),
      onPodsChange: (listener) => this.onPodsChange(listener),
    };
  }

  #slicesChanged(): void {
    this.#endpointsDirty = true;
    for (const listener of this.#endpointListeners) listener();
  }

  /** Why an object did not become a resource (undefined: it did, or it is unknown). */
  refusal(plural: string, namespace: string, name: string): string | undefined {
    return this.#refused.get(`${plural}/${namespace}/${name}`);
  }

  /** A Namespace's annotations, from the cache, else from the API server (a new namespace). */
  async namespaceAnnotations(name: string): Promise<Record<string, string>> {
    const cached = this.kubernetesObject("namespaces", "", name);
    if (cached) return cached.metadata?.annotations ?? {};
    const ns = await this.#o.client.get(`/api/v1/namespaces/${encodeURIComponent(name)}`);
    return ns.metadata?.annotations ?? {};
  }

  #collection(name: string, path: string): Collection {
    // The callbacks run once the informer is started, when `c` exists.
    const informer = this.#o.client.informer(path, this.#o.pageSize, () => this.#listed(c));
    const c: Collection = { name, path, informer, listed: false, failures: 0 };
    informer.on("error", (err: unknown) => this.#failed(c, err));
    this.#collections.push(c);
    return c;
  }

  #listed(c: Collection): void {
    c.failures = 0;
    if (c.listed) return;
    c.listed = true;
    this.#o.log.info({ collection: c.path }, "kubernetes collection listed");
    if (this.#collections.every((x) => x.listed)) this.#synced();
  }

  #startCollection(c: Collection): void {
    if (this.#stopped) return;
    c.informer.start().catch((err) => this.#failed(c, err));
  }

  #failed(c: Collection, err: unknown): void {
    if (this.#stopped || c.restart) return;
    const delay = Math.min(RESTART_MAX_MS, RESTART_MIN_MS * 2 ** c.failures) * (0.5 + Math.random() / 2);
    c.failures += 1;
    const code = err instanceof KubeApiError ? err.code : (err as { statusCode?: number })?.statusCode;
    this.#o.log.warn(
      { collection: c.path, err: (err as Error)?.message ?? String(err), code, retryInMs: Math.round(delay) },
      "kubernetes list/watch failed; the last known objects stay in force",
    );
    c.restart = setTimeout(() => {
      c.restart = undefined;
      this.#startCollection(c);
    }, delay);
  }

  #namespaceChanged(namespace: string): void {
    for (const svc of this.kubernetesObjects("services"))
      if (svc.metadata?.namespace === namespace) this.#serviceChanged(svc);
  }

  #serviceChanged(svc: KubeJson): void {
    const namespace = this.kubernetesObject("namespaces", "", svc.metadata?.namespace ?? "");
    if (namespaceIntercepted(namespace)) this.#upsert("services", svc, translateService(svc as KubeObjectLike));
    else this.#removed("services", svc);
  }

  #upsert(plural: string, obj: KubeJson, translation: Translation): void {
    const namespace = obj.metadata?.namespace ?? "";
    const name = obj.metadata?.name ?? "";
    const key = `${plural}/${namespace}/${name}`;
    if (!translation.ok) {
      if (this.#refused.get(key) !== translation.reason)
        this.#o.log.warn({ object: key, reason: translation.reason }, "kubernetes object not used");
      this.#refused.set(key, translation.reason);
      this.#removed(plural, obj, false);
      return;
    }
    this.#refused.delete(key);
    const next = translation.resource;
    const current = this.#mirror.get({ plural, namespace, name });
    const write = !current
      ? this.#mirror.create(next)
      : sameResource(current, next)
        ? undefined
        : this.#mirror.update({ ...next, metadata: { ...next.metadata } });
    write?.catch((err) => this.#o.log.error({ object: key, err: (err as Error).message }, "mirror write failed"));
  }

  #removed(plural: string, obj: KubeJson, forget = true): void {
    const namespace = obj.metadata?.namespace ?? "";
    const name = obj.metadata?.name ?? "";
    if (forget) this.#refused.delete(`${plural}/${namespace}/${name}`);
    if (!this.#mirror.get({ plural, namespace, name })) return;
    this.#mirror.delete({ plural, namespace, name }).catch((err) => {
      if (!(err instanceof StoreNotFoundError))
        this.#o.log.error({ plural, namespace, name, err: (err as Error).message }, "mirror delete failed");
    });
  }
}

/** Same spec, labels and annotations: a status write or a resync changes nothing here. */
function sameResource(a: Resource, b: Resource): boolean {
  return (
    isDeepStrictEqual(a.spec, b.spec) &&
    isDeepStrictEqual(a.metadata.labels, b.metadata.labels) &&
    isDeepStrictEqual(a.metadata.annotations, b.metadata.annotations)
  );
}
