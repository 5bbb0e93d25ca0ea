// A lean simulated agent for scale benchmarks: a real grpc-js client on its own HTTP/2 connection
// (like SimAgent) that says Hello, enrolls its pods and ACKs every Config, but never decodes the
// services into objects. A thousand agents each holding 10,000 decoded services would not fit in a
// benchmark's memory or CPU, so Configs arrive as raw bytes and only what the benchmark checks is
// read: the version, and per service its key and how many endpoints it has.
//
// A version names one table, whoever receives it, so the agents of one process share a TableCache:
// the first Config reaching a version is read, the others adopt the result.
import { type ClientDuplexStream, credentials, Metadata, makeGenericClientConstructor } from "@grpc/grpc-js";
import protobuf from "protobufjs/minimal.js";
import { MAX_PEERS_PER_ROUND } from "../../../agent/control/probes.ts";
import {
  type AgentMessage,
  agentServiceDefinition,
  type CompressedConfig,
  mergesChangedPeers,
  NODE_SECRET_METADATA,
  type PeerProbe,
  type Report,
  reportPods,
  takesReportsWithoutPods,
  type WirePod,
} from "../../../api/agent-service.ts";
import {
  CONFIG_ENCODINGS,
  inflateConfigBytes,
  MAX_CONFIG_BYTES,
  releaseConfigBytes,
} from "../../../api/config-compression.ts";
import { LATENCY_BUCKETS_MS } from "../../../api/service-graph.ts";
import { SIM_NODE_FACTS, simNodeSecret } from "./fixtures.ts";

/** What the benchmark needs to know about a table: its services' endpoint counts. */
export interface TableSummary {
  readonly version: string;
  /** serviceKey → number of endpoints. */
  readonly endpointsByService: ReadonlyMap<string, number>;
  readonly endpoints: number;
}

const connect = agentServiceDefinition.Connect;
const RawAgentServiceClient = makeGenericClientConstructor(
  { Connect: { ...connect, responseDeserialize: (bytes: Buffer) => bytes } },
  "AgentService",
);
type RawCall = ClientDuplexStream<AgentMessage, Buffer>;

// ---- reading only what the benchmark needs, with protobufjs's Reader ----

const { Reader } = protobuf;

/** Walks the fields of `bytes`: `read` gets each field number and the reader positioned on its value. */
function fields(bytes: Uint8Array, read: (field: number, r: protobuf.Reader, wireType: number) => boolean): void {
  const r = Reader.create(bytes);
  while (r.pos < r.len) {
    const tag = r.uint32();
    if (!read(tag >>> 3, r, tag & 7)) r.skipType(tag & 7);
  }
}

/** The top of a Config: what the agent checks before applying it. */
interface ConfigHead {
  version: string;
  full: boolean;
  baseVersion: string;
}

/**
 * ControllerMessage → its Config's bytes: a view of a plain one, or a compressed one inflated, as an
 * agent must (`inflated`: the agent frees those once read, as the real one does).
 */
function configBytes(bytes: Buffer): { config: Uint8Array; inflated?: Buffer } {
  let config: Uint8Array | undefined;
  let inflated: Buffer | undefined;
  fields(bytes, (field, r) => {
    if (config) return false;
    if (field === 1) config = r.bytes();
    else if (field === 3) config = inflated = inflateConfigBytes(readCompressed(r.bytes()), MAX_CONFIG_BYTES);
    else return false;
    return true;
  });
  if (!config) throw new Error("a ControllerMessage without a Config");
  return { config, inflated };
}

function readCompressed(bytes: Uint8Array): CompressedConfig {
  const c: CompressedConfig = { encoding: "", version: "", size: 0, data: Buffer.alloc(0) };
  fields(bytes, (field, r) => {
    if (field === 1) c.encoding = r.string();
    else if (field === 2) c.version = r.string();
    else if (field === 3) c.size = r.uint32();
    else if (field === 4) c.data = Buffer.from(r.bytes());
    else return false;
    return true;
  });
  return c;
}

function readHead(config: Uint8Array): ConfigHead {
  const head: ConfigHead = { version: "", full: false, baseVersion: "" };
  fields(config, (field, r) => {
    if (field === 1) head.version = r.string();
    else if (field === 2) head.full = r.bool();
    else if (field === 3) head.baseVersion = r.string();
    else return false;
    return true;
  });
  return head;
}

