// Node bindings in Kubernetes mode (the NodeBindingStore contract of controller/config/node-bindings.ts),
// shared by every controller replica: one Secret (NODE_BINDINGS_SECRET_NAME in the controller's
// namespace) whose data holds, per node name, {digest, boundAt} as JSON.
//
// - Every claim reads the Secret first (never a cache), so a replica sees bindings and releases
//   made by the others before it accepts or refuses a secret.
// - Writes are compare-and-swap on resourceVersion (PUT), like the leader-election Lease: on a 409
//   the replica reads again and decides again, so two replicas racing for the same free name agree
//   on one winner. The Secret is created on the first claim (POST; AlreadyExists → read again).
// - An API server that cannot be reached makes claim() throw: the agent server refuses the stream
//   with UNAVAILABLE and the agent retries; nothing is ever bound in memory only.
// - list() and size come from the last read, refreshed every `refreshMs` (REST listings on one
//   replica may lag another's writes by that much).

import type { Logger } from "pino";
import {
  type ClaimResult,
  digestMatches,
  type NodeBinding,
  type NodeBindingStore,
  secretDigest,
} from "../config/node-bindings.ts";
import { KubeApiError, type KubeClient } from "./kube-client.ts";

export const NODE_BINDINGS_SECRET_NAME = "nodemesh-node-bindings";
/** Compare-and-swap attempts per claim or release before giving up (each one re-reads). */
const MAX_ATTEMPTS = 10;

interface StoredBinding {
  digest: string;
  boundAt: string;
}

interface SecretObject {
  apiVersion: "v1";
  kind: "Secret";
  type?: string;
  metadata: { name: string; namespace: string; resourceVersion?: string; labels?: Record<string, string> };
  data?: Record<string, string>;
}

export interface SecretNodeBindingsOptions {
  client: KubeClient;
  namespace: string;
  name?: string;
  log: Logger;
  refreshMs?: number;
}

function decode(secret: SecretObject | undefined, log: Logger): Map<string, StoredBinding> {
  const bindings = new Map<string, StoredBinding>();
  for (const [node, value] of Object.entries(secret?.data ?? {})) {
    try {
      const b = JSON.parse(Buffer.from(value, "base64").toString("utf8")) as Partial<StoredBinding>;
      if (typeof b.digest === "string" && /^[0-9a-f]{64}$/.test(b.digest) && typeof b.boundAt === "string") {
        bindings.set(node, { digest: b.digest, boundAt: b.boundAt });
        continue;
      }
    } catch {}
    // Kept as bound (an unknown digest matches no secret): a corrupt entry never frees a name.
    log.error({ node }, "unreadable node binding in the Secret; release it to bind the node again");
    bindings.set(node, { digest: "", boundAt: "" });
  }
  return bindings;
}

function encode(b: StoredBinding): string {
  return Buffer.from(JSON.stringify(b)).toString("base64");
}

export class SecretNodeBindings implements NodeBindingStore {
  readonly #client: KubeClient;
  readonly #namespace: string;
  readonly #name: string;
  readonly #log: Logger;
  #cache = new Map<string, StoredBinding>();
  #timer?: NodeJS.Timeout;
  #inflight = new Set<Promise<unknown>>();

  constructor(o: SecretNodeBindingsOptions) {
    this.#client = o.client;
    this.#namespace = o.namespace;
    this.#name = o.name ?? NODE_BINDINGS_SECRET_NAME;
    this.#log = o.log;
    const every = o.refreshMs ?? 10_000;
    if (every > 0) {
      this.#timer = setInterval(() => {
        this.#track(this.#read()).catch((err) =>
          this.#log.warn({ err: (err as Error).message }, "could not read the node bindings"),
        );
      }, every);
      this.#timer.unref();
    }
  }

  /** Reads the bindings once (start-up); throws when the API server cannot answer. */
  async load(): Promise<void> {
    await this.#read();
  }

  get size(): number {
    return this.#cache.size;
  }

  boundAt(node: string): string | undefined {
    return this.#cache.get(node)?.boundAt;
  }

  list(): NodeBinding[] {
    return [...this.#cache.entries()]
      .map(([node, b]) => ({ node, boundAt: b.boundAt }))
      .sort((a, b) => (a.node < b.node ? -1 : a.node > b.node ? 1 : 0));
  }

  claim(node: string, secret: string, now: Date): Promise<ClaimResult> {
    return this.#track(
      this.#update((bindings) => {
        const bound = bindings.get(node);
        if (bound) return { result: bound.digest && digestMatches(bound.digest, secret) ? "matches" : "mismatch" };
        bindings.set(node, { digest: secretDigest(secret), boundAt: now.toISOString() });
        return { result: "bound" as const, changed: true };
      }),
    );
  }

  release(node: string): Promise<boolean> {
    return this.#track(
      this.#update((bindings) => (bindings.delete(node) ? { result: true, changed: true } : { result: false })),
    );
  }

  async flush(): Promise<void> {
    await Promise.allSettled([...this.#inflight]);
  }

  close(): void {
    clearInterval(this.#timer);
  }

  get #path(): string {
    return `/api/v1/namespaces/${this.#namespace}/secrets`;
  }

  #track<T>(p: Promise<T>): Promise<T> {
    this.#inflight.add(p);
    const done = () => this.#inflight.delete(p);
    p.then(done, done);
    return p;
  }

  async #get(): Promise<SecretObject | undefined> {
    try {
      return await this.#client.get<SecretObject>(`${this.#path}/${this.#name}`);
    } catch (err) {
      if (err instanceof KubeApiError && err.code === 404) return undefined;
      throw err;
    }
  }

  async #read(): Promise<SecretObject | undefined> {
    const secret = await this.#get();
    this.#cache = decode(secret, this.#log);
    return secret;
  }

  /** Read, decide, compare-and-swap; on a conflict read and decide again. */
  async #update<T>(decide: (bindings: Map<string, StoredBinding>) => { result: T; changed?: boolean }): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      const secret = await this.#read();
      const bindings = new Map(this.#cache);
      const { result, changed } = decide(bindings);
      if (!changed) return result;
      const data = Object.fromEntries(
        [...bindings.entries()].sort(([a], [b]) => (a < b ? -1 : 1)).map(([n, b]) => [n, encode(b)]),
      );
      try {
        if (secret) {
          // resourceVersion makes this a compare-and-swap: a 409 means another replica wrote first.
          await this.#client.request("PUT", `${this.#path}/${this.#name}`, { ...secret, data });
        } else {
          await this.#client.request("POST", this.#path, {
            apiVersion: "v1",
            kind: "Secret",
            type: "Opaque",
            metadata: {
              name: this.#name,
              namespace: this.#namespace,
              labels: { "app.kubernetes.io/part-of": "nodemesh" },
            },
            data,
          } satisfies SecretObject);
        }
        this.#cache = bindings;
        return result;
      } catch (err) {
        if (!(err instanceof KubeApiError && err.code === 409) || attempt >= MAX_ATTEMPTS) throw err;
        this.#log.debug({ attempt }, "node bindings changed meanwhile; deciding again");
      }
    }
  }
}
