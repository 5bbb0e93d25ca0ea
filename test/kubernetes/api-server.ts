// A stand-in for the Kubernetes API server, for tests: no cluster can run here. It implements the
// parts of the API the controller uses the way the real one behaves:
// - one resourceVersion counter over every object (etcd's revision); each write bumps it;
// - list with `limit`/`continue` (chunks served from one snapshot; a token older than the last
//   compaction gets 410 Gone, reason Expired);
// - watch from a resourceVersion: the changes after it, then live; `allowWatchBookmarks` gets
//   BOOKMARK events; a resourceVersion older than the last compaction gets an ERROR event with a
//   410 Status (as the real server sends it: HTTP 200, then the error, then the end of the stream);
// - get, create, update (409 on a stale resourceVersion), JSON merge patch of an object or of its
//   `status` subresource (a status write never changes spec, and generation only grows with spec);
// - test controls: compact the history, cut every watch, take the server down and up again.
// It is a stand-in, not a conformant API server: no auth, no field selectors, no admission.

import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";

// biome-ignore lint/suspicious/noExplicitAny: objects are plain JSON trees
export type KubeObject = { apiVersion: string; kind: string; metadata: Record<string, any>; [k: string]: any };

interface ResourceType {
  /** "" for core. */
  group: string;
  version: string;
  plural: string;
  kind: string;
  namespaced: boolean;
}

export const RESOURCE_TYPES: readonly ResourceType[] = [
  { group: "", version: "v1", plural: "namespaces", kind: "Namespace", namespaced: false },
  { group: "", version: "v1", plural: "services", kind: "Service", namespaced: true },
  { group: "", version: "v1", plural: "pods", kind: "Pod", namespaced: true },
  { group: "", version: "v1", plural: "secrets", kind: "Secret", namespaced: true },
  { group: "", version: "v1", plural: "configmaps", kind: "ConfigMap", namespaced: true },
  { group: "discovery.k8s.io", version: "v1", plural: "endpointslices", kind: "EndpointSlice", namespaced: true },
  { group: "coordination.k8s.io", version: "v1", plural: "leases", kind: "Lease", namespaced: true },
  { group: "gateway.networking.k8s.io", version: "v1", plural: "httproutes", kind: "HTTPRoute", namespaced: true },
  { group: "gateway.networking.k8s.io", version: "v1", plural: "grpcroutes", kind: "GRPCRoute", namespaced: true },
  { group: "nodemesh.io", version: "v1alpha1", plural: "trafficpolicies", kind: "TrafficPolicy", namespaced: true },
  {
    group: "nodemesh.io",
    version: "v1alpha1",
    plural: "authorizationpolicies",
    kind: "AuthorizationPolicy",
    namespaced: true,
  },
  {
    group: "nodemesh.io",
    version: "v1alpha1",
    plural: "peerauthentications",
    kind: "PeerAuthentication",
    namespaced: true,
  },
  {
    group: "nodemesh.io",
    version: "v1alpha1",
    plural: "requestauthentications",
    kind: "RequestAuthentication",
    namespaced: true,
  },
  {
    group: "admissionregistration.k8s.io",
    version: "v1",
    plural: "mutatingwebhookconfigurations",
    kind: "MutatingWebhookConfiguration",
    namespaced: false,
  },
];

interface HistoryEvent {
  rv: number;
  type: "ADDED" | "MODIFIED" | "DELETED";
  plural: string;
  object: KubeObject;
}

interface Watcher {
  plural: string;
  namespace?: string;
  res: ServerResponse;
  bookmarks: boolean;
}

interface Snapshot {
  rv: number;
  items: KubeObject[];
}

export interface RecordedRequest {
  method: string;
  path: string;
  query: Record<string, string>;
}

const apiVersionOf = (t: ResourceType) => (t.group ? `${t.group}/${t.version}` : t.version);
const keyOf = (plural: string, namespace: string | undefined, name: string) => `${plural}/${namespace ?? ""}/${name}`;

function status(code: number, reason: string, message: string) {
  return { kind: "Status", apiVersion: "v1", metadata: {}, status: "Failure", message, reason, code };
}