/** Service bytes → [serviceKey, endpoint count]. */
function readService(service: Uint8Array): [string, number] {
  let name = "";
  let namespace = "";
  let endpoints = 0;
  fields(service, (field, r) => {
    if (field === 1) name = r.string();
    else if (field === 2) namespace = r.string();
    else {
      if (field === 5) endpoints++;
      return false;
    }
    return true;
  });
  return [`${namespace}/${name}`, endpoints];
}

/** The table a Config leads to, from the table it applies to (none for a full Config). */
function applyConfig(config: Uint8Array, head: ConfigHead, base?: TableSummary): TableSummary {
  const counts = new Map(head.full ? [] : base!.endpointsByService);
  fields(config, (field, r) => {
    if (field === 4) {
      const [key, n] = readService(r.bytes());
      counts.set(key, n);
    } else if (field === 5) counts.delete(r.string());
    else return false;
    return true;
  });
  let endpoints = 0;
  for (const n of counts.values()) endpoints += n;
  return { version: head.version, endpointsByService: counts, endpoints };
}

/** The tables the agents of one process hold, by version; each is dropped when no agent holds it. */
export class TableCache {
  private readonly tables = new Map<string, { summary: TableSummary; holders: number }>();

  /** The table `version` leads to, read from `bytes` unless another agent already reached it. */
  resolve(version: string, read: () => TableSummary): TableSummary {
    const known = this.tables.get(version);
    if (known) {
      known.holders++;
      return known.summary;
    }
    const summary = read();
    this.tables.set(version, { summary, holders: 1 });
    return summary;
  }

  release(version: string): void {
    const known = this.tables.get(version);
    if (known && --known.holders === 0) this.tables.delete(version);
  }

  get size(): number {
    return this.tables.size;
  }
}

export interface FleetAgentOptions {
  port: number;
  node: string;
  underlayIp: string;
  pods: WirePod[];
  cache: TableCache;
  /** Asks for every Config plain (no config_encodings in Hello), as agents before compression did. */
  plainConfigs?: boolean;
  /** Called after each ACK is written (wall-clock ms). */
  onApplied?: (agent: FleetAgent, atMs: number) => void;
}

/** A steady report's traffic: what a node serving a few edges sends every interval. */
export interface SteadyReports {
  intervalMs: number;
  /** Every node of the fleet: a real agent probes each node its Config lists. */
  peers: PeerProbe[];
  /** Edges per report (each with every latency bucket filled). */
  edges: number;
}

function wallClockMs(): number {
  return performance.timeOrigin + performance.now();
}

export class FleetAgent {
  readonly node: string;
  table: TableSummary | undefined;
  /** The store resourceVersion of each Config received (version "<store>.<endpoints>") and when. */
  readonly received: Array<{ storeVersion: number; atMs: number }> = [];
  nacks = 0;
  bytesReceived = 0;
  status: { code: number; details: string } | undefined;
  private readonly opts: FleetAgentOptions;
  private readonly client: InstanceType<typeof RawAgentServiceClient>;
  private readonly call: RawCall;
  private reportTimer: NodeJS.Timeout | undefined;
  reportsSent = 0;
  /** The controller merges reports of the probes taken since the last (its Hello answer said so). */
  private peersChangedOnly = false;
  /** The controller takes reports without the pods (its Hello answer said so). */
  private podsOmitted = false;

  constructor(opts: FleetAgentOptions) {
    this.opts = opts;
    this.node = opts.node;
    // A private subchannel pool gives each simulated agent its own connection, as real agents have.
    this.client = new RawAgentServiceClient(`127.0.0.1:${opts.port}`, credentials.createInsecure(), {
      "grpc.use_local_subchannel_pool": 1,
      "grpc.max_receive_message_length": MAX_CONFIG_BYTES, // as the real agent
    });
    // The node credential every agent presents (see agent/control/node-secret.ts).
    const metadata = new Metadata();
    metadata.set(NODE_SECRET_METADATA, simNodeSecret(opts.node));
    this.call = (this.client as unknown as { Connect(m: Metadata): RawCall }).Connect(metadata);
    this.call.on("data", (bytes: Buffer) => this.receive(bytes));
    this.call.on("metadata", (headers: Metadata) => {
      this.peersChangedOnly = mergesChangedPeers(headers);
      this.podsOmitted = takesReportsWithoutPods(headers);
    });
    this.call.on("error", (err: { code: number; details: string }) => {
      this.status ??= { code: err.code, details: err.details };
    });
    this.call.on("status", (s) => {
      this.status ??= { code: s.code, details: s.details };
    });
    this.send({
      kind: "hello",
      hello: {
        nodeName: opts.node,
        agentVersion: "sim",
        underlayIp: opts.underlayIp,
        facts: SIM_NODE_FACTS,
        configEncodings: opts.plainConfigs ? [] : [...CONFIG_ENCODINGS],
      },
    });
    this.send({ kind: "podsChanged", podsChanged: { pods: opts.pods } });
  }

