// The admin listener (node namespace, default :15020): health, readiness, Prometheus metrics and
// a debug view of the configuration. Metrics of the workers are gathered only when scraped.
//
// Health and metrics answer anyone who reaches the port (kubelet probes, Prometheus). The debug
// view lists every enrolled pod with its labels and namespace path, so it answers only callers on
// the node's own loopback (`curl 127.0.0.1:15020/debug/config` on the node): pods and other nodes
// reach the port too (docs/security.md).

import type { Server } from "node:http";
import type { EnrolledPod } from "../../api/enrollment.ts";
import { sendJson } from "../../api/http-json.ts";
import { http } from "../../api/node-http.ts";
import { collectProcessMetrics } from "../../api/process-metrics.ts";
import { AggregatorRegistry, Gauge, Registry } from "../../api/prom.ts";
import type { ControllerStatus } from "./controller-client.ts";
import { checkPod, type DiagnosisSources, explain } from "./diagnose.ts";
import { HttpError, readJson, sendError } from "./http.ts";
import type { ConfigSource } from "./service-source.ts";

export interface AdminState {
  node: string;
  ready(): boolean;
  /** Data-plane workers started so far (--workers auto adds them with load). */
  workers(): number;
  /** The table in force: the one answer to "which configuration, from where" for /readyz and /metrics. */
  configInForce(): { version: string; source: ConfigSource };
  pods(): EnrolledPod[];
  config(): unknown;
  workerMetrics(): Promise<unknown[]>;
  /** More of the control thread's metrics (the active health checks'). */
  metrics?: Registry;
  /** What is wrong with the data plane, in words (WorkerPool.health); none: healthy. */
  health(): Promise<string[]>;
  /** Present when the agent takes its configuration from the controller. */
  controller?: () => ControllerStatus;
  /** `nodemesh check` and `nodemesh explain` (/debug/check, /debug/explain); absent until the data plane runs. */
  diagnosis?: () => DiagnosisSources | undefined;
}

/** An explain request is a method, a URL and a few headers. */
const EXPLAIN_BODY_LIMIT = 64 * 1024;

