// The agent's side of the configuration stream (api/agent.proto). It says Hello, reports its
// enrolled pods, and applies each Config: assemble and validate (pure, config-assembly.ts), then
// apply; ACK, or NACK with the reason and keep the previous table. The last ACKed table is cached
// on disk and served at start-up until the controller answers, so a restarted agent forwards as
// before even while the controller is down. Lost streams are retried with capped exponential
// backoff and full jitter; forwarding never depends on the stream being up.

import {
  type ChannelCredentials,
  type ClientDuplexStream,
  credentials,
  status as GrpcStatus,
  Metadata,
  makeGenericClientConstructor,
  type ServiceError,
} from "@grpc/grpc-js";
import type { Logger } from "pino";
import {
  type AgentMessage,
  agentServiceDefinition,
  type CertificateReply,
  type CertificateRequest,
  type CompressedConfig,
  type Config,
  type ControllerMessage,
  mergesChangedPeers,
  NODE_CERTIFICATE_METADATA,
  NODE_SECRET_METADATA,
  type NodeFacts,
  type Peer,
  type PodsDelta,
  type RejectedObject,
  type Report,
  takesReportsWithoutPods,
  type WirePod,
} from "../../api/agent-service.ts";
import { CONFIG_ENCODINGS, inflateConfig, MAX_CONFIG_BYTES } from "../../api/config-compression.ts";
import type { ServiceTable } from "../../api/services.ts";
import { type BackoffPolicy, backoffDelay, DEFAULT_BACKOFF } from "./backoff.ts";
import { assembleConfig, type ControllerConfig, fromServiceTable, type TrafficCheck } from "./config-assembly.ts";
import { loadConfigCache, saveConfigCache } from "./config-cache.ts";
import { type ChannelSecurity, readCaFile, tlsFailureHint } from "./controller-channel.ts";
import type { NodeCertificate } from "./node-certificate.ts";
import type { VersionedTable } from "./service-source.ts";

const AgentServiceClient = makeGenericClientConstructor(agentServiceDefinition, "AgentService");
type AgentCall = ClientDuplexStream<AgentMessage, ControllerMessage>;

/** Statuses by which the controller refuses an agent (docs/security.md); retrying alone will not help. */
const REFUSALS = new Set<number>([
  GrpcStatus.UNAUTHENTICATED,
  GrpcStatus.PERMISSION_DENIED,
  GrpcStatus.RESOURCE_EXHAUSTED,
]);

/** How long a certificate request waits for the controller's answer. */
const CERTIFICATE_TIMEOUT_MS = 10_000;

/**
 * Enrollment changes this close together go to the controller as one PodsDelta with those pods as
 * they are then. (When each carried the node's whole list, a node enrolling a thousand pods sent
 * it a thousand times, and the agent's heap kept the high-water mark of that garbage: 66 kB of
 * RSS per enrolled pod.)
 */
export const POD_CHANGES_COALESCE_MS = 50;

const CHANNEL_OPTIONS = {
  // Notices a controller that vanished without closing the connection.
  "grpc.keepalive_time_ms": 15_000,
  "grpc.keepalive_timeout_ms": 5_000,
  "grpc.max_receive_message_length": MAX_CONFIG_BYTES,
  // Not shared with other channels: a fresh channel must not inherit a failed connection's backoff.
  "grpc.use_local_subchannel_pool": 1,
  // HTTP/2's flow-control window stays at its 64 kB default: an agent slow to read its table holds
  // the controller's write, and by its turn the table has moved on, so it gets one Config instead
  // of several. A 4 MB window made 1000 agents take 1.9–2.4× the Configs and sync slower
  // (docs/benchmarks.md, "Eighteenth session").
};

/** The node as the hello describes it. */
export interface NodeDescription {
  underlayIp: string;
  facts: NodeFacts;
}

