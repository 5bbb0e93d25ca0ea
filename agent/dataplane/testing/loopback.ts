// A data plane without root: the real Dataplane (pools, picker, shared counters, HTTP frontend)
// with plain loopback sockets instead of sockets made in a pod's namespace, and no listeners.
// Unit tests hand it accepted sockets and the original destination themselves.

import net from "node:net";
import pino from "pino";
import type { Service } from "../../../api/services.ts";
import { parseTrafficObject } from "../../../api/traffic.ts";
import type { Netns } from "../../sys/linux.ts";
import { Dataplane } from "../dataplane.ts";
import { plainSockets } from "../dial.ts";
import { DEFAULT_FLOOD_LIMITS, Gate } from "../limits.ts";
import type { PodContext } from "../pod.ts";
import { allocateSharedBuffers } from "../shared-state.ts";
import { slotKeys } from "../snapshot.ts";
import type { TracingSettings } from "../tracing.ts";

/** `tracing`: spans and their export (default: off). */
export function loopbackDataplane(
  services: Service[],
  traffic: unknown[] = [],
  tracing: TracingSettings = { samplingPercent: 0, node: "loopback", version: "test" },
): Dataplane {
  const dataplane = new Dataplane({
    shared: allocateSharedBuffers(),
    settings: {
      connectTimeoutMs: 1000,
      detectTimeoutMs: 200,
      headersTimeoutMs: 2000,
      accessLog: { scope: "none" },
      requestMetrics: true,
      drainMs: 1000,
      limits: DEFAULT_FLOOD_LIMITS,
      tracing,
    },
    log: pino({ level: "silent" }),
    sockets: plainSockets,
  });
  configure(dataplane, services, traffic);
  return dataplane;
}

/** Applies a new table, with slots numbered as the control thread would. */
export function configure(dataplane: Dataplane, services: Service[], traffic: unknown[] = []): void {
  const parsed = traffic.map((o) => {
    const r = parseTrafficObject(o);
    if (!r.ok) throw new Error(JSON.stringify(r.errors));
    return r.value;
  });
  const table = { services, traffic: parsed };
  const { routes, endpoints } = slotKeys(table);
  dataplane.applySnapshot({
    version: "test",
    table,
    routeSlots: Object.fromEntries(routes.map((k, i) => [k, i + 1])),
    endpointSlots: Object.fromEntries([...new Set(endpoints)].map((k, i) => [k, i + 1])),
    node: "node-a",
    rttMs: {},
  });
}

/** A pod at a loopback address; its "namespace" is never opened (plain sockets ignore it). */
export function loopbackPod(ip: string, name: string, app = name, namespace = "default"): PodContext {
  return {
    key: `${namespace}/${name}`,
    pod: {
      name,
      namespace,
      ip,
      labels: { app },
      serviceAccount: "default",
      netnsPath: "",
      enrolledAt: new Date(0).toISOString(),
    },
    netns: {} as Netns,
    workload: { name: app, namespace },
    handshakes: new Gate(DEFAULT_FLOOD_LIMITS.podHandshakes),
  };
}

/**
 * A listener that hands each accepted socket to `handle` (paused, as the agent's listeners do):
 * what a pod's redirected connection would be. Returns its port and a close.
 */
export async function acceptor(
  handle: (socket: net.Socket) => void,
): Promise<{ port: number; close: () => Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ pauseOnConnect: true, allowHalfOpen: true }, (socket) => {
    sockets.add(socket);
    socket.on("error", () => {});
    socket.once("close", () => sockets.delete(socket));
    handle(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
