// The agent ↔ controller contract (api/agent.proto) loaded for @grpc/grpc-js, with TypeScript
// types for its messages and the conversions between the wire messages and api/services.ts.
//
// Loader options: camelCase field names, 64-bit integers as numbers, proto3 defaults filled in
// (so strings are "" and lists [] when unset) and `kind` naming the member set in each oneof.

import { fileURLToPath } from "node:url";
import type { Metadata, ServiceDefinition } from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { canonicalJson } from "./canonical-json.ts";
import type { EdgeSample } from "./service-graph.ts";
import type { PortProtocol, Service, ServiceEndpoint, ServicePort } from "./services.ts";
import type { TrafficObject } from "./traffic.ts";

export const AGENT_SERVICE_NAME = "nodemesh.agent.v1.AgentService";
export const CONTROLLER_GRPC_PORT = 15012;

/**
 * Call metadata carrying the agent's node secret (random, kept in its state dir). The controller
 * binds a node name to the secret that first claimed it and refuses other secrets for that name.
 */
export const NODE_SECRET_METADATA = "nodemesh-node-secret";
/** What a node secret looks like: 32 to 128 base64url characters (agents send 32 random bytes). */
export const NODE_SECRET_PATTERN = /^[A-Za-z0-9_-]{32,128}$/;
/**
 * Header the controller answers an accepted Hello with: "accepted" when the stream's TLS client
 * certificate was taken as the node's certificate (absent: the stream got in on the token).
 */
export const NODE_CERTIFICATE_METADATA = "nodemesh-node-certificate";
/**
 * Header the controller answers an accepted Hello with, valued REPORT_PEERS_CHANGED_ONLY: it
 * merges reports that carry only the peers probed since the previous one (Report.peersChangedOnly).
 * An agent sends such reports only on a stream that said so, so an older controller keeps getting
 * every probe.
 */
export const REPORT_PEERS_METADATA = "nodemesh-report-peers";
export const REPORT_PEERS_CHANGED_ONLY = "changed-only";
/** Whether a controller's answer to the Hello (`headers`) says it merges partial reports. */
export function mergesChangedPeers(headers: Metadata): boolean {
  return headers.get(REPORT_PEERS_METADATA)[0] === REPORT_PEERS_CHANGED_ONLY;
}
/**
 * Header the controller answers an accepted Hello with, valued REPORT_PODS_OMITTED: it keeps a
 * node's pods from the stream's PodsChanged and PodsDelta, so reports may leave them out
 * (Report.podsOmitted). Messages on one stream arrive in order and all, and a new stream starts
 * with the whole list, so a report's copy healed nothing; at 1000 nodes of 50 pods it was 10,000
 * pods a second for the controller to decode and compare.
 */
export const REPORT_PODS_METADATA = "nodemesh-report-pods";
export const REPORT_PODS_OMITTED = "omitted";
/** Whether a controller's answer to the Hello (`headers`) says it takes reports without the pods. */
export function takesReportsWithoutPods(headers: Metadata): boolean {
  return headers.get(REPORT_PODS_METADATA)[0] === REPORT_PODS_OMITTED;
}
/** A report's pods: none to a controller that takes reports without them (`omit`), else every one. */
export function reportPods(omit: boolean, pods: () => WirePod[]): Pick<Report, "pods" | "podsOmitted"> {
  return omit ? { pods: [], podsOmitted: true } : { pods: pods() };
}

/** How agent.proto is loaded (see the top of this file). */
export const PROTO_LOADER_OPTIONS = {
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
} as const;

const packageDefinition = loadSync(fileURLToPath(new URL("./agent.proto", import.meta.url)), PROTO_LOADER_OPTIONS);

/** Pass to `server.addService` or `makeGenericClientConstructor`. */
export const agentServiceDefinition = packageDefinition[AGENT_SERVICE_NAME] as unknown as ServiceDefinition;

// ---- agent → controller ----

export interface NetworkInterfaceFacts {
  name: string;
  ipv4: string;
  mac: string;
}

export interface NodeFacts {
  cpuModel: string;
  cpuCores: number;
  memoryBytes: number;
  os: string;
  kernel: string;
  interfaces: NetworkInterfaceFacts[];
}

