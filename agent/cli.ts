// `nodemesh agent`: starts the node agent.

import { readFileSync } from "node:fs";
import { hostname } from "node:os";
import { parseArgs } from "node:util";
import type { Logger } from "pino";
import { ADMIN_PORT, DEFAULT_ENROLLMENT_SOCKET } from "../api/dataplane.ts";
import packageJson from "../package.json" with { type: "json" };
import { Agent } from "./agent.ts";
import { channelSecurity, readCaFile } from "./control/controller-channel.ts";
import { ENROLLMENT_LIMITS } from "./control/enrollment-server.ts";
import { defaultWorkerCount, type WorkerCount } from "./control/workers.ts";
import {
  DEFAULT_FLOOD_LIMITS,
  HTTP2_CONTROL_FRAMES_PER_S,
  PREMATURE_RESET_MIN_STREAMS,
  PREMATURE_RESET_WINDOW_MS,
} from "./dataplane/limits.ts";
import { tracesUrl } from "./dataplane/otlp-exporter.ts";
import { DEFAULT_SAMPLING_PERCENT } from "./dataplane/tracing.ts";

const HELP = `Usage: nodemesh agent [options]

Runs the node agent: accepts pod enrollments on a unix socket, opens each enrolled pod's
listeners (15001 outbound, 15006 inbound, 15008 tunnel) inside the pod's network namespace and
forwards its TCP traffic. Run it in the node's network namespace, as root.

Options:
  --node-name NAME          this node's name (default: $NODE_NAME, else the hostname)
  --enrollment-socket PATH  unix socket init containers enroll pods on, the same flag as
                            nodemesh init's (default: ${DEFAULT_ENROLLMENT_SOCKET}); a caller
                            enrolls only its own network namespace (docs/security.md)
  --interception MODE       iptables (default) or ebpf: what \`nodemesh init --mode node\` installs
                            in this node's pods (the init asks on the enrollment socket). ebpf
                            needs Linux 5.15+, kernel BTF, cgroup v2 and bpffs; an init on a node
                            without them fails, naming what is missing and --mode iptables
  --state-dir DIR           where enrolled pods are recorded across restarts (default: /var/lib/nodemesh);
                            also the node's facts (per boot) and the workload certificates held (0600)
  --services FILE           static service table (JSON, see api/services.ts); SIGHUP re-reads it.
                            The offline alternative to --controller
  --controller HOST:PORT    take the service table from the controller's gRPC AgentService (port 15012);
                            the last applied table is cached in the state dir and served at start-up
                            until the controller answers. The agent's node secret (made on first
                            start, state dir, 0600) binds this node name to this agent at the controller
  --controller-token-file FILE
                            bootstrap token for the controller (default: $NODEMESH_BOOTSTRAP_TOKEN).
                            Over TLS the agent then gets a node certificate (state dir, node-cert.pem,
                            node-key.pem 0600) that stands in for the token on later streams
  --controller-ca-file FILE the controller's CA root (PEM; its store dir's ca.pem): the stream is TLS,
                            and the controller's certificate must chain to it and name the
                            --controller host. Re-read at each connection attempt. Without it the
                            stream is plaintext, which is refused unless the controller is on loopback
                            or --insecure-controller is given
  --insecure-controller     connect to a controller off loopback in plaintext: the token, the node
                            secret and the configuration then cross the network in the clear (tests
                            only; the controller must then run with --grpc-tls off)
  --tunnel-key-file FILE    the mesh's tunnel key (32 to 128 hex characters, the same file on every
                            node): tunnel handshakes are signed with it and unsigned ones refused, so
                            a pod cannot reach another pod's tunnel port by slipping past its own
                            interception (docs/security.md). Without it handshakes are not checked
  --underlay-ip IP          address other nodes reach this one on (default: first non-loopback IPv4)
  --report-interval-s N     seconds between reports (pods, counters, peer RTT) to the controller (default: 5)
  --admin-address ADDR      admin listener address (default: 0.0.0.0)
  --admin-port PORT         admin listener port: /healthz /readyz /metrics, and /debug/config
                            for loopback callers only (default: ${ADMIN_PORT})
  --workers N|auto          data-plane worker threads. auto (default): start with one and add one
                            whenever the running ones are busy (event loops over 50 % for 2 s), up
                            to ${defaultWorkerCount()} (the core count up to 8); never fewer again. N: exactly N.
                            One that fails is logged and replaced, its siblings serving meanwhile
  --drain-timeout-s N       on SIGTERM (or when a new agent takes over): how long connections in
                            flight may finish. HTTP/1.1 connections close after their next answer,
                            HTTP/2 sessions get GOAWAY; opaque TCP streams still open at the end are
                            cut (default: 30; docs/operations.md). With no new agent beside it, the
                            agent serves on as usual while opaque streams are open, up to this long,
                            then hands its listeners on and gives requests in flight 2 s
  --hold-listeners-s N      on a stop with no new agent beside it (stop, then start): how long the
                            pods' listening sockets stay open in a holder process once the agent
                            closes its own, so connections arriving before the next agent starts
                            wait instead of being refused; the next agent takes them over.
                            0: not held (default: 30)
  --connect-timeout-ms MS   budget of each hop of an upstream connect attempt before failing over:
                            reaching the endpoint or its agent, then that agent's answer (default: 1000)
  --detect-timeout-ms MS    on a port whose protocol is not declared, how long to wait for the
                            client's first bytes before treating it as opaque TCP (default: 100)
  --access-log SCOPE        access-log lines (JSON, one per request or TCP connection) for: all,
                            none (default), or namespaces separated by commas; a TrafficPolicy's
                            accessLog turns them on for its Service
  --access-log-file FILE    where access-log lines go (default: stdout)
  --request-metrics on|off  per-request metrics and service-graph reports (default: on; off only
                            to measure their cost)
  --otlp-endpoint URL       export trace spans to this OpenTelemetry collector (OTLP/HTTP protobuf;
                            a URL without a path gets /v1/traces, e.g. http://otel-collector:4318).
                            Batched off the request path; a slow or absent collector costs dropped
                            spans (nodemesh_agent_spans_dropped_total), never traffic. Without it no
                            spans are made and trace headers pass through untouched
  --trace-sampling PERCENT  share of requests sampled where their trace starts, 0 to 100 (default:
                            ${DEFAULT_SAMPLING_PERCENT}); a TrafficPolicy's tracing.randomSamplingPercentage overrides it
                            for its Service, and a caller's traceparent that says sampled is always
                            sampled (docs/observability.md#traces)
  --http-headers-timeout-ms MS
                            time a client has to send a complete HTTP request head (default: 10000)
  --log-level LEVEL         trace, debug, info, warn, error (default: info)
  -h, --help                show this help

Limits (against floods; docs/operations.md):
  --max-connections-per-pod N
                            connections one pod may hold open on each of its listeners (outbound,
                            inbound, tunnel), agent-wide; more are reset (default: ${DEFAULT_FLOOD_LIMITS.podConnections}).
                            Of the tunnel port's, ${DEFAULT_FLOOD_LIMITS.podHandshakes} may be in their handshake at once,
                            each for --connect-timeout-ms at most
  --http2-max-streams N     concurrent streams per HTTP/2 client connection (default: ${DEFAULT_FLOOD_LIMITS.http2Streams}). A
                            connection whose client resets most streams at once is closed (rapid
                            reset: over half of ${PREMATURE_RESET_MIN_STREAMS} or more, each within ${PREMATURE_RESET_WINDOW_MS / 1000} s of opening)
  Fixed: HTTP request heads 16 KB (431); HTTP/2 header lists 16 KB and 128 fields, session
  memory 10 MB; CONTINUATION floods end their connection (nghttp2), as do SETTINGS and PING
  frames past ${HTTP2_CONTROL_FRAMES_PER_S} a second; request bodies are streamed, only their first 64 KB kept for a
  retry (TrafficPolicy retries.maxRetryBodyBytes); enrollment socket: bodies 64 KB, ${ENROLLMENT_LIMITS.connectionsPerCaller} connections
  per pod, requests whole within ${ENROLLMENT_LIMITS.requestTimeoutMs / 1000} s; each data-plane worker's heap 256 MB.
`;

