// A small JSON client for the Kubernetes API on top of @kubernetes/client-node's KubeConfig
// (in-cluster service account or a kubeconfig file: credentials, CA, token refresh) and its
// list/watch informers. Paths are the API's own (`/api/v1/namespaces`, `/apis/{group}/{version}/…`).

import { request as httpsRequest, type RequestOptions } from "node:https";
import { KubeConfig, type KubernetesObject, ListWatch, Watch } from "@kubernetes/client-node";
import { http } from "../../api/node-http.ts";

export type KubeJson = KubernetesObject & { [key: string]: unknown };

export class KubeApiError extends Error {
  readonly code: number;
  readonly reason: string | undefined;
  constructor(code: number, message: string, reason?: string) {
    super(message);
    this.code = code;
    this.reason = reason;
  }
}

export const MERGE_PATCH = "application/merge-patch+json";
const REQUEST_TIMEOUT_MS = 30_000;
/** Objects per list page (the API server's chunking; client-go's informers use 500). */
export const LIST_PAGE_SIZE = 500;

export function loadKubeConfig(kubeconfig?: string): KubeConfig {
  const kc = new KubeConfig();
  if (kubeconfig) kc.loadFromFile(kubeconfig);
  else kc.loadFromCluster();
  if (!kc.getCurrentCluster()) throw new Error("no Kubernetes cluster in the configuration");
  return kc;
}

export class KubeClient {
  readonly config: KubeConfig;
  constructor(config: KubeConfig) {
    this.config = config;
  }

  async request<T = KubeJson>(
    method: string,
    path: string,
    body?: unknown,
    contentType = "application/json",
  ): Promise<T> {
    const server = this.config.getCurrentCluster()!.server.replace(/\/$/, "");
    const url = new URL(server + path);
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const opts: RequestOptions = {
      method,
      headers: {
        accept: "application/json",
        ...(payload ? { "content-type": contentType, "content-length": Buffer.byteLength(payload) } : {}),
      },
      timeout: REQUEST_TIMEOUT_MS,
    };
    await this.config.applyToHTTPSOptions(opts);
    const send = url.protocol === "https:" ? httpsRequest : http.request;
    return new Promise<T>((resolve, reject) => {
      const req = send(url, opts, (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("error", reject);
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          let json: { message?: string; reason?: string } | undefined;
          try {
            json = JSON.parse(text);
          } catch {}
          const code = res.statusCode ?? 0;
          if (code >= 200 && code < 300 && json) resolve(json as T);
          else
            reject(
              new KubeApiError(code, `${method} ${path}: ${code} ${json?.message ?? text.slice(0, 200)}`, json?.reason),
            );
        });
      });
      req.on("timeout", () => req.destroy(new Error(`${method} ${path}: no answer in ${REQUEST_TIMEOUT_MS} ms`)));
      req.on("error", reject);
      req.end(payload);
    });
  }

  get<T = KubeJson>(path: string): Promise<T> {
    return this.request<T>("GET", path);
  }

  mergePatch<T = KubeJson>(path: string, patch: unknown): Promise<T> {
    return this.request<T>("PATCH", path, patch, MERGE_PATCH);
  }

  /** Every object of a collection, in chunks of `pageSize`, from one consistent snapshot. */
  async listAll(path: string, pageSize = LIST_PAGE_SIZE) {
    const items: KubeJson[] = [];
    let cont: string | undefined;
    let resourceVersion = "";
    for (let page = 0; page < 100_000; page++) {
      const query = new URLSearchParams({ limit: String(pageSize), ...(cont ? { continue: cont } : {}) });
      // A continue token that expired (410) fails the whole list: the informer lists again from the start.
      const list = await this.get<{ items?: KubeJson[]; metadata?: { resourceVersion?: string; continue?: string } }>(
        `${path}?${query}`,
      );
      items.push(...(list.items ?? []));
      resourceVersion = list.metadata?.resourceVersion ?? resourceVersion;
      cont = list.metadata?.continue || undefined;
      if (!cont) break;
    }
    return { metadata: { resourceVersion }, items };
  }

  /**
   * A list/watch cache of one collection: client-node's ListWatch (relist on 410 Gone, deletions
   * seen while disconnected reported on relist), with chunked lists and bookmarks asked for.
   * It stops on any other error: the caller restarts it (kubernetes-source.ts). `onListed` is
   * called after each complete list.
   */
  informer(path: string, pageSize = LIST_PAGE_SIZE, onListed: () => void = () => {}): ListWatch<KubeJson> {
    const watch = new Watch(this.config);
    const withBookmarks = {
      watch: (p: string, query: Record<string, string | number | boolean | undefined>, ...rest: [never, never]) =>
        watch.watch(p, { ...query, allowWatchBookmarks: true }, ...rest),
    } as unknown as Watch;
    const list = async () => {
      const result = await this.listAll(path, pageSize);
      onListed();
      return result;
    };
    return new ListWatch<KubeJson>(path, withBookmarks, list as never, false);
  }
}