  private send(msg: AgentMessage): void {
    this.call.write(msg);
  }

  private receive(bytes: Buffer): void {
    const atMs = wallClockMs();
    this.bytesReceived += bytes.length;
    const { config, inflated } = configBytes(bytes);
    try {
      this.apply(config, atMs);
    } finally {
      if (inflated) releaseConfigBytes(inflated);
    }
  }

  private apply(config: Uint8Array, atMs: number): void {
    const head = readHead(config);
    this.received.push({ storeVersion: Number(head.version.split(".")[0]), atMs });
    if (!head.full && head.baseVersion !== this.table?.version) {
      // As a real agent does: an update for a table it does not hold is refused.
      this.nacks++;
      this.send({ kind: "nack", nack: { version: head.version, error: `base ${head.baseVersion} is not held` } });
      return;
    }
    const base = this.table;
    this.table = this.opts.cache.resolve(head.version, () => applyConfig(config, head, base));
    if (base) this.opts.cache.release(base.version);
    this.send({ kind: "ack", ack: { version: head.version } });
    this.opts.onApplied?.(this, wallClockMs());
  }

  /** When this agent first received a Config carrying store resourceVersion `storeVersion` or newer. */
  receivedAt(storeVersion: number): number | undefined {
    return this.received.find((r) => r.storeVersion >= storeVersion)?.atMs;
  }

  /**
   * Reports as a real agent sends them (agent/control/controller-link.ts): its pods (none to a
   * controller that keeps them from PodsChanged), counters, the probes of every peer (then, to a
   * controller that merges them, of one round's peers) and its edges, every `intervalMs`, the
   * first after a random share of it (agents do not start together).
   */
  startReports(steady: SteadyReports): void {
    const namespace = this.opts.pods[0]?.namespace ?? "default";
    const workload = this.opts.pods[0]?.labels.app ?? this.node;
    const edges = Array.from({ length: steady.edges }, (_, i) => ({
      sourceWorkload: workload,
      sourceNamespace: namespace,
      destinationService: `svc-${i}.${namespace}`,
      destinationWorkload: `svc-${i}`,
      destinationNamespace: namespace,
      protocol: "http" as const,
      requests: 500,
      mtlsRequests: 500,
      errors: 1,
      bytesSent: 50_000,
      bytesReceived: 120_000,
      latencyBuckets: LATENCY_BUCKETS_MS.map((_, b) => b + 1),
    }));
    const all = steady.peers;
    // After the first, a report carries one round's probes, as a real agent's does to a controller
    // that merges them: MAX_PEERS_PER_ROUND peers, the next ones each time.
    const round = (n: number) =>
      Array.from(
        { length: Math.min(MAX_PEERS_PER_ROUND, all.length) },
        (_, i) => all[(n * MAX_PEERS_PER_ROUND + i) % all.length]!,
      );
    const report = (): Report => ({
      health: { ready: true, detail: "" },
      ...reportPods(this.podsOmitted, () => this.opts.pods),
      traffic: { connectionsOpened: 10, connectionsClosed: 9, bytesReceived: 1e6, bytesSent: 2e6 },
      ...(this.reportsSent > 0 && this.peersChangedOnly
        ? { peers: round(this.reportsSent - 1), peersChangedOnly: true }
        : { peers: all }),
      edges,
      intervalSeconds: steady.intervalMs / 1000,
    });
    const tick = () => {
      this.send({ kind: "report", report: report() });
      this.reportsSent++;
    };
    this.reportTimer = setTimeout(() => {
      tick();
      this.reportTimer = setInterval(tick, steady.intervalMs);
    }, Math.random() * steady.intervalMs);
  }

  stopReports(): void {
    clearTimeout(this.reportTimer); // an interval's too
  }

  close(): void {
    this.stopReports();
    this.call.end();
    this.client.close();
  }
}
