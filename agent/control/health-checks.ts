// Active health checks (TrafficPolicy.healthCheck), run on the control thread. Each endpoint is
// checked where it is best seen:
// - a meshed endpoint on this node: from inside its pod, as kubelet probes it (the socket carries
//   the agent's mark, so the pod's interception rules let it through);
// - an endpoint outside the mesh: from the node, by every agent that routes to it;
// - a meshed endpoint on another node: by that node's agent, which refuses tunnels to it while it
//   fails (NM_ENDPOINT_UNHEALTHY, a connect failure: the caller's agent tries another endpoint).
// The verdict goes in the shared endpoint state the data plane reads (SharedState.setUnhealthy):
// the balancer skips the endpoint as it skips one outlier detection ejected.

import type { Logger } from "pino";
import { durationMs } from "../../api/duration.ts";
import type { EnrolledPod } from "../../api/enrollment.ts";
import { http } from "../../api/node-http.ts";
import { Counter, Gauge, type Registry } from "../../api/prom.ts";
import type { ServiceTable } from "../../api/services.ts";
import type { HealthCheck } from "../../api/traffic.ts";
import { dial, inPodSockets } from "../dataplane/dial.ts";
import { policiesByService } from "../dataplane/policy.ts";
import type { SharedState } from "../dataplane/shared-state.ts";
import { routeKey } from "../dataplane/snapshot.ts";
import { Netns } from "../sys/linux.ts";

/** One endpoint of one Service, checked on its own timer. */
interface Target {
  readonly key: string;
  readonly service: string;
  readonly ip: string;
  readonly port: number;
  /** The pod's namespace path when checked from inside it (a meshed endpoint of this node). */
  readonly netnsPath: string | undefined;
  readonly check: HealthCheck;
  /** Every "ip:port" of the endpoint in this Service (a verdict holds for all its ports). */
  readonly slotKeys: readonly string[];
}

interface State {
  target: Target;
  timer: NodeJS.Timeout;
  healthy: boolean;
  /** Results in a row that disagree with `healthy`. */
  streak: number;
  inFlight: boolean;
}

export interface HealthCheckerOptions {
  node: string;
  shared: SharedState;
  pods: () => EnrolledPod[];
  /** The endpoint slot of "ip:port" in the table in force (undefined: not in it). */
  slot: (key: string) => number | undefined;
  log: Logger;
}

export class HealthChecker {
  readonly #o: HealthCheckerOptions;
  readonly #states = new Map<string, State>();
  #checks: Counter<"destination_service" | "result"> | undefined;

  constructor(options: HealthCheckerOptions) {
    this.#o = options;
  }