function workerCount(value: string): WorkerCount {
  if (value === "auto") return { min: 1, max: defaultWorkerCount() };
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--workers must be a positive integer or auto, got "${value}"`);
  return { min: n, max: n };
}

function positiveInt(name: string, value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer, got "${value}"`);
  return n;
}

function nonNegativeInt(name: string, value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new Error(`--${name} must be 0 or a positive integer, got "${value}"`);
  return n;
}

function onOff(name: string, value: string): boolean {
  if (value !== "on" && value !== "off") throw new Error(`--${name} must be on or off, got "${value}"`);
  return value === "on";
}

function percent(name: string, value: string): number {
  const n = Number(value);
  if (value.trim() === "" || !Number.isFinite(n) || n < 0 || n > 100) {
    throw new Error(`--${name} must be a percentage from 0 to 100, got "${value}"`);
  }
  return n;
}

/** --otlp-endpoint: checked at start, so a typo fails the start instead of every export. */
function otlpEndpoint(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  try {
    tracesUrl(value);
  } catch (err) {
    throw new Error(`--otlp-endpoint: ${(err as Error).message.replace(/^the OTLP endpoint /, "")}`);
  }
  return value;
}

/** The tunnel key file: hex, at least 128 bits; read once at start. */
function readTunnelKey(file: string): string {
  const key = readFileSync(file, "utf8").trim().toLowerCase();
  if (!/^[0-9a-f]{32,128}$/.test(key) || key.length % 2 !== 0) {
    throw new Error(`--tunnel-key-file ${file}: expected 32 to 128 hex characters (e.g. openssl rand -hex 32)`);
  }
  return key;
}

