// `nodemesh controller`: the controller (default: file store; `--source kubernetes` reads Kubernetes).

import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { CONTROLLER_GRPC_PORT } from "../api/agent-service.ts";
import { durationMs } from "../api/duration.ts";
import { parseAlertmanagerUrl } from "./alerts/alertmanager.ts";
import { DEFAULT_MAX_NODES } from "./config/agent-server.ts";
import { parseGrpcTls, parseTlsSans } from "./config/agent-tls.ts";
import { Controller, type ControllerOptions } from "./controller.ts";
import type { PluggedCaFiles } from "./identity/workload-ca.ts";
import { DEFAULT_REST_PORT } from "./rest/server.ts";
import { OTLP_HTTP_PORT } from "./traces/otlp-server.ts";
import { DEFAULT_WEBHOOK_PORT } from "./webhook/webhook-server.ts";

const HELP = `Usage: nodemesh controller [options]

Runs the controller: keeps Services, routes and policies in a file store, serves the REST API
and the mesh dashboard (at / on the REST port), streams configuration to the agents over gRPC,
and keeps their traffic reports of the last 15 minutes (the service graph).

Options:
  --store-dir DIR         the file store (default: /var/lib/nodemesh-controller)
  --address ADDR          REST API address (default: 127.0.0.1; any other needs --tokens)
  --port PORT             REST API port (default: ${DEFAULT_REST_PORT})
  --tokens FILE           REST bearer tokens, one per line: TOKEN ROLE NAME (ROLE: read or write)
  --grpc-address ADDR     AgentService address (default: 0.0.0.0; without an agent token only
                          loopback is accepted, unless --insecure-agents)
  --grpc-port PORT        AgentService port (default: ${CONTROLLER_GRPC_PORT})
  --grpc-tls auto|on|off  TLS on the AgentService port (default: auto: TLS unless --grpc-address is
                          loopback). The server certificate is issued by the workload CA (the store
                          dir's ca.pem, which agents take as --controller-ca-file) and renewed at
                          half of its 30 days. off serves plaintext on any address: the bootstrap
                          token and all configuration then cross the network in the clear
  --tls-san NAME,...      more DNS names or IP addresses for the server certificate (repeatable);
                          it always names localhost, 127.0.0.1 and the --grpc-address (on 0.0.0.0:
                          the host name and every IPv4 address of the host's interfaces)
  --agent-token-file FILE bootstrap token agents must present (default: $NODEMESH_BOOTSTRAP_TOKEN)
  --insecure-agents       accept agents without a token on a non-loopback --grpc-address: anyone who
                          reaches the port can then register nodes (tests and demos only)
  --max-nodes N           most node names bound at once; Hellos from further new nodes are refused
                          (default: ${DEFAULT_MAX_NODES}). Each node name is bound to the node secret of
                          the agent that first claimed it: \`nodemesh nodes release NODE\` frees it
  --trust-domain DOMAIN   SPIFFE trust domain of workload identities (default: cluster.local): a pod's
                          identity is spiffe://DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT. The workload CA's
                          root is made on first start in the store dir (ca.pem, ca-key.pem)
  --workload-cert-ttl D   lifetime of workload certificates, e.g. 24h, 10m, 30s (default: 24h); agents
                          renew at half of it, and get them only for identities their pods have.
                          The agents' node certificates (their TLS client certificates) live as long
  --ca-cert-file FILE     an intermediate CA of your PKI signs instead of nodemesh's own root
  --ca-key-file FILE        (Istio's plug-in CA): its certificate, its key (ECDSA P-256, PKCS#8 PEM),
  --ca-chain-file FILE      the certificates between it and the root (optional) and the root(s) the
  --ca-root-file FILE       mesh trusts; all but the chain are needed together. Checked at start
                          (a CA certificate allowed to sign, in date, the key its own, the chain
                          leading to the root): the controller exits naming what is wrong. No
                          certificate outlives it; \`nodemesh ca rotate\` is refused (rotate in your PKI)
  --otlp-address ADDR[:PORT]
                          receive traces over OTLP/HTTP (POST /v1/traces, protobuf or JSON, port
                          default ${OTLP_HTTP_PORT}) and keep the last 2000 traces of up to 15 minutes in
                          memory for the dashboard's Traces view. Like a collector's OTLP port it asks
                          for no credentials: listen where only the nodes reach it (default: off)
  --alertmanager-url URL  Alertmanager whose alerts the dashboard's Alerts view shows (its
                          /api/v2/alerts, e.g. http://alertmanager:9093/). The controller asks it,
                          not the browser: it must be reachable from the controller
  --log-level LEVEL       trace, debug, info, warn, error (default: info)
  -h, --help              show this help

Kubernetes (docs/kubernetes.md):
  --source file|kubernetes
                          where Services, routes and policies come from (default: file, the store
                          above). kubernetes: Services of namespaces annotated nodemesh.io/intercept:
                          enabled, Gateway API HTTPRoutes/GRPCRoutes and TrafficPolicies, read-only
                          here (write them with kubectl); the Lease leader writes their status
  --kubeconfig FILE       API server credentials (default: the pod's service account)
  --namespace NS          the controller's namespace: Lease, webhook Secret, Service
                          (default: $POD_NAMESPACE, else nodemesh-system)
  --webhook-port PORT     HTTPS port of the injection webhook, POST /inject (default: ${DEFAULT_WEBHOOK_PORT}; 0: off)
  --webhook-tls-dir DIR   tls.crt and tls.key the webhook serves (the Secret the leader issues, mounted;
                          re-read when they change) (default: /etc/nodemesh/webhook-tls)
  --inject-image IMAGE    image of the injected init container (default: this controller's own image)
`;

