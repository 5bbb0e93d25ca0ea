// The controller's gRPC AgentService (api/agent.proto): one configuration stream per node agent.
// It owns the agent registry, the propagation tracker and the table publisher, and exposes what
// the rest of the controller shows: agents(), propagation(), configVersion().
//
// Authentication is a shared bootstrap token (`authorization: Bearer <token>` metadata), off when
// no token is configured; mTLS with per-node identities comes with the security issue.

import { timingSafeEqual } from "node:crypto";
import {
  status as GrpcStatus,
  type Metadata,
  Server,
  ServerCredentials,
  type ServiceDefinition,
  type ServiceError,
  type UntypedServiceImplementation,
} from "@grpc/grpc-js";
import pino, { type Logger } from "pino";
import { Gauge, Histogram, type Registry } from "prom-client";
import {
  agentServiceDefinition,
  CONTROLLER_GRPC_PORT,
  type Hello,
  type Report,
  type WirePod,
} from "../../api/agent-service.ts";
import type { PropagationStatus } from "../../api/resources.ts";
import type { Service } from "../../api/services.ts";
import { TrafficWindow } from "../graph/traffic-window.ts";
import type { ObjectKey, Store } from "../store/store.ts";
import { AgentRegistry, type AgentStatus } from "./agent-registry.ts";
import { type AgentCall, AgentSession, type SessionHost } from "./agent-session.ts";
import { ConfigPublisher } from "./config-publisher.ts";
import { PropagationTracker } from "./propagation.ts";
import { SendBudget } from "./send-budget.ts";
import { resourceKey } from "./service-table.ts";

export type { AgentStatus } from "./agent-registry.ts";

export interface AgentServerOptions {
  store: Store;
  /** Where the controller's metrics live; the server adds its own. */
  metrics: Registry;
  /** Default 0.0.0.0. */
  host?: string;
  /** Default 15012; 0 picks a free port (see `port`). */
  port?: number;
  /** Shared bootstrap token agents must present; undefined = no authentication. */
  token?: string;
  /** Store or pod changes within this window go out as one Config. Default 20 ms. */
  debounceMs?: number;
  /** Delay before the first table goes out after start-up (agents report their pods first). Default 2000 ms. */
  startupGraceMs?: number;
  /** How long a disconnected node's pods stay endpoints. Default 60 s. */
  forgetNodeAfterMs?: number;
  log?: Logger;
}

// Config bytes written to the streams and not yet flushed to their sockets, over all agents (see
// send-budget.ts): enough for a few full tables of 10,000 services at once, and for every agent's
// small update.
const SEND_BUDGET_BYTES = 16 << 20;
const PROPAGATION_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
// Detects agents that vanished without closing their connection (power loss, partition).
const SERVER_CHANNEL_OPTIONS = {
  "grpc.keepalive_time_ms": 20_000,
  "grpc.keepalive_timeout_ms": 10_000,
  "grpc.http2.min_ping_interval_without_data_ms": 5_000,
  "grpc.max_receive_message_length": 4 << 20,
};

/** The AgentService definition, its responses going out as the bytes ConfigPublisher encoded. */
const definitionForEncodedConfigs: ServiceDefinition = {
  ...agentServiceDefinition,
  Connect: { ...agentServiceDefinition.Connect, responseSerialize: (bytes: Buffer) => bytes },
};

function wallClockMs(): number {
  return performance.timeOrigin + performance.now();
}

export class AgentServer implements SessionHost {
  /** The agents' traffic reports of the last 15 minutes: the service graph. */
  readonly traffic = new TrafficWindow();
  readonly publisher: ConfigPublisher;
  readonly sendBudget = new SendBudget(SEND_BUDGET_BYTES);
  private readonly grpc = new Server(SERVER_CHANNEL_OPTIONS);
  private readonly registry: AgentRegistry;
  private readonly tracker = new PropagationTracker();
  private readonly sessions = new Map<string, AgentSession>();
  private readonly histogram: Histogram;
  private readonly log: Logger;
  private readonly token: Buffer | undefined;
  private boundPort = 0;

  private constructor(opts: AgentServerOptions) {
    this.log = opts.log ?? pino({ base: { component: "agent-server" } });
    this.token = opts.token !== undefined ? Buffer.from(`Bearer ${opts.token}`) : undefined;
    this.registry = new AgentRegistry({
      forgetAfterMs: opts.forgetNodeAfterMs ?? 60_000,
      onTopologyChange: () => this.publisher.topologyChanged(),
    });
    this.publisher = new ConfigPublisher({
      store: opts.store,
      agents: this.registry,
      tracker: this.tracker,
      debounceMs: opts.debounceMs ?? 20,
      startupGraceMs: opts.startupGraceMs ?? 2000,
      now: wallClockMs,
      log: this.log,
    });
    this.histogram = new Histogram({
      name: "nodemesh_controller_config_propagation_seconds",
      help: "Time from a store write to the ACK of the last connected agent to apply it",
      buckets: PROPAGATION_BUCKETS,
      registers: [opts.metrics],
    });
    const sessions = this.sessions;
    new Gauge({
      name: "nodemesh_controller_agents_connected",
      help: "Agents with an open configuration stream",
      registers: [opts.metrics],
      collect() {
        this.set(sessions.size);
      },
    });
  }