export async function runAgent(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      "node-name": { type: "string" },
      "enrollment-socket": { type: "string", default: DEFAULT_ENROLLMENT_SOCKET },
      interception: { type: "string", default: "iptables" },
      "state-dir": { type: "string", default: "/var/lib/nodemesh" },
      services: { type: "string" },
      controller: { type: "string" },
      "controller-token-file": { type: "string" },
      "controller-ca-file": { type: "string" },
      "insecure-controller": { type: "boolean", default: false },
      "underlay-ip": { type: "string" },
      "tunnel-key-file": { type: "string" },
      "report-interval-s": { type: "string", default: "5" },
      "admin-address": { type: "string", default: "0.0.0.0" },
      "admin-port": { type: "string", default: String(ADMIN_PORT) },
      workers: { type: "string", default: "auto" },
      "connect-timeout-ms": { type: "string", default: "1000" },
      "drain-timeout-s": { type: "string", default: "30" },
      "hold-listeners-s": { type: "string", default: "30" },
      "detect-timeout-ms": { type: "string", default: "100" },
      "http-headers-timeout-ms": { type: "string", default: "10000" },
      "max-connections-per-pod": { type: "string", default: String(DEFAULT_FLOOD_LIMITS.podConnections) },
      "http2-max-streams": { type: "string", default: String(DEFAULT_FLOOD_LIMITS.http2Streams) },
      "access-log": { type: "string", default: "none" },
      "access-log-file": { type: "string" },
      "request-metrics": { type: "string", default: "on" },
      "otlp-endpoint": { type: "string" },
      "trace-sampling": { type: "string", default: String(DEFAULT_SAMPLING_PERCENT) },
      "log-level": { type: "string", default: "info" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (values.services && values.controller) throw new Error("--services and --controller exclude each other");
  if (values.controller && !/^[^:\s]+:\d+$/.test(values.controller)) {
    throw new Error(`--controller must be HOST:PORT, got "${values.controller}"`);
  }
  const caFile = values["controller-ca-file"];
  if (caFile && !values.controller) throw new Error("--controller-ca-file needs --controller");
  const security = values.controller
    ? channelSecurity(values.controller, caFile, values["insecure-controller"])
    : undefined;
  if (security?.tls) readCaFile(security.caFile); // a wrong path or file fails the start, not every attempt
  const tokenFile = values["controller-token-file"];
  const token = tokenFile ? readFileSync(tokenFile, "utf8").trim() : process.env.NODEMESH_BOOTSTRAP_TOKEN;
  const interception = values.interception;
  if (interception !== "iptables" && interception !== "ebpf") {
    throw new Error(`--interception must be iptables or ebpf, got "${interception}"`);
  }
  const nodeName = values["node-name"] ?? process.env.NODE_NAME ?? hostname();
  const agent = new Agent({
    nodeName,
    enrollmentSocket: values["enrollment-socket"],
    interception,
    stateDir: values["state-dir"],
    holdListenersS: nonNegativeInt("hold-listeners-s", values["hold-listeners-s"]),
    servicesFile: values.services,
    controller:
      values.controller && security
        ? {
            address: values.controller,
            security,
            ...(token ? { token } : {}),
            ...(values["underlay-ip"] ? { underlayIp: values["underlay-ip"] } : {}),
            reportIntervalMs: positiveInt("report-interval-s", values["report-interval-s"]) * 1000,
          }
        : undefined,
    adminAddress: values["admin-address"],
    adminPort: positiveInt("admin-port", values["admin-port"]),
    workers: workerCount(values.workers),
    dataplane: {
      connectTimeoutMs: positiveInt("connect-timeout-ms", values["connect-timeout-ms"]),
      detectTimeoutMs: positiveInt("detect-timeout-ms", values["detect-timeout-ms"]),
      headersTimeoutMs: positiveInt("http-headers-timeout-ms", values["http-headers-timeout-ms"]),
      accessLog: { scope: values["access-log"], file: values["access-log-file"] },
      requestMetrics: onOff("request-metrics", values["request-metrics"]),
      tunnelKey: values["tunnel-key-file"] ? readTunnelKey(values["tunnel-key-file"]) : undefined,
      drainMs: positiveInt("drain-timeout-s", values["drain-timeout-s"]) * 1000,
      limits: {
        ...DEFAULT_FLOOD_LIMITS,
        podConnections: positiveInt("max-connections-per-pod", values["max-connections-per-pod"]),
        http2Streams: positiveInt("http2-max-streams", values["http2-max-streams"]),
      },
      tracing: {
        samplingPercent: percent("trace-sampling", values["trace-sampling"]),
        otlpEndpoint: otlpEndpoint(values["otlp-endpoint"]),
        node: nodeName,
        version: packageJson.version,
      },
    },
    logLevel: values["log-level"],
  });
  logExits(agent.log);
  await agent.start();
  process.on("SIGHUP", () => agent.reloadServices());
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    process.once("SIGTERM", resolve);
    process.once("SIGINT", resolve);
  });
  agent.log.info({ signal }, "agent stopping");
  await agent.stop();
  return 0;
}

/**
 * Every way out of the agent process leaves a line saying why: the agent once exited silently
 * when a data-plane worker failed. An uncaught exception on the control thread is fatal (exit 70,
 * EX_SOFTWARE); a data-plane worker's is not (control/workers.ts replaces the worker).
 */
function logExits(log: Logger): void {
  process.on("uncaughtException", (err, origin) => {
    log.fatal({ err, origin }, "agent failed");
    process.exit(70);
  });
  // The agent's log is synchronous (agent.ts), so this line is out before the process is.
  process.once("exit", (code) => log.info({ code }, "agent exited"));
}