function port(name: string, value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new Error(`--${name} must be a port number, got "${value}"`);
  return n;
}

function kubernetesOptions(values: {
  source: string;
  kubeconfig?: string;
  namespace?: string;
  "webhook-port": string;
  "webhook-tls-dir": string;
  "inject-image"?: string;
}): ControllerOptions["kubernetes"] {
  if (values.source === "file") return undefined;
  if (values.source !== "kubernetes") throw new Error(`--source must be file or kubernetes, got "${values.source}"`);
  const webhookPort = port("webhook-port", values["webhook-port"]);
  return {
    ...(values.kubeconfig ? { kubeconfig: values.kubeconfig } : {}),
    namespace: values.namespace ?? process.env.POD_NAMESPACE ?? "nodemesh-system",
    ...(process.env.POD_NAME ? { identity: process.env.POD_NAME } : {}),
    ...(webhookPort > 0
      ? {
          webhook: {
            host: "0.0.0.0",
            port: webhookPort,
            tlsDir: values["webhook-tls-dir"],
            ...(values["inject-image"] ? { image: values["inject-image"] } : {}),
          },
        }
      : {}),
  };
}

/** A DNS name: SPIFFE trust domains are lower-case host names. */
function trustDomain(value: string): string {
  if (!/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/.test(value)) {
    throw new Error(`--trust-domain must be a lower-case DNS name, got "${value}"`);
  }
  return value;
}

/** The plug-in CA flags: none, or the three required ones (and the optional chain). */
function pluggedCa(values: {
  "ca-cert-file"?: string;
  "ca-key-file"?: string;
  "ca-chain-file"?: string;
  "ca-root-file"?: string;
}): { pluggedCa?: PluggedCaFiles } {
  const certFile = values["ca-cert-file"];
  const keyFile = values["ca-key-file"];
  const rootFile = values["ca-root-file"];
  const chainFile = values["ca-chain-file"];
  if (!certFile && !keyFile && !rootFile && !chainFile) return {};
  const missing = [
    ["--ca-cert-file", certFile],
    ["--ca-key-file", keyFile],
    ["--ca-root-file", rootFile],
  ].flatMap(([flag, value]) => (value ? [] : [flag]));
  if (missing.length) throw new Error(`a plugged CA needs ${missing.join(" and ")} too`);
  return {
    pluggedCa: { certFile: certFile!, keyFile: keyFile!, rootFile: rootFile!, ...(chainFile ? { chainFile } : {}) },
  };
}

