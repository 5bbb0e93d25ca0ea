// The controller's gRPC AgentService (api/agent.proto): one configuration stream per node agent.
// It owns the agent registry, the propagation tracker and the table publisher, and exposes what
// the rest of the controller shows: agents(), propagation(), configVersion().
//
// Trust boundary (docs/security.md): a shared bootstrap token (`authorization: Bearer <token>`
// metadata), off when none is configured, and then only on loopback unless the operator said
// --insecure-agents; each node name bound to the node secret that first claimed it
// (node-bindings.ts); at most `maxNodes` node names, `maxEdgesPerReport` edges taken from a report,
// MAX_AGENT_MESSAGE_BYTES per message, and a service graph of bounded size (TrafficWindow). Every
// refusal and drop is counted. With `tls` the port serves TLS (agent-tls.ts: a server certificate
// from the controller's CA, which agents verify), and an agent's node certificate (issued here
// once it connected with the token) stands in for the token: nodeCertificateRefusal().

import { timingSafeEqual } from "node:crypto";
import {
  status as GrpcStatus,
  type Metadata,
  Server,
  ServerCredentials,
  ServerInterceptingCall,
  type ServerInterceptor,
  type ServiceDefinition,
  type ServiceError,
  type StatusObject,
  type UntypedServiceImplementation,
} from "@grpc/grpc-js";
import pino, { type Logger } from "pino";
import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import {
  agentServiceDefinition,
  type CertificateReply,
  type CertificateRequest,
  CONTROLLER_GRPC_PORT,
  type Hello,
  NODE_SECRET_METADATA,
  NODE_SECRET_PATTERN,
  type PodsDelta,
  type RejectedObject,
  type Report,
  serviceKey,
  type WirePod,
} from "../../api/agent-service.ts";
import { type PropagationStatus, pluralOf } from "../../api/resources.ts";
import type { Service } from "../../api/services.ts";
import { trafficKey } from "../../api/traffic.ts";
import { nodeSpiffeId, spiffeId } from "../../api/x509.ts";
import { assertAgentListenAllowed } from "../auth.ts";
import { TrafficWindow } from "../graph/traffic-window.ts";
import type { RotatingCa } from "../identity/root-rotation.ts";
import type { WorkloadCa } from "../identity/workload-ca.ts";
import type { ObjectKey, Store } from "../store/store.ts";
import { AgentRegistry, type AgentStatus, type AgentsDetail, ALL_DETAIL, type PodVerifier } from "./agent-registry.ts";
import { type AgentCall, AgentSession, type Claim, peerCertificateOf, type SessionHost } from "./agent-session.ts";
import { ServerCertificate, type ServerNames } from "./agent-tls.ts";
import { ConfigPublisher } from "./config-publisher.ts";
import { type NodeBinding, type NodeBindingStore, NodeBindings } from "./node-bindings.ts";
import { bindingTag, nodeCertificateRefusal } from "./node-certificates.ts";
import { PropagationTracker } from "./propagation.ts";
import { SendBudget } from "./send-budget.ts";
import { type ClusterEndpoint, resourceKey } from "./service-table.ts";

export type { AgentStatus } from "./agent-registry.ts";

/**
 * Kubernetes mode: the Services' endpoints from their EndpointSlices (the agents' pods then only
 * say which are meshed), and the API's pods that reported pods are checked against.
 */
export interface ClusterView {
  endpoints(): ReadonlyMap<string, readonly ClusterEndpoint[]>;
  verifyPod: PodVerifier;
  onEndpointsChange(listener: () => void): void;
  onPodsChange(listener: () => void): void;
}

