// The controller's REST API server (node:http): routing, auth, the verbs of every kind, watch
// streams, OpenAPI, health and metrics. One request flows through `handle`: route → auth →
// verb → response; every error becomes a Kubernetes Status in `sendError`, and only there.

import type { IncomingMessage, Server, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Logger } from "pino";
import type { Registry } from "prom-client";
import { JSON_TYPE, sendJson } from "../../api/http-json.ts";
import { httpOrigin } from "../../api/http-origin.ts";
import { http } from "../../api/node-http.ts";
import { API_VERSION, GROUP, KINDS, type KindInfo, VERSION } from "../../api/resources.ts";
import { assertListenAllowed, authorize, type TokenAuth } from "../auth.ts";
import {
  DEFAULT_WINDOW_SECONDS,
  type GraphQueries,
  MAX_WINDOW_SECONDS,
  MIN_WINDOW_SECONDS,
} from "../graph/service-graph.ts";
import { RestMetrics } from "../metrics.ts";
import type { Store } from "../store/store.ts";
import { RestError, type StatusDetails, toRestError, toStatus } from "./errors.ts";
import { DEFAULT_MAX_BODY_BYTES, MERGE_PATCH_TYPE, readJsonObject } from "./http-io.ts";
import { KindHandler, type Preview, type StatusFor } from "./kind-handler.ts";
import { ALERTS_PATH, type AlertSource, serveAlerts, serveTraces, TRACES_PATH, type TraceQueries } from "./observe.ts";
import { openApiDocument } from "./openapi.ts";
import { parsePath, type ResourcePath, type ResourceRoute, resolveResourceRoute } from "./routes.ts";
import {
  type ActiveWatch,
  DEFAULT_MAX_WATCH_BACKLOG_BYTES,
  DEFAULT_MAX_WATCHES,
  DEFAULT_MAX_WATCHES_PER_CLIENT,
  serveWatch,
} from "./watch.ts";

export const DEFAULT_REST_PORT = 8080;

/** `/apis/nodemesh.io/v1alpha1/servicegraph[/services/{namespace}/{name}]` */
const SERVICE_GRAPH_PATH = /^\/apis\/nodemesh\.io\/v1alpha1\/servicegraph(?:\/services\/([^/]+)\/([^/]+))?\/?$/;

export interface RestServerOptions {
  store: Store;
  /** Default 127.0.0.1; any other address requires `auth`. */
  host?: string;
  /** Default 8080; 0 picks a free port. */
  port?: number;
  /** Bearer tokens; undefined = auth off (loopback only). */
  auth?: TokenAuth;
  /** Where `/metrics` comes from; other controller parts register their metrics in it too. */
  registry: Registry;
  /** Fills `status` on reads (supplied by the config stream). */
  statusFor?: StatusFor;
  /** Answers `?dryRun=All` writes; absent: they are refused (400). */
  preview?: Preview;
  /** `/readyz`; default: always ready. */
  ready?: () => boolean;
  /**
   * Lists that are not stored resources (e.g. "agents": what the controller knows of each node),
   * served like a cluster-wide list at /apis/nodemesh.io/v1alpha1/{plural}.
   */
  views?: Readonly<Record<string, View>>;
  /** The service graph API (api/service-graph.ts); absent: 404. */
  serviceGraph?: Pick<GraphQueries, "graph" | "service">;
  /** The window of recent traces (controller/traces/); absent: 404. */
  traces?: TraceQueries;
  /** Alertmanager's alerts (`--alertmanager-url`); absent: 404 saying how to configure one. */
  alerts?: AlertSource;
  /** Serves the dashboard (`/`, `/ui/**`); returns false for other paths. */
  ui?: (req: IncomingMessage, res: ServerResponse) => boolean;
  log?: Logger;
  maxBodyBytes?: number;
  maxWatchBacklogBytes?: number;
  /** Watches open at once in all, and per client address (defaults in watch.ts). */
  maxWatches?: number;
  maxWatchesPerClient?: number;
}

export interface View {
  kind: string;
  /** `query`: the request's; an unusable parameter throws a BadRequest RestError. */
  items: (query: URLSearchParams) => unknown[];
  /** DELETE /apis/nodemesh.io/v1alpha1/{plural}/{name}; resolves false when there is no such item. Absent: read-only. */
  remove?: (name: string) => Promise<boolean>;
  /** POST /apis/nodemesh.io/v1alpha1/{plural} (no body): an action; its result is answered with 201. */
  create?: () => Promise<unknown>;
}