export interface Hello {
  nodeName: string;
  agentVersion: string;
  underlayIp: string;
  facts: NodeFacts;
  /** Encodings of CompressedConfig the agent reads (api/config-compression.ts); absent: none. */
  configEncodings?: string[];
}

/** An object of a configuration that an agent refused (and left out of its table), and why. */
export interface RejectedObject {
  /** "Service", or a traffic kind. */
  kind: string;
  namespace: string;
  name: string;
  reason: string;
}

/** The version is in force, without the objects listed in `rejected`. */
export interface Ack {
  version: string;
  /** Absent when sent means none; always present (maybe empty) when received. */
  rejected?: RejectedObject[];
}

export interface Nack {
  version: string;
  error: string;
}

export interface WirePod {
  name: string;
  namespace: string;
  ip: string;
  labels: Record<string, string>;
  /** The pod's workload identity: spiffe://<trust domain>/ns/<namespace>/sa/<serviceAccount> ("" or absent: default). */
  serviceAccount?: string;
}

export interface Health {
  ready: boolean;
  detail: string;
}

export interface TrafficCounters {
  connectionsOpened: number;
  connectionsClosed: number;
  bytesReceived: number;
  bytesSent: number;
}

export interface PeerProbe {
  nodeName: string;
  rttMs: number;
  lossRatio: number;
  error: string;
}

/**
 * Meshes of up to this many nodes get every probe from the agents list's `?peers=matrix` (enough to
 * draw the nodes² matrix); a larger one each node's summary only (controller/agents-view.ts).
 */
export const MATRIX_MAX_NODES = 40;

/**
 * A node's latest probes in a few numbers, as the controller's agents list serves them (REST, not
 * this stream): with `?peers=summary` in place of the probes, whose whole matrix grows as nodes²
 * (1000 nodes: 71 MB of JSON against 6 MB, controller/agents-view.ts).
 */
export interface PeerSummary {
  /** Peers in the agent's last round of probes. */
  probed: number;
  /** Peers whose every probe was lost, or that could not be probed (an error). */
  unreachable: number;
  /** Peers that answered some probes but not all. */
  lossy: number;
  /** Over the peers that answered; null when none did. */
  rttMedianMs: number | null;
  rttMaxMs: number | null;
  /** The answering peer with the highest RTT; null when none answered. */
  slowestPeer: string | null;
}

export interface Report {
  health: Health;
  pods: WirePod[];
  traffic: TrafficCounters;
  peers: PeerProbe[];
  /** Traffic per edge since the previous report (api/service-graph.ts). */
  edges: EdgeSample[];
  /** Seconds since the previous report (or since the agent started). */
  intervalSeconds: number;
  /** `peers` holds only the probes taken since the previous report on this stream (see agent.proto). */
  peersChangedOnly?: boolean;
  /** `pods` is left out: the pods are those sent in PodsChanged and PodsDelta on this stream. */
  podsOmitted?: boolean;
}

export interface PodsChanged {
  pods: WirePod[];
}

export interface PodsDelta {
  upserted: WirePod[];
  /** "<namespace>/<name>" of each pod no longer enrolled. */
  removed: string[];
}

export type AgentMessage =
  | { kind: "hello"; hello: Hello }
  | { kind: "ack"; ack: Ack }
  | { kind: "nack"; nack: Nack }
  | { kind: "report"; report: Report }
  | { kind: "podsChanged"; podsChanged: PodsChanged }
  | { kind: "podsDelta"; podsDelta: PodsDelta }
  | { kind: "certificateRequest"; certificateRequest: CertificateRequest };

export interface CertificateRequest {
  requestId: string;
  namespace: string;
  serviceAccount: string;
  csrPem: string;
  /** A node certificate for the agent itself (namespace and serviceAccount unused). */
  node?: boolean;
}

// ---- controller → agent ----

export interface WireServicePort {
  name: string;
  port: number;
  targetPort?: number;
  protocol: string;
}

export interface WireEndpoint {
  ip: string;
  port?: number;
  node: string;
  pod: string;
  meshed: boolean;
  workload: string;
  serviceAccount: string;
}

export interface WireService {
  name: string;
  namespace: string;
  vip: string;
  ports: WireServicePort[];
  endpoints: WireEndpoint[];
}