export interface AgentServerOptions {
  store: Store;
  /** Kubernetes mode: what the API server says of endpoints and pods (kubernetes-source.ts). */
  cluster?: ClusterView;
  /** Where the controller's metrics live; the server adds its own. */
  metrics: Registry;
  /** Default 0.0.0.0. */
  host?: string;
  /** Default 15012; 0 picks a free port (see `port`). */
  port?: number;
  /** Shared bootstrap token agents must present; undefined = no authentication. */
  token?: string;
  /** Without a token, listening off loopback needs this explicit choice (`--insecure-agents`). */
  insecureAgents?: boolean;
  /** Node name → node secret digest (trust on first use). Default: in memory only. */
  bindings?: NodeBindingStore;
  /** Most node names bound at once; Hellos of further new names are refused. Default 5000. */
  maxNodes?: number;
  /** Edges taken from one report; the rest are dropped and counted. Default 2000. */
  maxEdgesPerReport?: number;
  /** Limits of the service graph's memory (TrafficWindow); defaults there. */
  graph?: { maxEdges?: number; maxSamples?: number };
  /** Store or pod changes within this window go out as one Config. Default 20 ms. */
  debounceMs?: number;
  /** Delay before the first table goes out after start-up (agents report their pods first). Default 2000 ms. */
  startupGraceMs?: number;
  /** How long a disconnected node's pods stay endpoints. Default 60 s. */
  forgetNodeAfterMs?: number;
  /**
   * Serve TLS with a server certificate from `ca` for `names`, renewed at half of `lifetimeMs`
   * (default 30 days); none: plaintext.
   */
  tls?: { ca: WorkloadCa | (() => WorkloadCa); names: ServerNames; lifetimeMs?: number };
  /** The CA that signs workload certificates for agents, and their lifetime; none: no certificates. */
  identities?: {
    ca: Pick<RotatingCa, "issue" | "issueNode" | "issued" | "trustBundlePem" | "trustDomain">;
    lifetimeMs: number;
  };
  log?: Logger;
  /** Told of every agent that connects (the controller gives back what a fleet's arrival grew of its heap). */
  onAgentConnected?: () => void;
  /** Told of every table published to the agents (each write's: a burst of Configs to every agent). */
  onTablePublished?: () => void;
}

// Config bytes written to the streams and not yet flushed to their sockets, over all agents (see
// send-budget.ts): enough for a few full tables of 10,000 services at once, and for every agent's
// small update.
const SEND_BUDGET_BYTES = 16 << 20;
export const DEFAULT_MAX_NODES = 5000;
export const DEFAULT_MAX_EDGES_PER_REPORT = 2000;
/**
 * Largest message an agent may send (grpc-js refuses bigger ones with RESOURCE_EXHAUSTED and ends
 * the stream). A report of 2000 edges takes about 200 KB; 110 pods with their labels about 60 KB.
 */
export const MAX_AGENT_MESSAGE_BYTES = 1 << 20;
/** Objects one ACK may say the agent left out; more are not kept (the message size bounds them anyway). */
const MAX_REJECTED_PER_ACK = 1000;
const PROPAGATION_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
// Detects agents that vanished without closing their connection (power loss, partition).
const SERVER_CHANNEL_OPTIONS = {
  "grpc.keepalive_time_ms": 20_000,
  "grpc.keepalive_timeout_ms": 10_000,
  "grpc.http2.min_ping_interval_without_data_ms": 5_000,
  "grpc.max_receive_message_length": MAX_AGENT_MESSAGE_BYTES,
  // An agent needs one stream (two while a successor takes over): more from one connection is abuse.
  "grpc.max_concurrent_streams": 16,
};

/** Refusal log lines per reason and second; the counter counts every refusal. */
const REFUSAL_LINES_PER_S = 10;

