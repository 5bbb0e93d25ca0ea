// A simulated node agent for tests: a real grpc-js client on its own HTTP/2 connection that says
// Hello, keeps the table the controller sends and answers each Config as `decide` says.

import { type ClientDuplexStream, credentials, Metadata, makeGenericClientConstructor } from "@grpc/grpc-js";
import {
  type AgentMessage,
  agentServiceDefinition,
  type CertificateReply,
  type Config,
  type ControllerMessage,
  NODE_SECRET_METADATA,
  type Peer,
  serviceKey,
  type WireService,
  type WireTrafficObject,
} from "../../../api/agent-service.ts";
import { inflateConfig, MAX_CONFIG_BYTES } from "../../../api/config-compression.ts";
import { trafficKey } from "../../../api/traffic.ts";
import { SIM_NODE_FACTS, simNodeSecret } from "./fixtures.ts";

type SimCall = ClientDuplexStream<AgentMessage, ControllerMessage>;
const AgentServiceClient = makeGenericClientConstructor(agentServiceDefinition, "AgentService");

/** "ack", or the error to NACK with, or "ignore" to leave the Config unanswered. */
export type Decision = "ack" | "ignore" | { nack: string };

export class SimAgent {
  readonly node: string;
  readonly configs: Config[] = [];
  /** The versions of the Configs that arrived compressed (CompressedConfig). */
  readonly compressedVersions: string[] = [];
  /** The encoding of each compressed Config, in order. */
  readonly compressedEncodings: string[] = [];
  /** Answers to certificate requests, in arrival order. */
  readonly certificates: CertificateReply[] = [];
  readonly services = new Map<string, WireService>();
  /** By trafficKey. */
  readonly traffic = new Map<string, WireTrafficObject>();
  version = "";
  /** The node list as last sent (it includes this node). */
  peers: Peer[] = [];
  decide: (config: Config) => Decision = () => "ack";
  private readonly client: InstanceType<typeof AgentServiceClient>;
  private readonly call: SimCall;
  private waiters: Array<() => void> = [];
  status: { code: number; details: string } | undefined;

  /** `secret`: the node secret presented (default: one fixed per node name, as an agent's state dir keeps it; null: none). */
  constructor(
    port: number,
    node: string,
    opts: {
      token?: string;
      underlayIp?: string;
      secret?: string | null;
      host?: string;
      /** The controller's CA root: connect over TLS, verifying the controller with it (default: plaintext). */
      ca?: Buffer;
      /** With `ca`: a TLS client certificate to present (a node certificate), PEM. */
      clientCert?: { keyPem: string; chainPem: string };
      /** Hello's config_encodings (default: none, every Config plain). */
      configEncodings?: string[];
    } = {},
  ) {
    this.node = node;
    // A private subchannel pool gives each simulated agent its own connection, as real agents have.
    const client = opts.clientCert;
    const channel = opts.ca
      ? client
        ? credentials.createSsl(opts.ca, Buffer.from(client.keyPem), Buffer.from(client.chainPem))
        : credentials.createSsl(opts.ca)
      : credentials.createInsecure();
    this.client = new AgentServiceClient(`${opts.host ?? "127.0.0.1"}:${port}`, channel, {
      "grpc.use_local_subchannel_pool": 1,
    });
    const metadata = new Metadata();
    if (opts.token) metadata.set("authorization", `Bearer ${opts.token}`);
    const secret = opts.secret === undefined ? simNodeSecret(node) : opts.secret;
    if (secret !== null) metadata.set(NODE_SECRET_METADATA, secret);
    this.call = (this.client as unknown as { Connect(m: Metadata): SimCall }).Connect(metadata);
    this.call.on("data", (msg: ControllerMessage) => {
      if (msg.kind === "config") this.receive(msg.config);
      else if (msg.kind === "compressedConfig") {
        this.compressedVersions.push(msg.compressedConfig.version);
        this.compressedEncodings.push(msg.compressedConfig.encoding);
        this.receive(inflateConfig(msg.compressedConfig, MAX_CONFIG_BYTES));
      } else {
        this.certificates.push(msg.certificate);
        this.wake();
      }
    });
    this.call.on("error", (err: { code: number; details: string }) => {
      this.status = { code: err.code, details: err.details };
      this.wake();
    });
    this.call.on("status", (s) => {
      this.status ??= { code: s.code, details: s.details };
      this.wake();
    });
    this.send({
      kind: "hello",
      hello: {
        nodeName: node,
        agentVersion: "sim",
        underlayIp: opts.underlayIp ?? "",
        facts: SIM_NODE_FACTS,
        ...(opts.configEncodings ? { configEncodings: opts.configEncodings } : {}),
      },
    });
  }

  send(msg: AgentMessage): void {
    this.call.write(msg);
  }

  private receive(config: Config): void {
    this.configs.push(config);
    const decision = this.decide(config);
    if (decision === "ack") {
      if (config.full) {
        this.services.clear();
        this.traffic.clear();
      }
      for (const key of config.removed) this.services.delete(key);
      for (const key of config.removedTraffic) this.traffic.delete(key);
      for (const s of config.services) this.services.set(serviceKey(s), s);
      for (const t of config.traffic) this.traffic.set(trafficKey(t), t);
      if (config.peers) this.peers = config.peers.nodes;
      this.version = config.version;
      this.send({ kind: "ack", ack: { version: config.version } });
    } else if (decision !== "ignore") {
      this.send({ kind: "nack", nack: { version: config.version, error: decision.nack } });
    }
    this.wake();
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  /** Resolves once `condition` holds (checked after every Config); rejects after `timeoutMs`. */
  until(condition: () => boolean, timeoutMs = 5000, what = "condition"): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.node}: timed out waiting for ${what}`)), timeoutMs);
      const check = () => {
        if (condition()) {
          clearTimeout(timer);
          resolve();
        } else this.waiters.push(check);
      };
      check();
    });
  }

  /** The next Config received after this call. */
  nextConfig(timeoutMs = 5000): Promise<Config> {
    const seen = this.configs.length;
    return this.until(() => this.configs.length > seen, timeoutMs, "a Config").then(() => this.configs[seen]);
  }

  /** Half-closes the stream: the controller reads what was sent, then ends the call (status). */
  end(): void {
    this.call.end();
  }

  close(): void {
    this.call.end();
    this.client.close();
  }
}