  /** Starts listening and watching the store. */
  static async start(opts: AgentServerOptions): Promise<AgentServer> {
    const server = new AgentServer(opts);
    server.grpc.addService(definitionForEncodedConfigs, {
      Connect: (call: AgentCall) => server.accept(call),
    } as UntypedServiceImplementation);
    const address = `${opts.host ?? "0.0.0.0"}:${opts.port ?? CONTROLLER_GRPC_PORT}`;
    server.boundPort = await new Promise<number>((resolve, reject) =>
      server.grpc.bindAsync(address, ServerCredentials.createInsecure(), (err, port) =>
        err ? reject(err) : resolve(port),
      ),
    );
    server.publisher.start();
    server.log.info(
      { address, port: server.boundPort, auth: opts.token ? "token" : "none" },
      "agent service listening",
    );
    return server;
  }

  get port(): number {
    return this.boundPort;
  }

  /** Every known agent (connected, or disconnected and not yet forgotten), by node name. */
  agents(): AgentStatus[] {
    return this.registry.list();
  }

  /** How many connected agents applied the object's current generation; undefined if no table has it. */
  propagation(key: ObjectKey): PropagationStatus | undefined {
    return this.tracker.status(resourceKey(key.plural, key.namespace, key.name));
  }

  /** The version agents converge to; undefined during the start-up grace. */
  configVersion(): string | undefined {
    return this.publisher.current()?.version;
  }

  /** Ends every stream (agents reconnect, to us or a successor) and stops listening. */
  async stop(): Promise<void> {
    this.publisher.stop();
    for (const session of [...this.sessions.values()]) {
      session.end({ code: GrpcStatus.UNAVAILABLE, details: "controller shutting down" });
    }
    this.registry.close();
    await new Promise<void>((resolve) => {
      const force = setTimeout(() => {
        this.grpc.forceShutdown();
        resolve();
      }, 2000);
      this.grpc.tryShutdown(() => {
        clearTimeout(force);
        resolve();
      });
    });
  }

  private accept(call: AgentCall): void {
    if (!this.authorized(call.metadata)) {
      this.log.warn({ peer: call.getPeer() }, "agent refused: bad or missing token");
      call.emit("error", {
        code: GrpcStatus.UNAUTHENTICATED,
        details: "missing or invalid bearer token",
      } as ServiceError);
      return;
    }
    new AgentSession(call, this);
  }

  private authorized(metadata: Metadata): boolean {
    if (!this.token) return true;
    const [presented] = metadata.get("authorization");
    const given = Buffer.from(typeof presented === "string" ? presented : "");
    return given.length === this.token.length && timingSafeEqual(given, this.token);
  }

  // ---- SessionHost ----

  claim(session: AgentSession, hello: Hello): void {
    const node = hello.nodeName;
    this.sessions.get(node)?.end({ code: GrpcStatus.ABORTED, details: "replaced by a newer stream of the same node" });
    this.sessions.set(node, session);
    this.registry.connected(hello, session, new Date());
    this.tracker.agentConnected(node);
    this.log.info({ node, version: hello.agentVersion, underlay: hello.underlayIp }, "agent connected");
  }

  release(session: AgentSession): void {
    const node = session.node!;
    if (this.sessions.get(node) !== session) return;
    this.sessions.delete(node);
    this.registry.disconnected(node, session, new Date());
    this.observe(this.tracker.agentDisconnected(node, wallClockMs()));
    this.log.info({ node }, "agent disconnected");
  }

  acked(node: string, version: string): void {
    this.registry.acked(node, version, new Date());
    this.observe(this.tracker.agentAcked(node, version, wallClockMs()));
  }

  nacked(node: string, version: string, error: string): void {
    this.registry.nacked(node, version, error, new Date());
    this.log.warn({ node, version, error }, "agent refused a config");
  }

  reported(node: string, report: Report): void {
    const now = new Date();
    // An interval outside 0–300 s is not one an agent sends; clamp it so one bad report cannot
    // make the window's series arithmetic run away.
    const interval = Math.min(300, Math.max(0, Number(report.intervalSeconds) || 0));
    this.traffic.add(node, now.getTime(), interval, report.edges ?? []);
    this.registry.reported(node, report, now);
  }

  /** A Service as the agents currently have it (endpoints included), from the current table. */
  service(namespace: string, name: string): Service | undefined {
    return this.publisher.current()?.services.get(`${namespace}/${name}`)?.service;
  }

  podsChanged(node: string, pods: WirePod[]): void {
    this.registry.podsChanged(node, pods);
  }

  private observe(durationsSeconds: number[]): void {
    for (const seconds of durationsSeconds) this.histogram.observe(seconds);
  }
}
