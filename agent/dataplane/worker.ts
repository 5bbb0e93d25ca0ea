// Entry point of a data-plane worker thread (see Dataplane). It only translates messages.

import { flushCompileCache } from "node:module";
import { parentPort, workerData } from "node:worker_threads";
import pino from "pino";
import { IdleHeapCollector, WORKER_BUSY_ARMS_COLLECTION } from "../../api/idle-heap.ts";
import { Dataplane } from "./dataplane.ts";
import { type FromWorker, HEARTBEAT_INTERVAL_MS, type ToWorker, type WorkerInit } from "./messages.ts";
import { registerWorkerMemory } from "./metrics.ts";
import { keyringOf } from "./mtls.ts";
import type { OtlpAnswer, OtlpTransport } from "./otlp-exporter.ts";

const init = workerData as WorkerInit;
const port = parentPort!;
const log = pino({ level: init.logLevel, base: { component: "agent", worker: init.index } });
// One heartbeat per worker slot; the pool sets a slot's when it starts a worker there, so the
// nonzero ones are the workers started so far (--workers auto adds them with load).
const heartbeats = new BigInt64Array(init.heartbeats);
const workersStarted = () => heartbeats.reduce((n, beat) => (beat === 0n ? n : n + 1), 0);
// Span batches leave through the control thread: an HTTP client here would run beside the data path.
const exports = new Map<number, { resolve: (a: OtlpAnswer) => void; reject: (e: Error) => void }>();
let nextExport = 1;
const spanTransport: OtlpTransport = (body) =>
  new Promise((resolve, reject) => {
    const id = nextExport++;
    exports.set(id, { resolve, reject });
    send({ type: "export", id, body });
  });
const dataplane = new Dataplane({
  shared: init.shared,
  settings: init.settings,
  log,
  workers: workersStarted,
  spanTransport,
});
registerWorkerMemory(dataplane.metrics.registry, init.index);
// Gives back what a burst of enrollments grew of this worker's heap (the pods' listeners survive
// their first collections, so V8 grows the young generation for them) once the burst is over;
// and, armed by a second a quarter busy, what a burst of traffic grew once the traffic is over.
const idleHeap = new IdleHeapCollector({
  armWhenBusy: WORKER_BUSY_ARMS_COLLECTION,
  onCollect: (r) => log.debug(r, "heap reduced after a burst"),
});
idleHeap.start();

function send(msg: FromWorker): void {
  port.postMessage(msg);
}

async function reply(id: number, work: () => Promise<unknown> | unknown): Promise<void> {
  try {
    send({ type: "reply", id, value: await work() });
  } catch (err) {
    send({ type: "reply", id, error: (err as Error).message });
  }
}

port.on("message", (msg: ToWorker) => {
  switch (msg.type) {
    case "snapshot":
      dataplane.applySnapshot(msg.snapshot);
      return;
    case "identities":
      dataplane.setIdentities(keyringOf(msg.identities), msg.pending);
      return;
    case "add-pod":
      idleHeap.arm();
      void reply(msg.id, () => dataplane.addPod(msg.pod));
      return;
    case "remove-pod":
      idleHeap.arm();
      void reply(msg.id, () => dataplane.removePod(msg.key));
      return;
    case "metrics":
      void reply(msg.id, () => dataplane.metrics.registry.getMetricsAsJSON());
      return;
    case "edges":
      void reply(msg.id, () => dataplane.edges.drain());
      return;
    case "health":
      void reply(msg.id, () => dataplane.health());
      return;
    case "listener-fds":
      void reply(msg.id, () => dataplane.listenerFds());
      return;
    case "outlast-streams":
      void reply(msg.id, () => dataplane.outlastStreams(msg.deadline));
      return;
    case "exported": {
      const waiting = exports.get(msg.id);
      exports.delete(msg.id);
      if (msg.error !== undefined) waiting?.reject(new Error(msg.error));
      else waiting?.resolve({ status: msg.status ?? 0, body: msg.body ?? new Uint8Array() });
      return;
    }
    case "stop":
      // Reply before closing the port: a message posted after close() is dropped.
      void reply(msg.id, () => dataplane.stop(msg.drainMs, msg.noSuccessor)).then(() => port.close());
      return;
  }
});

// The heartbeat: a loop that stops turning stops writing it (WorkerPool.health reads it).
const beat = () => Atomics.store(heartbeats, init.index, BigInt(Date.now()));
beat();
setInterval(beat, HEARTBEAT_INTERVAL_MS).unref();

// The module compile cache (bin/nodemesh.ts) is written now, not only when the thread exits: an
// agent killed (SIGKILL after the grace period, OOM) would otherwise never write it.
flushCompileCache();
send({ type: "ready" });