/** RFC 7386: objects merge, null deletes, anything else replaces. */
function mergePatch(target: unknown, patch: unknown): unknown {
  if (typeof patch !== "object" || patch === null || Array.isArray(patch)) return patch;
  const out: Record<string, unknown> =
    typeof target === "object" && target !== null && !Array.isArray(target) ? { ...(target as object) } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

export class FakeApiServer {
  readonly requests: RecordedRequest[] = [];
  #server: Server;
  #port = 0;
  #rv = 1;
  #compactedRv = 0;
  readonly #objects = new Map<string, KubeObject>();
  #history: HistoryEvent[] = [];
  readonly #watchers = new Set<Watcher>();
  readonly #snapshots = new Map<string, Snapshot>();
  readonly #sockets = new Set<Socket>();
  #bookmarkTimer?: NodeJS.Timeout;
  #fd?: number;

  readonly opts: { bookmarkIntervalMs?: number };

  /** `bookmarkIntervalMs`: 0 sends bookmarks only when a test calls sendBookmarks(). */
  constructor(opts: { bookmarkIntervalMs?: number } = {}) {
    this.opts = opts;
    this.#server = this.#newServer();
  }

  #newServer(): Server {
    const server = createServer((req, res) => {
      try {
        this.#handle(req, res);
      } catch (err) {
        this.#send(res, 500, status(500, "InternalError", (err as Error).message));
      }
    });
    server.on("connection", (s) => {
      this.#sockets.add(s);
      s.on("close", () => this.#sockets.delete(s));
    });
    return server;
  }

  /**
   * Listens on 127.0.0.1:`port` (0: any), or on a socket already bound elsewhere (`fd`, e.g. one
   * made inside a test world's namespace: the API server then lives at 127.0.0.1:`port` there).
   */
  async start(port = 0, fd?: number): Promise<string> {
    this.#fd = fd;
    await new Promise<void>((resolve) =>
      fd === undefined ? this.#server.listen(port, "127.0.0.1", resolve) : this.#server.listen({ fd }, resolve),
    );
    this.#port = fd === undefined ? (this.#server.address() as AddressInfo).port : port;
    const every = this.opts.bookmarkIntervalMs ?? 1000;
    if (every > 0) this.#bookmarkTimer = setInterval(() => this.sendBookmarks(), every);
    return this.url;
  }

  get url(): string {
    return `http://127.0.0.1:${this.#port}`;
  }

  /** The API server goes away: every connection is cut and nothing listens. */
  async down(): Promise<void> {
    clearInterval(this.#bookmarkTimer);
    for (const w of this.#watchers) w.res.destroy();
    this.#watchers.clear();
    for (const s of this.#sockets) s.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  /** Back on the same port, with the same objects (etcd kept them). */
  async up(): Promise<void> {
    if (this.#fd !== undefined) throw new Error("a server on a borrowed socket cannot come back up");
    this.#server = this.#newServer();
    await this.start(this.#port);
  }

  async stop(): Promise<void> {
    if (this.#server.listening) await this.down();
  }

  /** Forgets the history up to now: watches and continue tokens from before get 410 Gone. */
  compact(): void {
    this.#compactedRv = this.#rv;
    this.#history = [];
    this.#snapshots.clear();
  }

  /** Ends every watch stream cleanly (the real server does so after its timeout). */
  closeWatches(): void {
    for (const w of this.#watchers) w.res.end();
    this.#watchers.clear();
  }

  get resourceVersion(): string {
    return String(this.#rv);
  }

  watchCount(plural?: string): number {
    return [...this.#watchers].filter((w) => !plural || w.plural === plural).length;
  }

  // ---- objects, as a test (or kubectl) writes them --------------------------------------------

  get(plural: string, namespace: string | undefined, name: string): KubeObject | undefined {
    const o = this.#objects.get(keyOf(plural, namespace, name));
    return o && structuredClone(o);
  }

  list(plural: string): KubeObject[] {
    return [...this.#objects.values()]
      .filter((o) => this.#typeOfKind(o.kind).plural === plural)
      .map((o) => structuredClone(o));
  }

  /** Creates or replaces an object (apply); returns it as stored. */
  apply(obj: KubeObject): KubeObject {
    const type = this.#typeOfKind(obj.kind);
    const key = keyOf(type.plural, obj.metadata.namespace, obj.metadata.name);
    const current = this.#objects.get(key);
    if (!current) return this.#create(type, obj);
    const specChanged =
      JSON.stringify({ ...current, metadata: 0, status: 0 }) !== JSON.stringify({ ...obj, metadata: 0, status: 0 });
    const next = {
      ...obj,
      ...(current.status !== undefined && obj.status === undefined ? { status: current.status } : {}),
      metadata: {
        ...obj.metadata,
        uid: current.metadata.uid,
        creationTimestamp: current.metadata.creationTimestamp,
        generation: current.metadata.generation + (specChanged ? 1 : 0),
      },
    };
    return this.#store(type, "MODIFIED", next);
  }

  delete(plural: string, namespace: string | undefined, name: string): void {
    const key = keyOf(plural, namespace, name);
    const current = this.#objects.get(key);
    if (!current) throw new Error(`${key} does not exist`);
    this.#objects.delete(key);
    const rv = ++this.#rv;
    const object = { ...current, metadata: { ...current.metadata, resourceVersion: String(rv) } };
    this.#record({ rv, type: "DELETED", plural, object });
  }

  #typeOfKind(kind: string): ResourceType {
    const t = RESOURCE_TYPES.find((r) => r.kind === kind);
    if (!t) throw new Error(`the stand-in API server does not serve kind ${kind}`);
    return t;
  }

  #create(type: ResourceType, obj: KubeObject): KubeObject {
    const next = {
      ...obj,
      apiVersion: apiVersionOf(type),
      kind: type.kind,
      metadata: { ...obj.metadata, uid: randomUUID(), generation: 1, creationTimestamp: new Date().toISOString() },
    };
    return this.#store(type, "ADDED", next);
  }

  #store(type: ResourceType, kind: "ADDED" | "MODIFIED", obj: KubeObject): KubeObject {
    const rv = ++this.#rv;
    const stored: KubeObject = structuredClone({ ...obj, metadata: { ...obj.metadata, resourceVersion: String(rv) } });
    this.#objects.set(keyOf(type.plural, stored.metadata.namespace, stored.metadata.name), stored);
    this.#record({ rv, type: kind, plural: type.plural, object: stored });
    return structuredClone(stored);
  }

  #record(event: HistoryEvent): void {
    this.#history.push(event);
    for (const w of this.#watchers) if (this.#matches(w, event)) this.#writeEvent(w, event.type, event.object);
  }

  #matches(w: Watcher, e: HistoryEvent): boolean {
    return w.plural === e.plural && (!w.namespace || w.namespace === e.object.metadata.namespace);
  }

  #writeEvent(w: Watcher, type: string, object: unknown): void {
    w.res.write(`${JSON.stringify({ type, object })}\n`);
  }

  /** A BOOKMARK with the current resourceVersion to every watch that asked for bookmarks. */
  sendBookmarks(): void {
    for (const w of this.#watchers) {
      if (!w.bookmarks) continue;
      const type = RESOURCE_TYPES.find((t) => t.plural === w.plural)!;
      this.#writeEvent(w, "BOOKMARK", {
        kind: type.kind,
        apiVersion: apiVersionOf(type),
        metadata: { resourceVersion: String(this.#rv) },
      });
    }
  }

  // ---- HTTP -----------------------------------------------------------------------------------

  #send(res: ServerResponse, code: number, body: unknown): undefined {
    const text = JSON.stringify(body);
    res.writeHead(code, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
    res.end(text);
  }

  /** /api/v1/... or /apis/{group}/{version}/... → the type, namespace, name and subresource. */
  #route(path: string) {
    const parts = path.split("/").filter(Boolean);
    let group = "";
    let rest: string[];
    if (parts[0] === "api" && parts[1] === "v1") rest = parts.slice(2);
    else if (parts[0] === "apis" && parts.length >= 3) {
      group = parts[1]!;
      rest = parts.slice(3);
    } else return undefined;
    let namespace: string | undefined;
    if (rest[0] === "namespaces" && rest.length >= 3) {
      namespace = rest[1];
      rest = rest.slice(2);
    }
    const [plural, name, subresource] = rest;
    const type = RESOURCE_TYPES.find((t) => t.group === group && t.plural === plural);
    if (!type || rest.length > 3) return undefined;
    return { type, namespace, name, subresource };
  }

  #handle(req: IncomingMessage, res: ServerResponse): undefined {
    const url = new URL(req.url ?? "/", "http://x");
    const query = Object.fromEntries(url.searchParams);
    this.requests.push({ method: req.method ?? "", path: url.pathname, query });
    const route = this.#route(url.pathname);
    if (!route) return this.#send(res, 404, status(404, "NotFound", `the server could not find ${url.pathname}`));
    const { type, namespace, name, subresource } = route;
    if (req.method === "GET" && !name) {
      if (query.watch === "true" || query.watch === "1") return this.#watch(res, type, namespace, query);
      return this.#list(res, type, namespace, query);
    }
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      let body: KubeObject | undefined;
      if (chunks.length) {
        try {
          body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
        } catch {
          return this.#send(res, 400, status(400, "BadRequest", "body is not JSON"));
        }
      }
      this.#write(req, res, type, namespace, name, subresource, body);
    });
  }

  #write(
    req: IncomingMessage,
    res: ServerResponse,
    type: ResourceType,
    namespace: string | undefined,
    name: string | undefined,
    subresource: string | undefined,
    body: KubeObject | undefined,
  ): undefined {
    const key = name ? keyOf(type.plural, namespace, name) : undefined;
    const current = key ? this.#objects.get(key) : undefined;
    const notFound = () => this.#send(res, 404, status(404, "NotFound", `${type.plural} "${name}" not found`));
    switch (req.method) {
      case "GET":
        return current ? this.#send(res, 200, current) : notFound();
      case "POST": {
        if (name || !body) return this.#send(res, 405, status(405, "MethodNotAllowed", "POST to the collection"));
        if (this.#objects.has(keyOf(type.plural, namespace, body.metadata?.name)))
          return this.#send(
            res,
            409,
            status(409, "AlreadyExists", `${type.plural} "${body.metadata?.name}" already exists`),
          );
        return this.#send(res, 201, this.#create(type, { ...body, metadata: { ...body.metadata, namespace } }));
      }
      case "PUT": {
        if (!current || !body) return notFound();
        if (body.metadata?.resourceVersion !== current.metadata.resourceVersion)
          return this.#send(
            res,
            409,
            status(409, "Conflict", "the object has been modified; please apply your changes to the latest version"),
          );
        const next =
          subresource === "status" ? { ...current, status: body.status } : { ...body, status: current.status };
        return this.#send(res, 200, this.apply(next));
      }
      case "PATCH": {
        if (!current || !body) return notFound();
        if ((req.headers["content-type"] ?? "") !== "application/merge-patch+json")
          return this.#send(res, 415, status(415, "UnsupportedMediaType", "only application/merge-patch+json here"));
        const patched = mergePatch(current, body) as KubeObject;
        // The status subresource changes status only; the main resource never changes status.
        const next =
          subresource === "status" ? { ...current, status: patched.status } : { ...patched, status: current.status };
        return this.#send(res, 200, this.apply(next));
      }
      default:
        return this.#send(res, 405, status(405, "MethodNotAllowed", `${req.method} is not served`));
    }
  }

  #list(
    res: ServerResponse,
    type: ResourceType,
    namespace: string | undefined,
    query: Record<string, string>,
  ): undefined {
    let snapshot: Snapshot;
    let offset = 0;
    if (query.continue) {
      const [id, at] = query.continue.split(":");
      const found = this.#snapshots.get(id ?? "");
      if (!found)
        return this.#send(
          res,
          410,
          status(410, "Expired", "The provided continue parameter is too old to display a consistent list result."),
        );
      snapshot = found;
      offset = Number(at);
    } else {
      const items = [...this.#objects.values()]
        .filter((o) => this.#typeOfKind(o.kind) === type && (!namespace || o.metadata.namespace === namespace))
        .sort((a, b) =>
          keyOf("", a.metadata.namespace, a.metadata.name).localeCompare(
            keyOf("", b.metadata.namespace, b.metadata.name),
          ),
        );
      snapshot = { rv: this.#rv, items: structuredClone(items) as KubeObject[] };
    }
    const limit = Number(query.limit) > 0 ? Number(query.limit) : Number.POSITIVE_INFINITY;
    const items = snapshot.items.slice(offset, offset + limit);
    const metadata: Record<string, unknown> = { resourceVersion: String(snapshot.rv) };
    if (offset + items.length < snapshot.items.length) {
      const id = randomUUID();
      this.#snapshots.set(id, snapshot);
      metadata.continue = `${id}:${offset + items.length}`;
      metadata.remainingItemCount = snapshot.items.length - offset - items.length;
    }
    this.#send(res, 200, { kind: `${type.kind}List`, apiVersion: apiVersionOf(type), metadata, items });
  }

  #watch(
    res: ServerResponse,
    type: ResourceType,
    namespace: string | undefined,
    query: Record<string, string>,
  ): undefined {
    res.writeHead(200, { "content-type": "application/json", "transfer-encoding": "chunked" });
    const watcher: Watcher = { plural: type.plural, namespace, res, bookmarks: query.allowWatchBookmarks === "true" };
    const from = Number(query.resourceVersion || 0);
    if (from > 0 && from < this.#compactedRv) {
      this.#writeEvent(
        watcher,
        "ERROR",
        status(410, "Expired", `too old resource version: ${from} (${this.#compactedRv})`),
      );
      res.end();
      return;
    }
    if (from === 0) {
      for (const o of this.#objects.values())
        if (this.#matches(watcher, { rv: 0, type: "ADDED", plural: this.#typeOfKind(o.kind).plural, object: o }))
          this.#writeEvent(watcher, "ADDED", o);
    } else {
      for (const e of this.#history)
        if (e.rv > from && this.#matches(watcher, e)) this.#writeEvent(watcher, e.type, e.object);
    }
    this.#watchers.add(watcher);
    res.on("close", () => this.#watchers.delete(watcher));
    const timeout = Number(query.timeoutSeconds);
    if (timeout > 0) setTimeout(() => res.end(), timeout * 1000).unref();
  }
}