/** `--otlp-address`: HOST, HOST:PORT or [IPv6]:PORT. */
function otlpAddress(value: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+))(?::(\d+))?$/.exec(value);
  if (!m) throw new Error(`--otlp-address must be HOST or HOST:PORT, got "${value}"`);
  return { host: m[1] ?? m[2]!, port: m[3] === undefined ? OTLP_HTTP_PORT : port("otlp-address", m[3]) };
}

function certificateLifetime(value: string): number {
  const ms = /^\d+(ms|s|m|h)$/.test(value) ? durationMs(value) : Number.NaN;
  if (!(ms >= 1000 && ms <= 365 * 24 * 3600_000)) {
    throw new Error(`--workload-cert-ttl must be a duration from 1s to 8760h (e.g. 24h, 30s), got "${value}"`);
  }
  return ms;
}

export async function runController(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      "store-dir": { type: "string", default: "/var/lib/nodemesh-controller" },
      address: { type: "string", default: "127.0.0.1" },
      port: { type: "string", default: String(DEFAULT_REST_PORT) },
      tokens: { type: "string" },
      "grpc-address": { type: "string", default: "0.0.0.0" },
      "grpc-port": { type: "string", default: String(CONTROLLER_GRPC_PORT) },
      "grpc-tls": { type: "string", default: "auto" },
      "tls-san": { type: "string", multiple: true, default: [] },
      "agent-token-file": { type: "string" },
      "insecure-agents": { type: "boolean", default: false },
      "max-nodes": { type: "string", default: String(DEFAULT_MAX_NODES) },
      "log-level": { type: "string", default: "info" },
      "trust-domain": { type: "string", default: "cluster.local" },
      "workload-cert-ttl": { type: "string", default: "24h" },
      "ca-cert-file": { type: "string" },
      "ca-key-file": { type: "string" },
      "ca-chain-file": { type: "string" },
      "ca-root-file": { type: "string" },
      source: { type: "string", default: "file" },
      kubeconfig: { type: "string" },
      namespace: { type: "string" },
      "webhook-port": { type: "string", default: String(DEFAULT_WEBHOOK_PORT) },
      "webhook-tls-dir": { type: "string", default: "/etc/nodemesh/webhook-tls" },
      "inject-image": { type: "string" },
      "otlp-address": { type: "string" },
      "alertmanager-url": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const maxNodes = Number(values["max-nodes"]);
  if (!Number.isInteger(maxNodes) || maxNodes < 1)
    throw new Error(`--max-nodes must be a positive integer, got "${values["max-nodes"]}"`);
  const tokenFile = values["agent-token-file"];
  const agentToken = tokenFile ? readFileSync(tokenFile, "utf8").trim() : process.env.NODEMESH_BOOTSTRAP_TOKEN;
  const controller = await Controller.start({
    storeDir: values["store-dir"],
    restHost: values.address,
    restPort: port("port", values.port),
    grpcHost: values["grpc-address"],
    grpcPort: port("grpc-port", values["grpc-port"]),
    grpcTls: parseGrpcTls(values["grpc-tls"]),
    tlsSans: parseTlsSans(values["tls-san"]),
    ...(values.tokens ? { tokensFile: values.tokens } : {}),
    ...(agentToken ? { agentToken } : {}),
    insecureAgents: values["insecure-agents"],
    maxNodes,
    trustDomain: trustDomain(values["trust-domain"]),
    certificateLifetimeMs: certificateLifetime(values["workload-cert-ttl"]),
    ...pluggedCa(values),
    logLevel: values["log-level"],
    ...(kubernetesOptions(values) ? { kubernetes: kubernetesOptions(values) } : {}),
    ...(values["otlp-address"] !== undefined ? { otlp: otlpAddress(values["otlp-address"]) } : {}),
    ...(values["alertmanager-url"] !== undefined
      ? { alertmanagerUrl: parseAlertmanagerUrl(values["alertmanager-url"]) }
      : {}),
  });
  await new Promise<void>((resolve) => {
    process.once("SIGTERM", resolve);
    process.once("SIGINT", resolve);
  });
  await controller.stop();
  return 0;
}