export async function startAdminServer(host: string, port: number, state: AdminState): Promise<Server> {
  const registry = new Registry();
  collectProcessMetrics(registry, "nodemesh_agent_");
  new Gauge({
    name: "nodemesh_enrolled_pods",
    help: "Pods enrolled with this agent",
    registers: [registry],
    collect() {
      this.set(state.pods().length);
    },
  });
  new Gauge({
    name: "nodemesh_agent_workers",
    help: "Data-plane worker threads started (with --workers auto, more as load grows)",
    registers: [registry],
    collect() {
      this.set(state.workers());
    },
  });

  const controller = state.controller;
  if (controller) registerControllerMetrics(registry, controller, state.configInForce);

  const diagnosis = (): DiagnosisSources => {
    const sources = state.diagnosis?.();
    if (!sources) throw new HttpError(503, "NOT_READY", "the agent's data plane is not running yet");
    return sources;
  };
  const server = http.createServer(async (req, res) => {
    try {
      if (!URL.canParse(req.url ?? "", "http://admin"))
        throw new HttpError(400, "BAD_REQUEST", "unreadable request target");
      const { pathname, searchParams } = new URL(req.url ?? "/", "http://admin");
      if (pathname.startsWith("/debug/") && !isLoopback(req.socket.remoteAddress)) {
        throw new HttpError(403, "FORBIDDEN", "debug endpoints answer only on the node's loopback (127.0.0.1)");
      }
      // Explaining a request changes nothing either; it is a POST only because it carries one.
      if (req.method === "POST" && pathname === "/debug/explain") {
        return sendJson(res, 200, await explain(diagnosis(), await readJson(req, EXPLAIN_BODY_LIMIT)));
      }
      if (req.method !== "GET") throw new HttpError(405, "METHOD_NOT_ALLOWED", "admin endpoints are read-only");
      if (pathname === "/debug/check") {
        const pod = searchParams.get("pod");
        if (!pod) throw new HttpError(400, "BAD_POD", "/debug/check needs ?pod=NAMESPACE/NAME", "pod");
        return sendJson(res, 200, await checkPod(diagnosis(), pod));
      }
      switch (req.url) {
        // Liveness: a stuck or dead worker, or a pod's listener gone, fails it (the kubelet restarts us).
        case "/healthz": {
          const problems = await state.health();
          return sendJson(res, problems.length === 0 ? 200 : 503, {
            status: problems.length === 0 ? "ok" : "unhealthy",
            ...(problems.length > 0 ? { problems } : {}),
          });
        }
        case "/readyz": {
          const notReady = [...(state.ready() ? [] : ["starting"]), ...(await state.health())];
          const ready = notReady.length === 0;
          return sendJson(res, ready ? 200 : 503, {
            ready,
            ...(ready ? {} : { notReady }),
            node: state.node,
            workers: state.workers(),
            pods: state.pods().length,
            config: state.configInForce(),
            ...(controller ? { controller: controllerDetail(controller()) } : {}),
          });
        }
        case "/metrics": {
          const perWorker = (await state.workerMetrics()) as object[];
          const merged = AggregatorRegistry.aggregate(perWorker);
          const text = `${await registry.metrics()}${(await state.metrics?.metrics()) ?? ""}${await merged.metrics()}`;
          res.writeHead(200, { "content-type": registry.contentType });
          return res.end(text);
        }
        case "/debug/config":
          return sendJson(res, 200, { node: state.node, pods: state.pods(), config: state.config() });
        default:
          throw new HttpError(404, "NOT_FOUND", `no admin endpoint ${req.url}`);
      }
    } catch (err) {
      sendError(res, err);
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    // Shared with a successor during a handover (control/handover.ts): both answer until we exit.
    server.listen({ port, host, reusePort: true }, () => resolve());
  });
  return server;
}

/** 127.0.0.0/8 or ::1, also as an IPv4-mapped IPv6 address (a dual-stack listener's view). */
export function isLoopback(address: string | undefined): boolean {
  if (!address) return false;
  const v4 = address.startsWith("::ffff:") ? address.slice(7) : address;
  return v4.startsWith("127.") || address === "::1";
}

/** The link to the controller; what is in force (and from where) is `config`'s alone to say. */
function controllerDetail(status: ControllerStatus) {
  const { address, connected, lastNack, rejected, lastError, tls, certificates, credential, nodeCertificate } = status;
  return {
    address,
    connected,
    tls: tls ?? false,
    credential: credential ?? null,
    nodeCertificate: nodeCertificate ?? null,
    lastError: lastError ?? null,
    lastNack: lastNack ?? null,
    // Objects of the version in force that this agent left out, and why.
    rejected: rejected ?? [],
    certificates: certificates ?? [],
  };
}

function registerControllerMetrics(
  registry: Registry,
  status: () => ControllerStatus,
  configInForce: AdminState["configInForce"],
): void {
  new Gauge({
    name: "nodemesh_controller_connected",
    help: "1 while the configuration stream to the controller is up (forwarding continues without it)",
    registers: [registry],
    collect() {
      this.set(status().connected ? 1 : 0);
    },
  });
  new Gauge({
    name: "nodemesh_agent_workload_certificates",
    help: "Workload certificates the agent holds: one per identity of its pods",
    registers: [registry],
    collect() {
      this.set((status().certificates ?? []).length);
    },
  });
  new Gauge({
    name: "nodemesh_agent_workload_certificate_renewals",
    help: "Renewals of the workload certificates held, since each identity's first",
    registers: [registry],
    collect() {
      this.set((status().certificates ?? []).reduce((n, c) => n + c.renewals, 0));
    },
  });
  new Gauge({
    name: "nodemesh_config_applied_version_info",
    help: "The configuration version in force (value 1), and where it came from: controller or cache",
    labelNames: ["version", "source"],
    registers: [registry],
    collect() {
      const { version, source } = configInForce();
      this.reset();
      // Before the cache or the controller gave a table, the agent runs on an empty one: none applied.
      if (source === "controller" || source === "cache") this.set({ version, source }, 1);
    },
  });
}