/** Why the server refused or ended an agent's stream: the label of the refusal counter. */
type RefusalReason =
  | "token"
  | "node_secret"
  | "node_bound"
  | "node_limit"
  | "bindings_unavailable"
  | "node_certificate"
  | "node_certificate_mismatch"
  | "node_certificate_revoked"
  | "message_too_large";

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
  readonly traffic: TrafficWindow;
  readonly bindings: NodeBindingStore;
  /** Per node, the tag of the binding (node secret and time) its current stream claimed under (node certificates carry it). */
  private readonly bindingTags = new Map<string, string>();
  readonly publisher: ConfigPublisher;
  readonly sendBudget = new SendBudget(SEND_BUDGET_BYTES);
  private readonly registry: AgentRegistry;
  private readonly tracker = new PropagationTracker();
  private readonly sessions = new Map<string, AgentSession>();
  private readonly histogram: Histogram;
  private readonly log: Logger;
  private readonly onAgentConnected: () => void;
  private readonly token: Buffer | undefined;
  private readonly maxNodes: number;
  private readonly maxEdgesPerReport: number;
  private readonly refused: Counter<"reason">;
  private readonly refusalLines = new Map<RefusalReason, { since: number; logged: number; unlogged: number }>();
  private readonly configBytesSent: Counter;
  private readonly edgesDropped: Counter;
  private readonly identities: AgentServerOptions["identities"];
  private readonly certificates: Counter<"result">;
  private readonly grpc: Server;
  private boundPort = 0;
  /** The server certificate (with `tls`), renewed on its own. */
  serverCertificate: ServerCertificate | undefined;

  private constructor(opts: AgentServerOptions) {
    this.log = opts.log ?? pino({ base: { component: "agent-server" } });
    this.onAgentConnected = opts.onAgentConnected ?? (() => {});
    this.token = opts.token !== undefined ? Buffer.from(`Bearer ${opts.token}`) : undefined;
    this.bindings = opts.bindings ?? NodeBindings.inMemory();
    this.maxNodes = opts.maxNodes ?? DEFAULT_MAX_NODES;
    this.maxEdgesPerReport = opts.maxEdgesPerReport ?? DEFAULT_MAX_EDGES_PER_REPORT;
    this.identities = opts.identities;
    this.certificates = new Counter({
      name: "nodemesh_controller_workload_certificates_total",
      help: "Workload certificate requests from agents, by result (issued, not_hosted, bad_csr, no_ca)",
      labelNames: ["result"],
      registers: [opts.metrics],
    });
    this.refused = new Counter({
      name: "nodemesh_controller_agent_streams_refused_total",
      help: "Agent streams refused or ended by the controller, by reason",
      labelNames: ["reason"],
      registers: [opts.metrics],
    });
    this.configBytesSent = new Counter({
      name: "nodemesh_controller_config_bytes_sent_total",
      help: "Bytes of Configs written to agent streams, by encoding: plain, or br (compressed once, the same bytes to every agent)",
      labelNames: ["encoding"],
      registers: [opts.metrics],
    });
    this.edgesDropped = new Counter({
      name: "nodemesh_controller_report_edges_dropped_total",
      help: "Edge samples dropped from agent reports beyond the per-report limit",
      registers: [opts.metrics],
    });
    const evicted = new Counter({
      name: "nodemesh_controller_graph_edges_evicted_total",
      help: "Service-graph edges forgotten before their time to keep the graph within its limits",
      registers: [opts.metrics],
    });
    this.traffic = new TrafficWindow({ ...opts.graph, onEvicted: (n) => evicted.inc(n) });
    const bindings = this.bindings;
    new Gauge({
      name: "nodemesh_controller_node_bindings",
      help: "Node names bound to an agent's node secret",
      registers: [opts.metrics],
      collect() {
        this.set(bindings.size);
      },
    });
    this.grpc = new Server({ ...SERVER_CHANNEL_OPTIONS, interceptors: [this.countOversizedMessages()] });
    this.registry = new AgentRegistry({
      forgetAfterMs: opts.forgetNodeAfterMs ?? 60_000,
      onTopologyChange: () => this.publisher.topologyChanged(),
      ...(opts.cluster
        ? {
            verifyPod: opts.cluster.verifyPod,
            onRefused: (node, pod, reason) =>
              this.log.warn(
                { node, pod: `${pod.namespace}/${pod.name}`, ip: pod.ip, reason },
                "reported pod not as the API server has it: not an endpoint, no certificate for it",
              ),
          }
        : {}),
    });
    this.publisher = new ConfigPublisher({
      store: opts.store,
      agents: this.registry,
      tracker: this.tracker,
      debounceMs: opts.debounceMs ?? 20,
      startupGraceMs: opts.startupGraceMs ?? 2000,
      now: wallClockMs,
      log: this.log,
      ...(opts.cluster ? { clusterEndpoints: () => opts.cluster!.endpoints() } : {}),
    });
    if (opts.onTablePublished) this.publisher.onTable(opts.onTablePublished);
    opts.cluster?.onEndpointsChange(() => this.publisher.topologyChanged());
    opts.cluster?.onPodsChange(() => this.registry.reverify());
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
    assertAgentListenAllowed(opts.host ?? "0.0.0.0", opts.token !== undefined, opts.insecureAgents ?? false);
    const server = new AgentServer(opts);
    server.grpc.addService(definitionForEncodedConfigs, {
      Connect: (call: AgentCall) => server.accept(call),
    } as UntypedServiceImplementation);
    const address = `${opts.host ?? "0.0.0.0"}:${opts.port ?? CONTROLLER_GRPC_PORT}`;
    if (opts.tls) server.serverCertificate = await ServerCertificate.start({ ...opts.tls, log: server.log });
    const roots = () => server.identities?.ca.trustBundlePem ?? "";
    const credentials = server.serverCertificate?.credentials(roots) ?? ServerCredentials.createInsecure();
    try {
      server.boundPort = await new Promise<number>((resolve, reject) =>
        server.grpc.bindAsync(address, credentials, (err, port) => (err ? reject(err) : resolve(port))),
      );
    } catch (err) {
      server.serverCertificate?.stop();
      throw err;
    }
    server.publisher.start();
    server.log.info(
      {
        address,
        port: server.boundPort,
        auth: opts.token ? "token" : "none",
        tls: opts.tls !== undefined,
        boundNodes: server.bindings.size,
        maxNodes: server.maxNodes,
      },
      "agent service listening",
    );
    return server;
  }

  get port(): number {
    return this.boundPort;
  }

  /**
   * Every known agent (connected, or disconnected and not yet forgotten), by node name, with as
   * much of each node's probes and pods as `detail` asks for.
   */
  agents(detail: AgentsDetail = ALL_DETAIL): AgentStatus[] {
    return this.registry.list(detail);
  }

  /**
   * A dry run's effect on the agents: the connected ones (each gets the same services and traffic
   * objects) and the table entries the write would add (+), change (~) or remove (-).
   */
  preview(view: Pick<Store, "list">): { agents: string[]; changes: string[] } {
    const agents = this.registry
      .list()
      .filter((a) => a.connected)
      .map((a) => a.node);
    const diff = this.publisher.preview(view);
    if (!diff) return { agents, changes: [] };
    const had = (map: ReadonlyMap<string, unknown> | undefined, key: string) => (map?.has(key) ? "~" : "+");
    return {
      agents,
      changes: [
        ...diff.services.map(
          (e) => `${had(diff.from?.services, serviceKey(e.service))} Service ${serviceKey(e.service)}`,
        ),
        ...diff.removed.map((key) => `- Service ${key}`),
        ...diff.traffic.map(
          (e) => `${had(diff.from?.traffic, trafficKey(e.object))} ${trafficLabel(trafficKey(e.object))}`,
        ),
        ...diff.removedTraffic.map((key) => `- ${trafficLabel(key)}`),
      ],
    };
  }

  /** How many connected agents applied the object's current generation; undefined if no table has it. */
  propagation(key: ObjectKey): PropagationStatus | undefined {
    return this.tracker.status(resourceKey(key.plural, key.namespace, key.name));
  }

  /** The version agents converge to; undefined during the start-up grace. */
  configVersion(): string | undefined {
    return this.publisher.current()?.version;
  }

  /** Node names and when they were bound (never the digests). */
  nodeBindings(): NodeBinding[] {
    return this.bindings.list();
  }

  /**
   * Releases a node name's binding (durable on return) and ends its stream if one is open: the next
   * Hello for the name binds it again. False when the name was not bound.
   */
  async releaseNode(node: string): Promise<boolean> {
    const released = await this.bindings.release(node);
    if (released) {
      this.sessions
        .get(node)
        ?.end({ code: GrpcStatus.ABORTED, details: "the node's binding was released by an operator" });
      this.log.warn({ node }, "node binding released");
    }
    return released;
  }

  /** Ends every stream (agents reconnect, to us or a successor) and stops listening. */
  async stop(): Promise<void> {
    this.publisher.stop();
    this.serverCertificate?.stop();
    for (const session of [...this.sessions.values()]) {
      session.end({ code: GrpcStatus.UNAVAILABLE, details: "controller shutting down" });
    }
    this.registry.close();
    await this.bindings.flush();
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
    // A node certificate stands in for the token; claim() checks it.
    if (!peerCertificateOf(call) && !this.authorized(call.metadata)) {
      this.logRefusal("token", { peer: call.getPeer() });
      call.emit("error", {
        code: GrpcStatus.UNAUTHENTICATED,
        details: "missing or invalid bearer token",
      } as ServiceError);
      return;
    }
    new AgentSession(call, this);
  }

  /**
   * Counts a refusal, and logs it unless REFUSAL_LINES_PER_S lines of its reason were logged in
   * this second; the next line logged says how many were not: a flood of refused streams must not
   * become a flood of log lines.
   */
  private logRefusal(reason: RefusalReason, fields: Record<string, unknown>): void {
    this.refused.inc({ reason });
    const now = Date.now();
    let lines = this.refusalLines.get(reason);
    if (!lines || now - lines.since >= 1000) {
      lines = { since: now, logged: 0, unlogged: lines?.unlogged ?? 0 };
      this.refusalLines.set(reason, lines);
    }
    if (lines.logged >= REFUSAL_LINES_PER_S) {
      lines.unlogged++;
      return;
    }
    lines.logged++;
    const unlogged = lines.unlogged > 0 ? { refusalsNotLogged: lines.unlogged } : {};
    lines.unlogged = 0;
    this.log.warn({ ...fields, reason, ...unlogged }, "agent refused");
  }

  private authorized(metadata: Metadata): boolean {
    if (!this.token) return true;
    const [presented] = metadata.get("authorization");
    const given = Buffer.from(typeof presented === "string" ? presented : "");
    return given.length === this.token.length && timingSafeEqual(given, this.token);
  }

  /**
   * grpc-js refuses a message over MAX_AGENT_MESSAGE_BYTES itself, out of the session's sight and
   * of interceptors' responders: the innermost call's own sendStatus is wrapped to count those
   * endings (their details say "larger than max"; ours never do).
   */
  private countOversizedMessages(): ServerInterceptor {
    return (_method, call) => {
      const sendStatus = call.sendStatus.bind(call);
      let counted = false; // grpc-js tries again with every further frame of the refused message
      call.sendStatus = (status) => {
        const oversized = status.code === GrpcStatus.RESOURCE_EXHAUSTED && /larger than max/.test(status.details ?? "");
        if (oversized && !counted) {
          counted = true;
          this.refused.inc({ reason: "message_too_large" });
          this.log.warn({ peer: call.getPeer(), details: status.details }, "agent stream ended: message too large");
        }
        sendStatus(status);
      };
      return new ServerInterceptingCall(call);
    };
  }

  // ---- SessionHost ----

  async claim(
    session: AgentSession,
    hello: Hello,
    claim: Claim,
  ): Promise<Pick<StatusObject, "code" | "details"> | undefined> {
    const node = hello.nodeName;
    const refuse = (reason: RefusalReason, code: GrpcStatus, details: string) => {
      this.logRefusal(reason, { node, peer: claim.peer, details });
      return { code, details };
    };
    const secret = claim.metadata.get(NODE_SECRET_METADATA)[0];
    if (typeof secret !== "string" || !NODE_SECRET_PATTERN.test(secret)) {
      return refuse(
        "node_secret",
        GrpcStatus.UNAUTHENTICATED,
        `the call must carry the agent's node secret (metadata ${NODE_SECRET_METADATA}: 32 to 128 base64url characters)`,
      );
    }
    const boundAt = this.bindings.boundAt(node);
    const bound = boundAt !== undefined;
    if (claim.certificate) {
      const refusal = nodeCertificateRefusal(claim.certificate, { node, secret, boundAt, ca: this.identities?.ca });
      if (refusal) return refuse(refusal.reason, refusal.code, refusal.details);
    }
    if (!bound && this.bindings.size >= this.maxNodes) {
      return refuse(
        "node_limit",
        GrpcStatus.RESOURCE_EXHAUSTED,
        `the controller already has ${this.maxNodes} nodes (--max-nodes); release unused ones ` +
          "(nodemesh nodes release NODE) or raise the limit",
      );
    }
    let decided: Awaited<ReturnType<NodeBindingStore["claim"]>>;
    try {
      decided = await this.bindings.claim(node, secret, new Date());
    } catch (err) {
      // Never bound in memory only: the agent retries once the bindings can be read and written.
      return refuse(
        "bindings_unavailable",
        GrpcStatus.UNAVAILABLE,
        `the node bindings cannot be read or written now (${(err as Error).message}); retry later`,
      );
    }
    if (decided === "mismatch") {
      return refuse(
        "node_bound",
        GrpcStatus.PERMISSION_DENIED,
        `node ${node} is bound to another agent's node secret; if that node was reinstalled, an operator ` +
          `releases it with: nodemesh nodes release ${node}`,
      );
    }
    if (decided === "bound") this.log.info({ node, peer: claim.peer }, "node bound to its agent's node secret");
    // The binding as the claim left it (read afresh in Kubernetes mode): its node certificates' tag.
    const claimedAt = this.bindings.boundAt(node);
    if (claimedAt === undefined) this.bindingTags.delete(node);
    else this.bindingTags.set(node, bindingTag(secret, claimedAt));
    if (session.closed) return { code: GrpcStatus.CANCELLED, details: "the stream ended during the claim" };
    this.sessions.get(node)?.end({ code: GrpcStatus.ABORTED, details: "replaced by a newer stream of the same node" });
    this.sessions.set(node, session);
    this.registry.connected(hello, session, new Date());
    this.tracker.agentConnected(node);
    this.log.info({ node, version: hello.agentVersion, underlay: hello.underlayIp }, "agent connected");
    this.onAgentConnected();
    return undefined;
  }

  release(session: AgentSession): void {
    const node = session.node!;
    if (this.sessions.get(node) !== session) return;
    this.sessions.delete(node);
    this.registry.disconnected(node, session, new Date());
    this.observe(this.tracker.agentDisconnected(node, wallClockMs()));
    this.log.info({ node }, "agent disconnected");
  }

  configSent(encoding: string, bytes: number): void {
    this.configBytesSent.labels(encoding).inc(bytes);
  }

  acked(node: string, version: string, rejected: readonly RejectedObject[]): void {
    // What an agent says it refused is bounded like any report: so many objects, so long a reason.
    const kept = rejected.slice(0, MAX_REJECTED_PER_ACK).map((r) => ({ ...r, reason: r.reason.slice(0, 1000) }));
    this.registry.acked(node, version, kept, new Date());
    const byResource = new Map<string, string>();
    for (const r of kept) {
      const plural = pluralOf(r.kind);
      if (plural) byResource.set(resourceKey(plural, r.namespace, r.name), r.reason);
    }
    if (kept.length > 0) this.log.warn({ node, version, rejected: kept }, "agent left objects out of its table");
    this.observe(this.tracker.agentAcked(node, version, wallClockMs(), byResource));
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
    let edges = report.edges ?? [];
    if (edges.length > this.maxEdgesPerReport) {
      this.edgesDropped.inc(edges.length - this.maxEdgesPerReport);
      edges = edges.slice(0, this.maxEdgesPerReport);
    }
    this.traffic.add(node, now.getTime(), interval, edges);
    this.registry.reported(node, report, now);
  }

  /** A Service as the agents currently have it (endpoints included), from the current table. */
  service(namespace: string, name: string): Service | undefined {
    return this.publisher.current()?.services.get(`${namespace}/${name}`)?.service;
  }

  /** A node certificate for the stream's own node, tied to its current binding. */
  private async nodeCertificateRequested(node: string, req: CertificateRequest): Promise<CertificateReply> {
    const reply = (fields: Partial<CertificateReply>) => ({
      requestId: req.requestId,
      certChainPem: "",
      trustBundlePem: "",
      error: "",
      ...fields,
    });
    const tag = this.bindingTags.get(node);
    if (!this.identities || !tag) {
      this.certificates.inc({ result: "no_ca" });
      return reply({ error: "this controller issues no node certificates" });
    }
    // A root rotation may have changed the signer: the TLS layer must know its root before the
    // agent presents what it signs (grpc-js shows the handler only certificates it verified).
    this.serverCertificate?.clientRootsChanged();
    try {
      const { ca, lifetimeMs } = this.identities;
      const certChainPem = await ca.issueNode(req.csrPem, nodeSpiffeId(ca.trustDomain, node), tag, lifetimeMs);
      this.certificates.inc({ result: "node_issued" });
      this.log.info({ node }, "node certificate issued");
      return reply({ certChainPem, trustBundlePem: ca.trustBundlePem });
    } catch (err) {
      this.certificates.inc({ result: "bad_csr" });
      return reply({ error: (err as Error).message });
    }
  }

  /**
   * A node's agent gets a certificate only for an identity one of the pods it enrolled has: a
   * node cannot obtain another node's workloads' identities.
   */
  async certificateRequested(node: string, req: CertificateRequest): Promise<CertificateReply> {
    if (req.node) return this.nodeCertificateRequested(node, req);
    const reply = (fields: Partial<CertificateReply>): CertificateReply => ({
      requestId: req.requestId,
      certChainPem: "",
      trustBundlePem: "",
      error: "",
      ...fields,
    });
    const identities = this.identities;
    const refuse = (reason: string, error: string) => {
      this.certificates.inc({ result: reason });
      this.log.warn(
        { node, namespace: req.namespace, serviceAccount: req.serviceAccount, error },
        "certificate refused",
      );
      return reply({ error });
    };
    if (!identities) return refuse("no_ca", "this controller issues no workload certificates");
    if (!this.registry.hostsServiceAccount(node, req.namespace, req.serviceAccount)) {
      return refuse(
        "not_hosted",
        `node ${node} hosts no pod of service account ${req.namespace}/${req.serviceAccount}`,
      );
    }
    const id = spiffeId(identities.ca.trustDomain, req.namespace, req.serviceAccount);
    try {
      const certChainPem = await identities.ca.issue(req.csrPem, id, identities.lifetimeMs);
      this.certificates.inc({ result: "issued" });
      return reply({ certChainPem, trustBundlePem: identities.ca.trustBundlePem });
    } catch (err) {
      return refuse("bad_csr", (err as Error).message);
    }
  }

  podsChanged(node: string, pods: WirePod[]): void {
    this.registry.podsChanged(node, pods);
  }

  podsDelta(node: string, delta: PodsDelta): void {
    this.registry.podsDelta(node, delta.upserted, delta.removed);
  }

  private observe(durationsSeconds: number[]): void {
    for (const seconds of durationsSeconds) this.histogram.observe(seconds);
  }
}

/** "HTTPRoute/default/split" → "HTTPRoute default/split". */
function trafficLabel(key: string): string {
  const slash = key.indexOf("/");
  return `${key.slice(0, slash)} ${key.slice(slash + 1)}`;
}