export interface ControllerClientOptions {
  /** host:port of the controller's AgentService. */
  address: string;
  /** TLS verified with the CA file's root (re-read at each attempt), or plaintext (controller-channel.ts). */
  security: ChannelSecurity;
  /** Bootstrap token, sent as `authorization: Bearer <token>`. */
  token?: string;
  nodeName: string;
  /** This agent's node credential (node-secret.ts), sent as NODE_SECRET_METADATA on every stream. */
  nodeSecret: string;
  /** The node certificate (node-certificate.ts): presented over TLS once held, asked for once connected. */
  nodeCertificate?: NodeCertificate;
  agentVersion: string;
  /**
   * What the hello says of the node. The cached configuration is served before it is known
   * (gathering the facts takes half a second or more: a restart's gap).
   */
  node: NodeDescription | Promise<NodeDescription>;
  /** Where the last ACKed configuration is kept. */
  cacheFile: string;
  /** Puts a table in force; throwing means the table cannot be applied (the client NACKs). */
  apply(table: VersionedTable): void;
  /** The enrolled pods, all of them. */
  pods(): WirePod[];
  /** The enrolled pod of that "namespace/name", if it still is. */
  pod(key: string): WirePod | undefined;
  /** The next report, for `stream` (what a report may leave out depends on it). */
  report(stream: ReportStream): Promise<Report>;
  reportIntervalMs: number;
  /** Each time the stream comes up (the workload identities ask for their certificates then). */
  onConnected?: () => void;
  backoff?: BackoffPolicy;
  log: Logger;
  /** Whether a valid traffic object also compiles in the data plane (config-assembly.ts). */
  checkTraffic?: TrafficCheck;
}

/** The stream a report goes on: a new one each time the stream comes up. */
export interface ReportStream {
  readonly id: number;
  /** The controller merges reports that carry only the probes taken since the previous one. */
  readonly peersChangedOnly: boolean;
  /** The controller takes reports without the pods (it keeps this stream's PodsChanged and PodsDelta). */
  readonly podsOmitted: boolean;
}

export interface ControllerStatus {
  address: string;
  connected: boolean;
  /** The version this link applied last: from the controller, or from the cache until it answers. */
  appliedVersion: string | undefined;
  lastNack: { version: string; error: string; at: string } | undefined;
  /** Objects of the applied version left out of the table, and why (reported in the ACK). */
  rejected?: RejectedObject[];
  /** Why the last attempt to reach the controller failed, until a stream is up again. */
  lastError?: { error: string; hint?: string; at: string } | undefined;
  /** Whether the stream is TLS (verified against --controller-ca-file). */
  tls?: boolean;
  /** The workload certificates held (identities.ts): their SPIFFE ids, expiry and renewals so far. */
  certificates?: { spiffeId: string; notAfter: string; renewals: number }[];
  /** While connected: what the controller let the stream in on (its node certificate, or the token). */
  credential?: "node certificate" | "token" | undefined;
  /** The node certificate held (node-certificate.ts), if any in date. */
  nodeCertificate?: { spiffeId: string; notAfter: string } | undefined;
}

export class ControllerClient {
  private readonly opts: ControllerClientOptions;
  /** A fresh channel per attempt, so our backoff alone decides when to retry (not the channel's). */
  private client: InstanceType<typeof AgentServiceClient> | undefined;
  private readonly backoff: BackoffPolicy;
  private call: AgentCall | undefined;
  private config: ControllerConfig | undefined;
  private lastNack: ControllerStatus["lastNack"];
  private rejected: RejectedObject[] = [];
  private lastError: ControllerStatus["lastError"];
  /** The stream up now; undefined while down (not connected). */
  private stream: ReportStream | undefined;
  private streamsUp = 0;
  /** Set once opts.node resolved, before the first connect. */
  private node: NodeDescription | undefined;
  /** Whether the stream being opened presents the node certificate. */
  private presentingCertificate = false;
  /** What the stream up got in on. */
  private credential: ControllerStatus["credential"];
  private failedAttempts = 0;
  private stopped = false;
  private retryTimer: NodeJS.Timeout | undefined;
  private reportTimer: NodeJS.Timeout | undefined;
  /** A PodsDelta due (POD_CHANGES_COALESCE_MS after the first change not yet sent). */
  private podsTimer: NodeJS.Timeout | undefined;
  /** The pods changed since the controller last heard, by "namespace/name"; "all": it needs the whole list. */
  private unsentPods: Set<string> | "all" = "all";
  /** Certificate requests waiting for their answer, by request id. */
  private readonly pendingCertificates = new Map<string, (reply: CertificateReply) => void>();
  private nextRequestId = 0;

  private get connected(): boolean {
    return this.stream !== undefined;
  }

