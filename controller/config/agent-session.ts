// One agent's stream. The first message must be Hello; then the session sends a full Config and,
// whenever a newer table exists, the update from what the agent holds. At most one Config is in
// flight per agent: the next goes out once the agent has answered (ACK or NACK) the last one, and
// it is the update to the latest table. A slow agent thus skips intermediate versions instead of
// queueing them, and during a burst of changes (a thousand agents enrolling their pods) each agent
// gets a few large updates rather than one per rebuild. (xDS paces by ACK the same way.)

import { status as GrpcStatus, Metadata, type ServerDuplexStream, type StatusObject } from "@grpc/grpc-js";
import {
  type AgentMessage,
  agentServiceDefinition,
  type CertificateReply,
  type CertificateRequest,
  type Hello,
  NODE_CERTIFICATE_METADATA,
  type PodsDelta,
  REPORT_PEERS_CHANGED_ONLY,
  REPORT_PEERS_METADATA,
  REPORT_PODS_METADATA,
  REPORT_PODS_OMITTED,
  type RejectedObject,
  type Report,
  type WirePod,
} from "../../api/agent-service.ts";
import { type ConfigEncoding, pickConfigEncoding } from "../../api/config-compression.ts";
import type { ConfigPublisher } from "./config-publisher.ts";
import type { SendBudget } from "./send-budget.ts";
import type { ConfigTable } from "./service-table.ts";
import { compareVersions } from "./version.ts";

/** Configs go out already encoded (ConfigPublisher.messageFrom): the stream writes bytes. */
export type AgentCall = ServerDuplexStream<AgentMessage, Buffer>;

/** Who is claiming a node: the call's metadata (credentials) and its peer address (for logs). */
export interface Claim {
  metadata: Metadata;
  peer: string;
  /** The node certificate the stream's TLS connection presented (DER), if any. */
  certificate?: Buffer;
}

/** What a session reports to, implemented by the server. */
export interface SessionHost {
  readonly publisher: ConfigPublisher;
  /** Shared by every session: how many Config bytes may be written and not yet flushed at once. */
  readonly sendBudget: SendBudget;
  /**
   * Registers the node for this session, ending an older session of the same node; or refuses
   * the claim (the returned status ends the stream).
   */
  claim(session: AgentSession, hello: Hello, claim: Claim): Promise<Pick<StatusObject, "code" | "details"> | undefined>;
  release(session: AgentSession): void;
  /** A Config went out: `encoding` "plain" or the CompressedConfig's. */
  configSent(encoding: string, bytes: number): void;
  /** `rejected`: the objects of the version the agent left out, and why. */
  acked(node: string, version: string, rejected: readonly RejectedObject[]): void;
  nacked(node: string, version: string, error: string): void;
  reported(node: string, report: Report): void;
  podsChanged(node: string, pods: WirePod[]): void;
  podsDelta(node: string, delta: PodsDelta): void;
  /** Signs the workload certificate `node`'s agent asks for, or says why not. */
  certificateRequested(node: string, request: CertificateRequest): Promise<CertificateReply>;
}

const serialize = agentServiceDefinition.Connect.responseSerialize as (msg: unknown) => Buffer;

/** Messages an agent may send after Hello while its claim is being decided (they are handled after). */
const MAX_QUEUED_DURING_CLAIM = 64;

const NODE_NAME = /^[a-z0-9]([-.a-z0-9]{0,251}[a-z0-9])?$/;

/** The client certificate the call's TLS connection presented (an agent's node certificate), DER. */
export function peerCertificateOf(call: AgentCall): Buffer | undefined {
  const raw = call.getAuthContext?.()?.sslPeerCertificate?.raw;
  return raw && raw.length > 0 ? raw : undefined;
}

export class AgentSession {
  private readonly call: AgentCall;
  private readonly host: SessionHost;
  private nodeName: string | undefined;
  /** The table the agent holds once it has applied everything sent; undefined → next send is full. */
  private base: ConfigTable | undefined;
  private lastSentVersion: string | undefined;
  /** Like lastSentVersion, but never reset: an ACK beyond it is not believed. */
  private newestSentVersion: string | undefined;
  /** The version sent and not answered yet: nothing else is sent until the agent answers it. */
  private awaiting: string | undefined;
  private ended = false;
  /** Set while the Hello's claim is decided (it may ask the Kubernetes API): what arrives meanwhile. */
  private queued: AgentMessage[] | undefined;
  private readonly stopListening: () => void;
  private readonly retrySend = () => this.sendLatest();
  /** Budget taken by the write in progress; grpc-js never completes a write to a cancelled call. */
  private budgetHeld = 0;
  /** The CompressedConfig encoding the agent reads (its Hello), if any this controller writes. */
  private configEncoding: ConfigEncoding | undefined;
  /** The version last sent compressed: a NACK of it turns compression off for this agent. */
  private compressedVersion: string | undefined;

  constructor(call: AgentCall, host: SessionHost) {
    this.call = call;
    this.host = host;
    this.stopListening = host.publisher.onTable(this.retrySend);
    call.on("data", (msg: AgentMessage) => this.receive(msg));
    call.on("end", () => this.end());
    call.on("error", () => this.end()); // the agent went away; nothing to report back
    call.on("cancelled", () => this.end());
  }

  get node(): string | undefined {
    return this.nodeName;
  }

  /** The stream has ended (or was refused). */
  get closed(): boolean {
    return this.ended;
  }

