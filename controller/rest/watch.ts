// `?watch=true`: newline-delimited JSON watch events, Kubernetes style. The stream starts with the
// current objects as ADDED, then every change in store order, until the client goes away.

import type { ServerResponse } from "node:http";
import { JSON_TYPE } from "../../api/http-json.ts";
import { apiVersionOf, type KindInfo, type Resource } from "../../api/resources.ts";
import type { Store, WatchEventType } from "../store/store.ts";

/**
 * A watcher this far behind is cut off, its connection destroyed with what was buffered for it (it
 * re-lists and watches again, as Kubernetes clients do after a 410), rather than kept buffering.
 */
export const DEFAULT_MAX_WATCH_BACKLOG_BYTES = 4 * 1024 * 1024;
/** Watches open at once, in all and per client (remote address): each is a subscription and a backlog. */
export const DEFAULT_MAX_WATCHES = 256;
export const DEFAULT_MAX_WATCHES_PER_CLIENT = 16;

export interface WatchRequest {
  store: Store;
  kind: KindInfo;
  /** Undefined = all namespaces. */
  namespace: string | undefined;
  /** What the client sees of an object (adds the live status). */
  present(obj: Resource): Resource;
  maxBacklogBytes: number;
  /** Called when the watcher fell `maxBacklogBytes` behind and was cut off. */
  onCutOff(): void;
}

export interface ActiveWatch {
  /** Resolves when the stream ended, whoever ended it. */
  done: Promise<void>;
  stop(): void;
}

/** Streams until the client disconnects or `stop()`. */
export function serveWatch(res: ServerResponse, w: WatchRequest): ActiveWatch {
  res.writeHead(200, { "content-type": JSON_TYPE, "cache-control": "no-store" });
  res.flushHeaders(); // an empty collection must still answer now, not at the first change
  const apiVersion = apiVersionOf(w.kind);
  const selected = (o: Resource) =>
    o.kind === w.kind.kind &&
    o.apiVersion === apiVersion &&
    (w.namespace === undefined || o.metadata.namespace === w.namespace);
  const send = (type: WatchEventType, object: Resource) => {
    if (res.writableEnded) return;
    res.write(`${JSON.stringify({ type, object: w.present(object) })}\n`);
    if (res.writableLength > w.maxBacklogBytes) cutOff();
  };
  // Subscribing and listing in one synchronous step: no change can fall between the two.
  const unsubscribe = w.store.watch((event) => {
    if (selected(event.object)) send(event.type, event.object);
  });
  const stop = () => {
    unsubscribe();
    if (!res.writableEnded) res.end();
  };
  // end() would keep the backlog queued until the reader took it: destroy frees it now.
  const cutOff = () => {
    unsubscribe();
    res.destroy();
    w.onCutOff();
  };
  for (const obj of w.store.list(w.kind.plural, w.namespace)) send("ADDED", obj);
  // "close" on the response fires when the client disconnects as well as after end().
  const done = new Promise<void>((resolve) => res.once("close", resolve)).then(() => {
    unsubscribe();
  });
  return { done, stop };
}