  registerMetrics(registry: Registry): void {
    this.#checks = new Counter({
      name: "nodemesh_health_checks_total",
      help: "Active health checks run by this agent, by destination service and result (success, failure)",
      labelNames: ["destination_service", "result"],
      registers: [registry],
    });
    const states = this.#states;
    new Gauge({
      name: "nodemesh_endpoints_unhealthy",
      help: "Endpoints this agent's active health checks hold out of load balancing",
      labelNames: ["destination_service"],
      registers: [registry],
      collect() {
        this.reset();
        for (const { target, healthy } of states.values()) {
          this.labels(target.service).inc(healthy ? 0 : 1);
        }
      },
    });
  }

  /** Follows a new table: starts the checks it asks for, stops those it no longer does. */
  update(table: ServiceTable): void {
    const targets = this.#targets(table);
    for (const [key, state] of this.#states) {
      const next = targets.get(key);
      if (next && sameCheck(next, state.target)) continue;
      this.#stop(key, state);
    }
    for (const [key, target] of targets) {
      if (this.#states.has(key)) continue;
      const state: State = {
        target,
        timer: undefined as unknown as NodeJS.Timeout,
        healthy: true,
        streak: 0,
        inFlight: false,
      };
      state.timer = setInterval(() => void this.#probe(state), durationMs(target.check.interval));
      state.timer.unref();
      this.#states.set(key, state);
      void this.#probe(state);
    }
  }

  stop(): void {
    for (const [key, state] of this.#states) this.#stop(key, state);
  }

  #stop(key: string, state: State): void {
    clearInterval(state.timer);
    this.#states.delete(key);
    // No longer checked (the policy or the endpoint went): back in load balancing.
    if (!state.healthy) this.#mark(state.target, false);
  }

  #targets(table: ServiceTable): Map<string, Target> {
    const policies = policiesByService(table.traffic ?? []);
    const local = new Map(this.#o.pods().map((p) => [p.ip, p]));
    const targets = new Map<string, Target>();
    for (const svc of table.services) {
      const service = `${svc.name}.${svc.namespace}`;
      const check = policies.get(service)?.healthCheck;
      if (!check || svc.ports.length === 0) continue;
      const first = svc.ports[0]!;
      for (const e of svc.endpoints) {
        const localPod = e.meshed ? local.get(e.ip) : undefined;
        if (e.meshed && (e.node !== this.#o.node || !localPod)) continue; // its own node's agent checks it
        const port = check.port ?? e.port ?? first.targetPort ?? first.port;
        const slotKeys = svc.ports.map((p) => routeKey(e.ip, e.port ?? p.targetPort ?? p.port));
        const key = `${service}|${e.ip}:${port}`;
        targets.set(key, { key, service, ip: e.ip, port, netnsPath: localPod?.netnsPath, check, slotKeys });
      }
    }
    return targets;
  }

  async #probe(state: State): Promise<void> {
    if (state.inFlight) return; // a check slower than the interval: skip a turn
    state.inFlight = true;
    const { target } = state;
    let problem: string | undefined;
    try {
      problem = await probe(target);
    } catch (err) {
      problem = (err as Error).message;
    } finally {
      state.inFlight = false;
    }
    if (this.#states.get(target.key) !== state) return; // stopped meanwhile
    this.#checks?.labels(target.service, problem ? "failure" : "success").inc();
    const passed = problem === undefined;
    state.streak = passed === state.healthy ? 0 : state.streak + 1;
    const needed = state.healthy ? target.check.unhealthyThreshold : target.check.healthyThreshold;
    if (state.streak < needed) {
      if (!state.healthy) this.#mark(target, true); // the slot may be new since the table changed
      return;
    }
    state.healthy = passed;
    state.streak = 0;
    this.#mark(target, !passed);
    const where = `${target.ip}:${target.port}`;
    if (passed)
      this.#o.log.info({ service: target.service, endpoint: where }, "endpoint passes its health check again");
    else this.#o.log.warn({ service: target.service, endpoint: where, problem }, "endpoint fails its health check");
  }

  #mark(target: Target, unhealthy: boolean): void {
    for (const key of target.slotKeys) {
      const slot = this.#o.slot(key);
      if (slot !== undefined) this.#o.shared.setUnhealthy(slot, unhealthy);
    }
  }
}

function sameCheck(a: Target, b: Target): boolean {
  return a.netnsPath === b.netnsPath && JSON.stringify([a.check, a.slotKeys]) === JSON.stringify([b.check, b.slotKeys]);
}

/** One check: undefined when it passes, else what failed. */
async function probe(target: Target): Promise<string | undefined> {
  const timeoutMs = durationMs(target.check.timeout);
  const netns = target.netnsPath ? Netns.open(target.netnsPath) : undefined;
  let socket: Awaited<ReturnType<typeof dial>>;
  try {
    socket = await dial(inPodSockets, { netns, ip: target.ip, port: target.port, timeoutMs });
  } finally {
    netns?.close();
  }
  const httpCheck = target.check.http;
  if (!httpCheck) {
    socket.destroy();
    return undefined;
  }
  return new Promise((resolve) => {
    const req = http.request(
      {
        createConnection: () => socket,
        host: target.ip,
        port: target.port,
        path: httpCheck.path,
        headers: { "user-agent": "nodemesh-health-check", connection: "close" },
        timeout: timeoutMs,
      },
      (res) => {
        res.resume();
        const status = res.statusCode ?? 0;
        resolve(status >= 200 && status < 400 ? undefined : `GET ${httpCheck.path}: ${status}`);
        socket.destroy();
      },
    );
    req.on("timeout", () => req.destroy(new Error(`GET ${httpCheck.path}: no answer within ${timeoutMs} ms`)));
    req.on("error", (err) => {
      resolve(err.message);
      socket.destroy();
    });
    req.end();
  });
}