  private receive(msg: AgentMessage): void {
    if (this.ended) return;
    if (this.queued) {
      if (this.queued.length >= MAX_QUEUED_DURING_CLAIM)
        this.fail(GrpcStatus.RESOURCE_EXHAUSTED, "too many messages before the node was claimed");
      else this.queued.push(msg);
      return;
    }
    if (this.nodeName === undefined) this.greet(msg);
    else this.handle(this.nodeName, msg);
  }

  private greet(msg: AgentMessage): void {
    if (msg.kind !== "hello") {
      this.fail(GrpcStatus.FAILED_PRECONDITION, "the first message must be Hello");
    } else if (!NODE_NAME.test(msg.hello.nodeName)) {
      this.fail(GrpcStatus.INVALID_ARGUMENT, "invalid node_name");
    } else {
      this.queued = [];
      const hello = msg.hello;
      const certificate = peerCertificateOf(this.call);
      this.host
        .claim(this, hello, {
          metadata: this.call.metadata,
          peer: this.call.getPeer(),
          ...(certificate ? { certificate } : {}),
        })
        .catch((err: Error) => ({ code: GrpcStatus.INTERNAL, details: `claim failed: ${err.message}` }))
        .then((refusal) => {
          const queued = this.queued ?? [];
          this.queued = undefined;
          if (this.ended) return;
          if (refusal) {
            this.end(refusal);
            return;
          }
          this.nodeName = hello.nodeName;
          this.configEncoding = pickConfigEncoding(hello.configEncodings);
          // Lets the agent know it is connected before any Config, whether on its node certificate,
          // and that its reports may carry only the probes taken since the previous one and leave
          // out the pods (it keeps those from PodsChanged and PodsDelta).
          const headers = new Metadata();
          if (certificate) headers.set(NODE_CERTIFICATE_METADATA, "accepted");
          headers.set(REPORT_PEERS_METADATA, REPORT_PEERS_CHANGED_ONLY);
          headers.set(REPORT_PODS_METADATA, REPORT_PODS_OMITTED);
          this.call.sendMetadata(headers);
          this.sendLatest();
          for (const queuedMsg of queued) this.receive(queuedMsg);
        });
    }
  }

  private handle(node: string, msg: AgentMessage): void {
    switch (msg.kind) {
      case "ack":
        if (this.newestSentVersion !== undefined && compareVersions(msg.ack.version, this.newestSentVersion) <= 0) {
          this.host.acked(node, msg.ack.version, msg.ack.rejected ?? []);
        }
        this.answered(msg.ack.version);
        break;
      case "nack":
        this.host.nacked(node, msg.nack.version, msg.nack.error);
        // The agent kept its previous table, whatever we sent after it: resend in full. Resending
        // the refused version itself would only be refused again, so that waits for a newer table.
        this.base = undefined;
        if (msg.nack.version !== this.lastSentVersion) this.lastSentVersion = undefined;
        if (msg.nack.version === this.compressedVersion) {
          // It may be the compression it could not read: the same version goes again, plain.
          this.configEncoding = undefined;
          this.lastSentVersion = undefined;
        }
        this.answered(msg.nack.version);
        break;
      case "report":
        this.host.reported(node, msg.report);
        break;
      case "podsChanged":
        this.host.podsChanged(node, msg.podsChanged.pods);
        break;
      case "podsDelta":
        this.host.podsDelta(node, msg.podsDelta);
        break;
      case "certificateRequest":
        void this.host.certificateRequested(node, msg.certificateRequest).then((certificate) => {
          if (!this.ended) this.call.write(serialize({ kind: "certificate", certificate }));
        });
        break;
      case "hello":
        this.fail(GrpcStatus.FAILED_PRECONDITION, "Hello was already received");
        break;
    }
  }

  private answered(version: string): void {
    if (version === this.awaiting) this.awaiting = undefined;
    this.sendLatest();
  }

  private sendLatest(): void {
    if (this.awaiting !== undefined || this.ended || this.nodeName === undefined) return;
    const table = this.host.publisher.current();
    if (!table || table.version === this.lastSentVersion) return;
    const { message, compressed } = this.host.publisher.messageFrom(this.base, this.configEncoding);
    if (!this.host.sendBudget.take(message.length, this.retrySend)) return;
    this.compressedVersion = compressed ? table.version : undefined;
    this.base = table;
    this.lastSentVersion = table.version;
    this.newestSentVersion = table.version;
    this.awaiting = table.version;
    this.budgetHeld = message.length;
    this.host.configSent(compressed ? this.configEncoding! : "plain", message.length);
    this.call.write(message, () => this.releaseBudget());
  }

  private releaseBudget(): void {
    this.host.sendBudget.release(this.budgetHeld);
    this.budgetHeld = 0;
  }

  private fail(code: GrpcStatus, details: string): void {
    this.end({ code, details });
  }

  /** Ends the stream (if still open) with `status`, or OK, and unregisters; idempotent. */
  end(status?: Pick<StatusObject, "code" | "details">): void {
    if (this.ended) return;
    this.ended = true;
    this.stopListening();
    this.host.sendBudget.forget(this.retrySend);
    this.releaseBudget();
    if (!this.call.writableEnded) {
      // grpc-js turns an emitted error into the call's final status.
      if (status) this.call.emit("error", status);
      else this.call.end();
    }
    if (this.nodeName !== undefined) this.host.release(this);
  }
}