  constructor(opts: ControllerClientOptions) {
    this.opts = opts;
    this.backoff = opts.backoff ?? DEFAULT_BACKOFF;
  }

  /** Serves the cached configuration, if any, and starts connecting (in the background). */
  start(): void {
    this.serveCache();
    void Promise.resolve(this.opts.node).then((node) => {
      this.node = node;
      this.connect();
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.podsTimer);
    this.streamEnded();
    this.call?.cancel();
    this.client?.close();
  }

  /** The stream is up: certificate requests can be answered. */
  get isConnected(): boolean {
    return this.connected;
  }

  status(): ControllerStatus {
    const held = this.opts.nodeCertificate?.current();
    return {
      address: this.opts.address,
      connected: this.connected,
      credential: this.connected ? this.credential : undefined,
      nodeCertificate: held && { spiffeId: held.spiffeId, notAfter: new Date(held.notAfter).toISOString() },
      appliedVersion: this.config?.version,
      lastNack: this.lastNack,
      rejected: this.rejected,
      lastError: this.lastError,
      tls: this.opts.security.tls,
    };
  }

  /** The other nodes, as the controller last told us (for probes). */
  peers(): Peer[] {
    return (this.config?.peers ?? []).filter((p) => p.name !== this.opts.nodeName);
  }

  /**
   * Asks the controller to certify a key for a workload identity. Fails at once when not
   * connected, and when the stream ends or no answer comes within `timeoutMs`.
   */
  requestCertificate(
    req: Omit<CertificateRequest, "requestId">,
    timeoutMs = CERTIFICATE_TIMEOUT_MS,
  ): Promise<CertificateReply> {
    if (!this.connected) return Promise.reject(new Error("not connected to the controller"));
    // The controller certifies an identity only for a node hosting one of its pods: the pods the
    // request is for must be there first (the stream keeps the order).
    this.flushPods();
    const requestId = String(++this.nextRequestId);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pendingCertificates.delete(requestId);
        reject(new Error(`no certificate from the controller within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pendingCertificates.set(requestId, (reply) => {
        clearTimeout(timer);
        if (reply.error) reject(new Error(reply.error));
        else resolve(reply);
      });
      this.send({ kind: "certificateRequest", certificateRequest: { ...req, requestId } });
    });
  }

  /**
   * Call on every enrollment change, with the pod's "namespace/name" (none: any pod may have
   * changed): the controller hears of it within POD_CHANGES_COALESCE_MS.
   */
  podsChanged(key?: string): void {
    if (key === undefined) this.unsentPods = "all";
    else if (this.unsentPods !== "all") this.unsentPods.add(key);
    this.podsTimer ??= setTimeout(() => {
      this.podsTimer = undefined;
      this.sendPods();
    }, POD_CHANGES_COALESCE_MS);
  }

  /** Sends the pending PodsChanged now, if there is one. */
  private flushPods(): void {
    if (!this.podsTimer) return;
    clearTimeout(this.podsTimer);
    this.podsTimer = undefined;
    this.sendPods();
  }

  /** Once connected (the stream's first list is sent when it comes up). */
  private sendPods(): void {
    if (!this.connected) return;
    const unsent = this.unsentPods;
    this.unsentPods = new Set();
    if (unsent === "all") {
      this.send({ kind: "podsChanged", podsChanged: { pods: this.opts.pods() } });
      return;
    }
    if (unsent.size === 0) return;
    const podsDelta: PodsDelta = { upserted: [], removed: [] };
    for (const key of unsent) {
      const pod = this.opts.pod(key);
      if (pod) podsDelta.upserted.push(pod);
      else podsDelta.removed.push(key);
    }
    this.send({ kind: "podsDelta", podsDelta });
  }

  private serveCache(): void {
    try {
      const cached = loadConfigCache(this.opts.cacheFile);
      if (!cached) return;
      this.opts.apply({ version: cached.version, table: cached.table, source: "cache" });
      this.config = fromServiceTable(cached.version, cached.table, cached.peers);
      this.opts.log.info({ version: cached.version, savedAt: cached.savedAt }, "serving the cached configuration");
    } catch (err) {
      this.opts.log.error({ err: (err as Error).message }, "cached configuration unusable; waiting for the controller");
    }
  }

  private connect(): void {
    if (this.stopped) return;
    const metadata = new Metadata();
    if (this.opts.token) metadata.set("authorization", `Bearer ${this.opts.token}`);
    metadata.set(NODE_SECRET_METADATA, this.opts.nodeSecret);
    this.client?.close();
    this.client = undefined;
    let channelCredentials: ChannelCredentials;
    try {
      channelCredentials = this.channelCredentials();
    } catch (err) {
      this.retryLater((err as Error).message, "error", "fix --controller-ca-file; the agent retries");
      return;
    }
    this.client = new AgentServiceClient(this.opts.address, channelCredentials, CHANNEL_OPTIONS);
    const call = (this.client as unknown as { Connect(m: Metadata): AgentCall }).Connect(metadata);
    this.call = call;
    // The controller sends headers once it accepted our Hello.
    call.on("metadata", (headers: Metadata) => this.streamUp(call, headers));
    call.on("data", (msg: ControllerMessage) => {
      if (msg.kind === "config") this.receive(call, msg.config);
      else if (msg.kind === "compressedConfig") this.receiveCompressed(call, msg.compressedConfig);
      else if (call === this.call) this.answered(msg.certificate);
    });
    call.on("error", (err: ServiceError) => this.streamDown(call, err.message, REFUSALS.has(err.code)));
    call.on("end", () => this.streamDown(call, "the controller ended the stream"));
    this.send({
      kind: "hello",
      hello: {
        nodeName: this.opts.nodeName,
        agentVersion: this.opts.agentVersion,
        underlayIp: this.node!.underlayIp,
        facts: this.node!.facts,
        configEncodings: [...CONFIG_ENCODINGS],
      },
    });
  }

  /**
   * Re-read at each attempt: a renewed or replaced root, or a new node certificate, is taken
   * without a restart.
   */
  private channelCredentials(): ChannelCredentials {
    const security = this.opts.security;
    this.presentingCertificate = false;
    if (!security.tls) return credentials.createInsecure();
    const held = this.opts.nodeCertificate?.current();
    this.presentingCertificate = held !== undefined;
    // The server name checked is the --controller host (grpc-js's default for the target).
    return held
      ? credentials.createSsl(readCaFile(security.caFile), Buffer.from(held.keyPem), Buffer.from(held.chainPem))
      : credentials.createSsl(readCaFile(security.caFile));
  }

  private streamUp(call: AgentCall, headers: Metadata): void {
    if (call !== this.call || this.connected) return;
    this.stream = {
      id: ++this.streamsUp,
      peersChangedOnly: mergesChangedPeers(headers),
      podsOmitted: takesReportsWithoutPods(headers),
    };
    this.lastError = undefined;
    const onCertificate = headers.get(NODE_CERTIFICATE_METADATA)[0] === "accepted";
    this.credential = onCertificate ? "node certificate" : "token";
    this.opts.log.info({ controller: this.opts.address, credential: this.credential }, "connected to the controller");
    if (this.presentingCertificate && !onCertificate) {
      // The controller's TLS did not verify it (its CA changed, or it expired meanwhile) and let
      // the token in instead: a certificate of its CA of now is asked for below.
      this.opts.log.warn("the controller did not take the node certificate; dropping it for a new one");
      this.opts.nodeCertificate?.discard();
    }
    this.unsentPods = "all"; // a new stream, maybe to another controller: the whole list first
    this.sendPods();
    this.refreshNodeCertificate();
    this.opts.onConnected?.();
    this.reportTimer = setInterval(() => this.sendReport(), this.opts.reportIntervalMs);
    this.reportTimer.unref();
  }

  /** `refused`: the controller refused this agent (token, node secret, node limit): the operator must act. */
  private streamDown(call: AgentCall, reason: string, refused = false): void {
    if (call !== this.call) return;
    this.call = undefined;
    call.cancel();
    const wasConnected = this.connected;
    this.streamEnded();
    if (refused && this.presentingCertificate) {
      // Released, or from another binding: the token (if this agent has one) bootstraps again.
      this.opts.log.warn({ reason }, "the controller refused the node certificate; dropping it");
      this.opts.nodeCertificate?.discard();
    }
    // A certificate the agent cannot verify is the operator's to fix, as a refusal is.
    const hint = wasConnected ? undefined : tlsFailureHint(reason, this.opts.security.tls);
    this.retryLater(reason, refused || hint ? "error" : wasConnected ? "warn" : "debug", hint);
  }

  private retryLater(reason: string, level: "error" | "warn" | "debug", hint?: string): void {
    if (this.stopped) return;
    this.lastError = { error: reason, ...(hint ? { hint } : {}), at: new Date().toISOString() };
    const delay = backoffDelay(this.failedAttempts++, this.backoff);
    this.opts.log[level](
      { controller: this.opts.address, reason, ...(hint ? { hint } : {}), retryInMs: delay },
      "controller stream down; forwarding continues with the current table",
    );
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  private streamEnded(): void {
    this.stream = undefined;
    clearInterval(this.reportTimer);
    // Answers to this stream's requests will not come: their askers retry on the next stream.
    for (const answer of this.pendingCertificates.values()) {
      answer({ requestId: "", certChainPem: "", trustBundlePem: "", error: "the controller stream ended" });
    }
    this.pendingCertificates.clear();
  }

  private answered(reply: CertificateReply): void {
    const answer = this.pendingCertificates.get(reply.requestId);
    this.pendingCertificates.delete(reply.requestId);
    answer?.(reply);
  }

  private receive(call: AgentCall, update: Config): void {
    if (call !== this.call) return;
    this.failedAttempts = 0; // a stream that delivers configuration is a healthy one
    const assembled = assembleConfig(this.config, update, { checkTraffic: this.opts.checkTraffic });
    if (!assembled.ok) {
      this.refuse(update.version, assembled.error);
      return;
    }
    for (const r of assembled.rejected) {
      // Logged once per object and reason, not on every version that still carries it.
      if (!this.rejected.some((o) => rejectedKey(o) === rejectedKey(r) && o.reason === r.reason)) {
        this.opts.log.error({ version: update.version, object: rejectedKey(r), reason: r.reason }, "object refused");
      }
    }
    try {
      this.opts.apply({ version: update.version, table: assembled.table, source: "controller" });
    } catch (err) {
      this.refuse(update.version, `apply failed: ${(err as Error).message}`);
      return;
    }
    this.config = assembled.config;
    this.lastNack = undefined;
    this.rejected = assembled.rejected;
    this.send({ kind: "ack", ack: { version: update.version, rejected: assembled.rejected } });
    this.saveCache(assembled.config, assembled.table);
  }

  private receiveCompressed(call: AgentCall, compressed: CompressedConfig): void {
    if (call !== this.call) return;
    let config: Config;
    try {
      config = inflateConfig(compressed, MAX_CONFIG_BYTES);
    } catch (err) {
      // The controller sends the version again, plain.
      this.refuse(compressed.version, (err as Error).message);
      return;
    }
    this.receive(call, config);
  }

  private refuse(version: string, error: string): void {
    this.lastNack = { version, error, at: new Date().toISOString() };
    this.opts.log.error({ version, error, keeping: this.config?.version }, "configuration refused");
    this.send({ kind: "nack", nack: { version, error } });
  }

  /** Saves what is in force (the rejected objects are not: a restart from the cache has none). */
  private saveCache(config: ControllerConfig, table: ServiceTable): void {
    try {
      saveConfigCache(this.opts.cacheFile, {
        version: config.version,
        controller: this.opts.address,
        savedAt: new Date().toISOString(),
        table,
        peers: [...config.peers],
      });
    } catch (err) {
      this.opts.log.error({ err: (err as Error).message }, "could not cache the configuration");
    }
  }

  private refreshNodeCertificate(): void {
    void this.opts.nodeCertificate?.refresh((req) => this.requestCertificate(req));
  }

  private async sendReport(): Promise<void> {
    this.refreshNodeCertificate(); // renewed at half-life, checked at the report's pace
    try {
      const stream = this.stream;
      if (!stream) return;
      const report = await this.opts.report(stream);
      // Built for that stream: on another (it went down meanwhile) it could leave out what the
      // controller at the other end never had.
      if (this.stream === stream) this.send({ kind: "report", report });
    } catch (err) {
      this.opts.log.warn({ err: (err as Error).message }, "report not sent");
    }
  }

  private send(msg: AgentMessage): void {
    this.call?.write(msg);
  }
}

function rejectedKey(o: RejectedObject): string {
  return `${o.kind}/${o.namespace}/${o.name}`;
}
