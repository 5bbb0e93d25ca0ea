// The controller process: the store, the REST API (and later the UI) and the agents' gRPC
// configuration stream, wired together. Each part is its own module; this file only assembles.

import { hostname, networkInterfaces } from "node:os";
import { join } from "node:path";
import pino, { type Logger } from "pino";
import { IdleHeapCollector } from "../api/idle-heap.ts";
import type { Resource } from "../api/resources.ts";
import { agentsView } from "./agents-view.ts";
import { AlertmanagerClient } from "./alerts/alertmanager.ts";
import { isLoopbackHost, TokenAuth } from "./auth.ts";
import { AgentServer } from "./config/agent-server.ts";
import { agentTlsEnabled, type GrpcTlsSetting, serverNames } from "./config/agent-tls.ts";
import { NodeBindings } from "./config/node-bindings.ts";
import { ObjectStatuses } from "./config/object-status.ts";
import { GraphQueries } from "./graph/service-graph.ts";
import { RotatingCa, RotationInProgress, RotationRefused } from "./identity/root-rotation.ts";
import { type PluggedCaFiles, WorkloadCa } from "./identity/workload-ca.ts";
import type { KubernetesMode, KubernetesModeOptions } from "./kubernetes/kubernetes-mode.ts";
import { createControllerRegistry, registerStoreMetrics, TraceMetrics } from "./metrics.ts";
import { RestError } from "./rest/errors.ts";
import { type RestServer, startRestServer } from "./rest/server.ts";
import { FileStore } from "./store/file-store.ts";
import type { Store } from "./store/store.ts";
import { type OtlpServer, startOtlpServer } from "./traces/otlp-server.ts";
import { TraceWindow } from "./traces/trace-store.ts";
import { uiHandler } from "./ui/ui-server.ts";

export const DEFAULT_TRUST_DOMAIN = "cluster.local";
/** Istio's default workload certificate lifetime. */
export const DEFAULT_CERTIFICATE_LIFETIME_MS = 24 * 3600_000;

export interface ControllerOptions {
  storeDir: string;
  restHost: string;
  restPort: number;
  grpcHost: string;
  grpcPort: number;
  /** Bearer tokens for the REST API; without them the API only listens on loopback. */
  tokensFile?: string;
  /** Shared bootstrap token agents present on the gRPC stream. */
  agentToken?: string;
  /** Accept agents without a token on a non-loopback gRPC address (refused otherwise). */
  insecureAgents?: boolean;
  /** A CA of the user's PKI that signs instead of a root of nodemesh's own (`--ca-cert-file` …). */
  pluggedCa?: PluggedCaFiles;
  /** TLS on the agents' port (`--grpc-tls`, default auto: TLS unless grpcHost is loopback). */
  grpcTls?: GrpcTlsSetting;
  /** More names for the gRPC server certificate (`--tls-san`). */
  tlsSans?: string[];
  /** Most node names bound at once (default: AgentServer's). */
  maxNodes?: number;
  /** Workload identities: spiffe://<trustDomain>/ns/…/sa/…, certificates living `certificateLifetimeMs`. */
  trustDomain?: string;
  certificateLifetimeMs?: number;
  logLevel: string;
  /** Kubernetes as the source of truth instead of the file store (`--source kubernetes`). */
  kubernetes?: Omit<KubernetesModeOptions, "log">;
  /** Where the OTLP/HTTP trace receiver listens (`--otlp-address`); absent: no receiver. */
  otlp?: { host: string; port: number };
  /** Alertmanager the dashboard's alerts come from (`--alertmanager-url`). */
  alertmanagerUrl?: URL;
}

export class Controller {
  readonly log: Logger;
  readonly store: Store;
  private rest?: RestServer;
  private otlp?: OtlpServer;
  private agents?: AgentServer;
  private ca?: RotatingCa;
  readonly kubernetes?: KubernetesMode;
  /**
   * Gives back what start-up, a fleet's arrival (agents connecting, their full tables) or a write
   * (a table to every agent) grew of the heap. Quiet is under half busy: a thousand agents' reports
   * keep the controller 25–30 % busy for good, so at the agents' 5 % it never collected, and 20
   * policy writes left it at 400 MB where a collection takes it to 220 (docs/benchmarks.md).
   */
  private readonly idleHeap = new IdleHeapCollector({
    quietUtilization: 0.5,
    onCollect: (r) => this.log.debug(r, "heap reduced after a burst"),
  });