export interface RestServer {
  server: Server;
  /** e.g. http://127.0.0.1:8080 */
  url: string;
  port: number;
  /** Ends watch streams, stops listening and waits for requests in flight. */
  close(): Promise<void>;
}

export async function startRestServer(options: RestServerOptions): Promise<RestServer> {
  const host = options.host ?? "127.0.0.1";
  assertListenAllowed(host, options.auth);
  const api = new RestApi(options);
  const server = http.createServer((req, res) => void api.handle(req, res));
  // Bounded waits for a request to arrive (watch responses may last: these only cover the request).
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? DEFAULT_REST_PORT, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  return {
    server,
    port,
    url: httpOrigin(host, port),
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      await api.stopWatches();
      server.closeIdleConnections();
      await closed;
    },
  };
}

class RestApi {
  readonly #o: RestServerOptions;
  readonly #handlers: ReadonlyMap<KindInfo, KindHandler>;
  readonly #metrics: RestMetrics;
  readonly #watches = new Set<ActiveWatch>();
  /** Open watches per client address. */
  readonly #watchesByClient = new Map<string, number>();
  /** The schemas do not change while the process runs: rendered once. */
  readonly #openApi: string;

  constructor(options: RestServerOptions) {
    this.#o = options;
    this.#handlers = new Map(
      KINDS.map((k) => [
        k,
        new KindHandler(k, options.store, { statusFor: options.statusFor, preview: options.preview }),
      ]),
    );
    this.#metrics = new RestMetrics(options.registry);
    this.#openApi = JSON.stringify(openApiDocument(KINDS, options.preview !== undefined));
  }

  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = performance.now();
    let verb = (req.method ?? "").toLowerCase();
    let resource = "";
    let context: StatusDetails = {};
    try {
      const url = new URL(req.url ?? "/", "http://localhost");
      // The dashboard's page and assets are public; the API calls it makes are authorized.
      if (req.method === "GET" && !url.pathname.startsWith("/apis/") && this.#o.ui?.(req, res)) {
        resource = "ui";
        return;
      }
      const graph = SERVICE_GRAPH_PATH.exec(url.pathname);
      if (graph) {
        resource = "servicegraph";
        this.#authorize(req, "read");
        return this.#serviceGraph(req, res, url, graph[1], graph[2]);
      }
      const traces = TRACES_PATH.exec(url.pathname);
      if (traces) {
        resource = "traces";
        this.#authorize(req, "read");
        return serveTraces(req, res, url, traces[1], this.#o.traces);
      }
      if (ALERTS_PATH.test(url.pathname)) {
        resource = "alerts";
        this.#authorize(req, "read");
        return await serveAlerts(req, res, this.#o.alerts);
      }
      const parsed = parsePath(url.pathname);
      if (parsed.type === "system") {
        resource = parsed.path;
        // Health is open (probes carry no token); metrics and the schema need a reader.
        if (parsed.path !== "healthz" && parsed.path !== "readyz") this.#authorize(req, "read");
        if (req.method !== "GET")
          throw new RestError("MethodNotAllowed", `only GET on ${url.pathname}`, {}, { allow: "GET" });
        return await this.#system(parsed.path, res);
      }
      // Authenticate before saying what exists: unknown paths get 401 too.
      this.#authorize(req, req.method === "GET" ? "read" : "write");
      if (parsed.type === "unknown") throw new RestError("NotFound", `no route for ${url.pathname}`);
      const view = this.#view(parsed.path);
      if (view) {
        resource = parsed.path.plural;
        const name = parsed.path.name;
        if (name !== undefined) return await this.#removeFromView(view, resource, name, req, res);
        if (req.method === "POST" && view.create)
          return sendJson(res, 201, { kind: view.kind, ...((await view.create()) as object) });
        if (req.method !== "GET") {
          const allow = view.create ? "GET, POST" : "GET";
          throw new RestError("MethodNotAllowed", `${resource} allows ${allow}`, {}, { allow });
        }
        const items = view.items(url.searchParams);
        return sendJson(res, 200, { apiVersion: API_VERSION, kind: `${view.kind}List`, items });
      }
      const watch = ["true", "1"].includes(url.searchParams.get("watch") ?? "");
      const route = resolveResourceRoute(parsed.path, req.method ?? "", watch);
      verb = route.verb;
      resource = route.plural;
      context = { name: route.name, group: route.group, kind: route.kind.plural };
      await this.#resource(route, req, res, url);
    } catch (err) {
      this.#sendError(res, err, context);
    } finally {
      this.#metrics.request(verb, resource, res.statusCode, (performance.now() - started) / 1000);
    }
  }

  #serviceGraph(
    req: IncomingMessage,
    res: ServerResponse,
    url: URL,
    namespace: string | undefined,
    name: string | undefined,
  ): void {
    const queries = this.#o.serviceGraph;
    if (!queries) throw new RestError("NotFound", "the service graph is not served here");
    if (req.method !== "GET")
      throw new RestError("MethodNotAllowed", "servicegraph is read-only", {}, { allow: "GET" });
    const raw = url.searchParams.get("window");
    const window = raw === null ? DEFAULT_WINDOW_SECONDS : Number(raw);
    if (!Number.isInteger(window) || window < MIN_WINDOW_SECONDS || window > MAX_WINDOW_SECONDS) {
      throw new RestError(
        "BadRequest",
        `window must be an integer number of seconds from ${MIN_WINDOW_SECONDS} to ${MAX_WINDOW_SECONDS}`,
      );
    }
    if (namespace === undefined || name === undefined) {
      sendJson(res, 200, queries.graph(window));
      return;
    }
    let ns: string;
    let svc: string;
    try {
      ns = decodeURIComponent(namespace);
      svc = decodeURIComponent(name);
    } catch {
      throw new RestError("NotFound", `no route for ${url.pathname}`);
    }
    const detail = queries.service(ns, svc, window);
    if (!detail) throw new RestError("NotFound", `service ${namespace}/${name} not found`);
    sendJson(res, 200, detail);
  }

  #view(path: ResourcePath): View | undefined {
    if (path.group !== GROUP || path.version !== VERSION || path.namespace) return undefined;
    const view = this.#o.views?.[path.plural];
    return path.name === undefined || view?.remove ? view : undefined;
  }

  async #removeFromView(
    view: View,
    plural: string,
    name: string,
    req: IncomingMessage,
    res: ServerResponse,
  ): Promise<void> {
    if (req.method !== "DELETE")
      throw new RestError("MethodNotAllowed", `only DELETE on ${plural}/{name}`, {}, { allow: "DELETE" });
    if (!(await view.remove!(name)))
      throw new RestError("NotFound", `${plural} "${name}" not found`, { name, kind: plural });
    sendJson(res, 200, { apiVersion: "v1", kind: "Status", status: "Success", details: { name, kind: plural } });
  }

  async stopWatches(): Promise<void> {
    for (const w of this.#watches) w.stop();
    await Promise.all([...this.#watches].map((w) => w.done));
  }

  async #system(path: "healthz" | "readyz" | "metrics" | "openapi", res: ServerResponse): Promise<void> {
    switch (path) {
      case "healthz":
        return sendJson(res, 200, { status: "ok" });
      case "readyz": {
        const ready = this.#o.ready?.() ?? true;
        return sendJson(res, ready ? 200 : 503, { status: ready ? "ok" : "not ready" });
      }
      case "metrics": {
        const text = await this.#o.registry.metrics();
        res.writeHead(200, { "content-type": this.#o.registry.contentType });
        res.end(text);
        return;
      }
      case "openapi":
        res.writeHead(200, { "content-type": JSON_TYPE });
        res.end(this.#openApi);
        return;
    }
  }

  async #resource(route: ResourceRoute, req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    const handler = this.#handlers.get(route.kind)!;
    const dryRun = dryRunOf(url);
    const limit = this.#o.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
    switch (route.verb) {
      case "get":
        return sendJson(res, 200, handler.get(route));
      case "list":
        return sendJson(res, 200, handler.list(route));
      case "watch":
        return this.#watch(route, handler, req, res);
      case "create":
        return sendJson(res, 201, await handler.create(route, await readJsonObject(req, JSON_TYPE, limit), dryRun));
      case "update":
        return sendJson(res, 200, await handler.replace(route, await readJsonObject(req, JSON_TYPE, limit), dryRun));
      case "patch": {
        const patch = await readJsonObject(req, MERGE_PATCH_TYPE, limit);
        return sendJson(res, 200, await handler.patch(route, patch, dryRun));
      }
      case "delete":
        return sendJson(res, 200, await handler.delete(route, dryRun));
    }
  }

  async #watch(route: ResourceRoute, handler: KindHandler, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const client = req.socket.remoteAddress ?? "unknown";
    const ofClient = this.#watchesByClient.get(client) ?? 0;
    const refused =
      this.#watches.size >= (this.#o.maxWatches ?? DEFAULT_MAX_WATCHES)
        ? "total"
        : ofClient >= (this.#o.maxWatchesPerClient ?? DEFAULT_MAX_WATCHES_PER_CLIENT)
          ? "per_client"
          : undefined;
    if (refused) {
      this.#metrics.watchRefused(refused);
      const scope = refused === "total" ? "in all" : `from ${client}`;
      throw new RestError("TooManyRequests", `too many watches open ${scope}`, {}, { "retry-after": "1" });
    }
    const watch = serveWatch(res, {
      store: this.#o.store,
      kind: route.kind,
      namespace: route.namespace,
      present: (o) => handler.present(o),
      maxBacklogBytes: this.#o.maxWatchBacklogBytes ?? DEFAULT_MAX_WATCH_BACKLOG_BYTES,
      onCutOff: () => this.#metrics.watchCutOff(),
    });
    this.#watches.add(watch);
    this.#watchesByClient.set(client, ofClient + 1);
    this.#metrics.watchOpened();
    await watch.done;
    this.#watches.delete(watch);
    const left = (this.#watchesByClient.get(client) ?? 1) - 1;
    if (left > 0) this.#watchesByClient.set(client, left);
    else this.#watchesByClient.delete(client);
    this.#metrics.watchClosed();
  }

  #authorize(req: IncomingMessage, needs: "read" | "write"): void {
    const decision = authorize(this.#o.auth, req.headers.authorization, needs);
    if (decision.allowed) return;
    const headers: Record<string, string> =
      decision.reason === "Unauthorized" ? { "www-authenticate": 'Bearer realm="nodemesh"' } : {};
    throw new RestError(decision.reason, decision.message, {}, headers);
  }

  /** The one place where errors become responses. */
  #sendError(res: ServerResponse, err: unknown, context: StatusDetails): void {
    const error = toRestError(err);
    if (error.reason === "InternalError") this.#o.log?.error({ err }, "REST request failed");
    if (res.headersSent) {
      res.destroy(); // a stream already started: the client sees the cut
      return;
    }
    if (error.headers.connection === "close" && !res.req.complete) lingerBeforeClose(res);
    sendJson(res, error.code, toStatus(error, context), error.headers);
  }
}

/** How long a connection answered before its body was read keeps reading (and dropping) it. */
const LINGER_MS = 2000;

/**
 * Lingering close, as nginx's: an answer sent before the request's body was read (a 413) ends the
 * connection, and Node closes it as soon as the answer is out; the body the client is still
 * sending then meets a reset, which can take the answer with it (the client sees EPIPE or
 * ECONNRESET, never the 413). So after the answer the socket half-closes, reads and drops what
 * still comes for up to LINGER_MS, and closes when the client does or the time is up. Node's HTTP
 * server ends a closing response's socket through `destroySoon`.
 */
function lingerBeforeClose(res: ServerResponse): void {
  const socket = res.socket;
  if (!socket) return;
  socket.destroySoon = () => {
    const close = () => socket.destroy();
    socket.end();
    socket.on("data", () => {});
    socket.once("end", close);
    setTimeout(close, LINGER_MS).unref();
    socket.resume();
  };
}

/** `?dryRun=All` (Kubernetes' only value); anything else there is a 400, not a silent real write. */
function dryRunOf(url: URL): boolean {
  const values = url.searchParams.getAll("dryRun");
  if (values.length === 0) return false;
  if (values.every((v) => v === "All")) return true;
  throw new RestError("BadRequest", `dryRun: the only value is "All" (got ${JSON.stringify(values.join(","))})`);
}