export interface Peer {
  name: string;
  underlayIp: string;
}

export interface PeerList {
  nodes: Peer[];
}

export interface WireTrafficObject {
  kind: string;
  namespace: string;
  name: string;
  specJson: string;
}

export interface Config {
  version: string;
  full: boolean;
  baseVersion: string;
  services: WireService[];
  removed: string[];
  /** Every known node (the receiver included); null or absent when unchanged since the base. */
  peers?: PeerList | null;
  traffic: WireTrafficObject[];
  /** trafficKey ("<kind>/<namespace>/<name>") of each traffic object that is gone. */
  removedTraffic: string[];
}

export interface CertificateReply {
  requestId: string;
  /** Leaf first; empty with an error. */
  certChainPem: string;
  trustBundlePem: string;
  error: string;
}

/** A Config's bytes compressed (api/config-compression.ts). */
export interface CompressedConfig {
  encoding: string;
  version: string;
  size: number;
  data: Buffer;
}

export type ControllerMessage =
  | { kind: "config"; config: Config }
  | { kind: "certificate"; certificate: CertificateReply }
  | { kind: "compressedConfig"; compressedConfig: CompressedConfig };

// ---- conversions ----

/** The key a service goes by in `Config.removed` and in tables: "<namespace>/<name>". */
export function serviceKey(s: { namespace: string; name: string }): string {
  return `${s.namespace}/${s.name}`;
}

export function toWireService(s: Service): WireService {
  return {
    name: s.name,
    namespace: s.namespace,
    vip: s.vip,
    ports: s.ports.map((p) => ({
      name: p.name ?? "",
      port: p.port,
      ...(p.targetPort !== undefined ? { targetPort: p.targetPort } : {}),
      protocol: p.protocol ?? "",
    })),
    endpoints: s.endpoints.map((e) => ({
      ip: e.ip,
      ...(e.port !== undefined ? { port: e.port } : {}),
      node: e.node ?? "",
      pod: e.pod ?? "",
      meshed: e.meshed ?? false,
      workload: e.workload ?? "",
      serviceAccount: e.serviceAccount ?? "",
    })),
  };
}

/**
 * The api/services.ts shape of a decoded wire service: unset strings ("") become absent fields and
 * the loader's virtual oneof fields are dropped, so validateServiceTable sees exactly the schema.
 */
export function fromWireService(w: WireService): Service {
  return {
    name: w.name,
    namespace: w.namespace,
    vip: w.vip,
    ports: w.ports.map((p) => {
      const port: ServicePort = { port: p.port };
      if (p.name) port.name = p.name;
      if (p.targetPort !== undefined) port.targetPort = p.targetPort;
      if (p.protocol) port.protocol = p.protocol as PortProtocol;
      return port;
    }),
    endpoints: w.endpoints.map((e) => {
      const endpoint: ServiceEndpoint = { ip: e.ip, meshed: e.meshed };
      if (e.port !== undefined) endpoint.port = e.port;
      if (e.node) endpoint.node = e.node;
      if (e.pod) endpoint.pod = e.pod;
      if (e.workload) endpoint.workload = e.workload;
      if (e.serviceAccount) endpoint.serviceAccount = e.serviceAccount;
      return endpoint;
    }),
  };
}

/** The spec goes as canonical JSON, so equal objects are equal bytes. */
export function toWireTraffic(o: TrafficObject): WireTrafficObject {
  return { kind: o.kind, namespace: o.namespace, name: o.name, specJson: canonicalJson(o.spec) };
}

/**
 * A traffic object as received: its spec not validated yet (the agent does that per object);
 * `specError` when spec_json was not even JSON.
 */
export interface ReceivedTraffic {
  readonly kind: string;
  readonly namespace: string;
  readonly name: string;
  readonly spec: unknown;
  readonly specError?: string;
}

export function fromWireTraffic(w: WireTrafficObject): ReceivedTraffic {
  try {
    return { kind: w.kind, namespace: w.namespace, name: w.name, spec: JSON.parse(w.specJson) };
  } catch (err) {
    return { kind: w.kind, namespace: w.namespace, name: w.name, spec: undefined, specError: (err as Error).message };
  }
}