  private constructor(opts: ControllerOptions, log: Logger, kubernetes: KubernetesMode | undefined) {
    this.log = log;
    if (kubernetes) this.kubernetes = kubernetes;
    this.store = kubernetes?.store ?? new FileStore(opts.storeDir);
  }

  /**
   * All or nothing: if any part fails to start (a port taken, a refused address, a corrupt store),
   * what already started is stopped before the error is thrown, so no half-started controller
   * keeps serving agents.
   */
  static async start(opts: ControllerOptions): Promise<Controller> {
    const log = pino({ level: opts.logLevel, base: { component: "controller" } });
    // Loaded only in Kubernetes mode: the Kubernetes client costs about 50 MB of memory.
    const kubernetes = opts.kubernetes
      ? new (await import("./kubernetes/kubernetes-mode.ts")).KubernetesMode({ ...opts.kubernetes, log })
      : undefined;
    const c = new Controller(opts, log, kubernetes);
    try {
      await c.#start(opts);
    } catch (err) {
      await c.stop().catch((stopErr) => c.log.error({ err: stopErr }, "stopping a controller that failed to start"));
      throw err;
    }
    return c;
  }

  async #start(opts: ControllerOptions): Promise<void> {
    this.idleHeap.start();
    await this.store.open(); // a corrupt store throws here: the controller refuses to start
    await this.kubernetes?.startSource(); // agents get a table only once Kubernetes was read
    const registry = createControllerRegistry();
    registerStoreMetrics(registry, this.store);
    const auth = opts.tokensFile ? await TokenAuth.fromFile(opts.tokensFile) : undefined;
    // Durable, so a restarted controller keeps every node bound to its agent: in Kubernetes mode a
    // Secret shared by the replicas, otherwise a file beside the store.
    const bindingsLog = this.log.child({ component: "node-bindings" });
    const bindings = this.kubernetes
      ? await this.kubernetes.nodeBindings()
      : await NodeBindings.load(join(opts.storeDir, "node-bindings.json"), (err) =>
          bindingsLog.error({ err: err.message }, "could not write the node bindings"),
        );
    // The workload CA's root lives beside the store; in Kubernetes mode (no writable disk) in a
    // Secret every replica shares, so all of them sign for one root (kubernetes/ca-secret.ts).
    const lifetimeMs = opts.certificateLifetimeMs ?? DEFAULT_CERTIFICATE_LIFETIME_MS;
    const caLog = this.log.child({ component: "workload-ca" });
    const trustDomain = opts.trustDomain ?? DEFAULT_TRUST_DOMAIN;
    // The user's intermediate when one is plugged in; in Kubernetes mode otherwise the replicas'
    // shared root; else the store dir's.
    const plugged = opts.pluggedCa && (await WorkloadCa.plugged(trustDomain, opts.pluggedCa));
    const sharedRoot =
      this.kubernetes && !plugged
        ? await this.kubernetes.sharedCaRoot(async () => {
            const made = await WorkloadCa.open(trustDomain);
            return { certPem: made.trustBundlePem, keyPem: await made.keyPem() };
          })
        : undefined;
    if (this.kubernetes && plugged) await this.kubernetes.publishCaRoot(plugged.trustBundlePem);
    const ca = await RotatingCa.open(
      trustDomain,
      this.kubernetes ? undefined : opts.storeDir,
      lifetimeMs,
      (status) => {
        caLog.info(status, status.phase ? `root rotation: ${status.phase}` : "root rotation done");
        if (!status.phase) this.agents?.serverCertificate?.renewNow();
      },
      plugged || (sharedRoot && (await WorkloadCa.fromPem(trustDomain, sharedRoot.certPem, sharedRoot.keyPem))),
    );
    this.ca = ca;
    const tls = agentTlsEnabled(opts.grpcTls ?? "auto", opts.grpcHost);
    if (!tls && opts.grpcTls === "off" && !isLoopbackHost(opts.grpcHost)) {
      this.log.warn(
        { grpc: opts.grpcHost },
        "the agents' gRPC is plaintext off loopback (--grpc-tls off): its token and configuration cross the network in the clear",
      );
    }
    const kubernetesSource = this.kubernetes?.source;
    this.agents = await AgentServer.start({
      store: this.store,
      ...(kubernetesSource ? { cluster: kubernetesSource.clusterView() } : {}),
      metrics: registry,
      host: opts.grpcHost,
      port: opts.grpcPort,
      ...(tls
        ? {
            tls: {
              // The root agents were given (--controller-ca-file, ca.pem): it stays until a
              // rotation ends, then the certificate is issued again from the new one.
              ca: () => ca.current,
              names: serverNames({
                listenHost: opts.grpcHost,
                extra: opts.tlsSans ?? [],
                interfaceAddresses: Object.values(networkInterfaces())
                  .flat()
                  .map((i) => i?.address ?? ""),
                hostname: hostname(),
              }),
            },
          }
        : {}),
      ...(opts.agentToken ? { token: opts.agentToken } : {}),
      insecureAgents: opts.insecureAgents ?? false,
      bindings,
      ...(opts.maxNodes !== undefined ? { maxNodes: opts.maxNodes } : {}),
      identities: { ca, lifetimeMs },
      log: this.log.child({ component: "agent-server" }),
      onAgentConnected: () => this.idleHeap.arm(),
      onTablePublished: () => this.idleHeap.arm(),
    });
    const agents = this.agents;
    const statuses = new ObjectStatuses(
      this.store,
      (key) => agents.propagation(key),
      (view) => agents.preview(view),
    );
    this.kubernetes?.startLeaderDuties((key) => statuses.statusOfKey(key));
    // Traces from the agents (OTLP), kept in a bounded window for the dashboard.
    let traceMetrics: TraceMetrics | undefined;
    const traces = new TraceWindow({}, (reason, n) => traceMetrics?.evicted(reason, n));
    traceMetrics = new TraceMetrics(registry, traces);
    if (opts.otlp) {
      this.otlp = await startOtlpServer({
        ...opts.otlp,
        window: traces,
        metrics: traceMetrics,
        log: this.log.child({ component: "otlp" }),
      });
    }
    this.rest = await startRestServer({
      traces,
      ...(opts.alertmanagerUrl ? { alerts: new AlertmanagerClient(opts.alertmanagerUrl) } : {}),
      store: this.store,
      registry,
      host: opts.restHost,
      port: opts.restPort,
      ...(auth ? { auth } : {}),
      log: this.log,
      statusFor: (r: Resource) => statuses.status(r),
      preview: (change) => statuses.preview(change),
      ui: uiHandler(),
      serviceGraph: new GraphQueries({
        traffic: agents.traffic,
        store: this.store,
        service: (namespace, name) => agents.service(namespace, name),
        propagation: (key) => agents.propagation(key),
      }),
      views: {
        agents: agentsView(agents),
        // Which node names are bound to an agent's node secret; DELETE releases one.
        nodebindings: {
          kind: "NodeBinding",
          items: () => agents.nodeBindings(),
          remove: (node) => agents.releaseNode(node),
        },
        // The workload CA's roots; POST starts a root rotation (controller/identity/root-rotation.ts).
        rootrotations: {
          kind: "RootRotation",
          items: () => [{ name: "workload-ca", ...ca.status() }],
          create: async () => {
            if (this.kubernetes) {
              // Each replica would make its own next root: the rotation state is not shared yet.
              throw new RestError(
                "Conflict",
                "root rotation is not available in Kubernetes mode yet (each replica would make its own next root); " +
                  "a new root without an overlap: delete the Secret nodemesh-system/nodemesh-ca and restart the controllers (docs/security.md)",
              );
            }
            try {
              return { name: "workload-ca", ...(await ca.rotate()) };
            } catch (err) {
              if (err instanceof RotationInProgress || err instanceof RotationRefused)
                throw new RestError("Conflict", err.message);
              throw err;
            }
          },
        },
      },
    });
    const source = this.kubernetes ? "kubernetes" : opts.storeDir;
    this.log.info(
      {
        rest: this.rest.url,
        grpc: `${opts.grpcHost}:${agents.port}`,
        grpcTls: tls,
        store: source,
        ...(this.otlp ? { otlp: this.otlp.url } : {}),
      },
      "controller ready",
    );
    this.idleHeap.arm(); // start-up's garbage
  }

  async stop(): Promise<void> {
    this.idleHeap.stop();
    await this.kubernetes?.stop();
    await this.rest?.close();
    await this.otlp?.close();
    await this.agents?.stop();
    this.ca?.stop();
    await this.store.close();
  }
}
