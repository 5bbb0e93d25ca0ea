// Which secret each node name belongs to: trust on first use. The first agent to say Hello as a
// node binds the name to the digest of its node secret (api/agent-service.ts NODE_SECRET_METADATA);
// later streams for that name must present the same secret, so a process that can reach the gRPC
// port cannot take over an existing node. Only an operator releases a binding (REST DELETE
// /apis/nodemesh.io/v1alpha1/nodebindings/{node}, or `nodemesh nodes release NODE`).
//
// Kept beside the store (<store-dir>/node-bindings.json, written atomically) so that a restarted
// controller keeps them. New bindings are written in the background, coalesced; a crash within
// one write of a new binding forgets it and the node binds again on its next Hello.

import { createHash, timingSafeEqual } from "node:crypto";
import { readFile } from "node:fs/promises";
import { writeFileAtomic } from "../store/file-store.ts";

export interface NodeBinding {
  node: string;
  /** When the node was first claimed (ISO 8601). */
  boundAt: string;
}

interface StoredBinding {
  /** sha256 of the node secret, hex. */
  digest: string;
  boundAt: string;
}

export type BindingCheck = "matches" | "unbound" | "mismatch";

/** What a claim decided: the name was free and is now bound, or was bound to this secret, or to another. */
export type ClaimResult = "bound" | "matches" | "mismatch";

/**
 * The one contract of node bindings; two backends: this file (standalone, NodeBindings) and the
 * Kubernetes API (controller/kubernetes/node-bindings-secret.ts, shared by every replica).
 */
export interface NodeBindingStore {
  /** Bound names as last seen (for --max-nodes and the metric). */
  readonly size: number;
  /**
   * Decides a Hello's claim against the authoritative bindings and binds a free name to the secret.
   * Throws when the bindings cannot be read or written (the claim must then be refused).
   */
  claim(node: string, secret: string, now: Date): Promise<ClaimResult>;
  /** Forgets the node's binding; false when there was none. Durable on return. */
  release(node: string): Promise<boolean>;
  list(): NodeBinding[];
  /** When `node` was bound, as last seen; undefined: not bound (a lookup: asked at every Hello). */
  boundAt(node: string): string | undefined;
  /** Waits for pending writes. */
  flush(): Promise<void>;
}

export function secretDigest(secret: string): string {
  return digestOf(secret).toString("hex");
}

/** Constant-time comparison of a stored hex digest with a secret's. */
export function digestMatches(digestHex: string, secret: string): boolean {
  const stored = Buffer.from(digestHex, "hex");
  const given = digestOf(secret);
  return stored.length === given.length && timingSafeEqual(stored, given);
}

const FILE_VERSION = 1;

function digestOf(secret: string): Buffer {
  return createHash("sha256").update(secret).digest();
}

export class NodeBindings implements NodeBindingStore {
  readonly #path: string | undefined;
  readonly #bindings: Map<string, StoredBinding>;
  readonly #onWriteError: (err: Error) => void;
  #dirty = false;
  #flushing: Promise<void> | undefined;

  private constructor(
    path: string | undefined,
    bindings: Map<string, StoredBinding>,
    onWriteError: (err: Error) => void,
  ) {
    this.#path = path;
    this.#bindings = bindings;
    this.#onWriteError = onWriteError;
  }

  /** Bindings in memory only (tests, simulations). */
  static inMemory(): NodeBindings {
    return new NodeBindings(undefined, new Map(), () => {});
  }

  /** Loads `path` (absent: no bindings yet); an unreadable file throws: the controller refuses to start. */
  static async load(path: string, onWriteError: (err: Error) => void): Promise<NodeBindings> {
    let text: string;
    try {
      text = await readFile(path, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return new NodeBindings(path, new Map(), onWriteError);
      throw err;
    }
    return new NodeBindings(path, parseBindings(text, path), onWriteError);
  }

  get size(): number {
    return this.#bindings.size;
  }

  /** Compares digests in constant time. */
  check(node: string, secret: string): BindingCheck {
    const bound = this.#bindings.get(node);
    if (!bound) return "unbound";
    return timingSafeEqual(Buffer.from(bound.digest, "hex"), digestOf(secret)) ? "matches" : "mismatch";
  }

  async claim(node: string, secret: string, now: Date): Promise<ClaimResult> {
    const found = this.check(node, secret);
    if (found !== "unbound") return found;
    this.bind(node, secret, now);
    return "bound";
  }

  bind(node: string, secret: string, now: Date): void {
    this.#bindings.set(node, { digest: digestOf(secret).toString("hex"), boundAt: now.toISOString() });
    this.#persist().catch(this.#onWriteError);
  }

  /** Forgets the node's binding (the next Hello for it binds again); false when there was none. Durable on return. */
  async release(node: string): Promise<boolean> {
    if (!this.#bindings.delete(node)) return false;
    await this.#persist();
    return true;
  }

  boundAt(node: string): string | undefined {
    return this.#bindings.get(node)?.boundAt;
  }

  list(): NodeBinding[] {
    return [...this.#bindings.entries()]
      .map(([node, b]) => ({ node, boundAt: b.boundAt }))
      .sort((a, b) => (a.node < b.node ? -1 : a.node > b.node ? 1 : 0));
  }

  /** Waits for pending writes. */
  async flush(): Promise<void> {
    await this.#flushing?.catch(() => {});
  }

  /** One write at a time; changes made meanwhile go out together in the next one. */
  #persist(): Promise<void> {
    const path = this.#path;
    if (!path) return Promise.resolve();
    this.#dirty = true;
    this.#flushing ??= (async () => {
      try {
        while (this.#dirty) {
          this.#dirty = false;
          const nodes = Object.fromEntries([...this.#bindings.entries()].sort(([a], [b]) => (a < b ? -1 : 1)));
          await writeFileAtomic(path, `${JSON.stringify({ version: FILE_VERSION, nodes }, null, 2)}\n`);
        }
      } finally {
        this.#flushing = undefined; // in the same turn as the last check of #dirty: no change is missed
      }
    })();
    return this.#flushing;
  }
}

function parseBindings(text: string, path: string): Map<string, StoredBinding> {
  const corrupt = (why: string) => new Error(`${path} is corrupt: ${why}; refusing to start (fix or remove it)`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw corrupt(`not JSON (${(err as Error).message})`);
  }
  const file = parsed as { version?: unknown; nodes?: unknown };
  if (file?.version !== FILE_VERSION) throw corrupt(`version must be ${FILE_VERSION}`);
  if (typeof file.nodes !== "object" || file.nodes === null) throw corrupt("nodes must be an object");
  const bindings = new Map<string, StoredBinding>();
  for (const [node, value] of Object.entries(file.nodes)) {
    const b = value as Partial<StoredBinding>;
    if (typeof b?.digest !== "string" || !/^[0-9a-f]{64}$/.test(b.digest) || typeof b.boundAt !== "string") {
      throw corrupt(`nodes.${node} must be {digest: 64 hex digits, boundAt}`);
    }
    bindings.set(node, { digest: b.digest, boundAt: b.boundAt });
  }
  return bindings;
}
