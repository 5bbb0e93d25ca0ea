// A hostile agent for the end-to-end tests of the controller's trust boundary (issue 20, part 3),
// run inside a node's network namespace so that it reaches the controller as any process on a
// node could. It holds the bootstrap token (the worst case: one token shared by every agent) but
// not the real agents' node secrets:
//
//   world.exec(node, process.execPath, [ROGUE_AGENT, JSON.stringify({ address, token, mode: "hello", ... })])
//
// Modes:
//   hello   says Hello as `node` with its own random node secret (or `secret`), then PodsChanged with `pods`;
//           reports whether the controller accepted the stream (a Config came) or its status.
//   nodes   says Hello as `count` new nodes "<prefix>-<i>", one stream each; counts accepted and refused.
//   flood   as `node`, sends `reports` reports of `edges` edges each (every edge unique), one
//           stream per report, half-closed after it; counts the statuses the streams ended with
//           ("0": the controller read the report and closed the stream in turn).
// Prints one JSON line (RogueReport). Every wait is bounded.

import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import type { Report, WirePod } from "../../../api/agent-service.ts";
import type { EdgeSample } from "../../../api/service-graph.ts";
import { SimAgent } from "../../../controller/config/testing/sim-agent.ts";

export type RogueMode =
  | { mode: "hello"; node: string; pods: WirePod[] }
  | { mode: "nodes"; prefix: string; count: number }
  | { mode: "flood"; node: string; reports: number; edges: number };
/**
 * `caFile`: the controller's CA root, to connect over TLS (without it: plaintext). `secret`: the
 * node secret to present (default: a random one of its own). `certFile`, `keyFile`: a TLS client
 * certificate to present (a node certificate, stolen or stale).
 */
export type RogueArgs = {
  address: string;
  token?: string;
  caFile?: string;
  secret?: string;
  certFile?: string;
  keyFile?: string;
} & RogueMode;

export interface RogueReport {
  /** Streams the controller accepted (hello, nodes: it sent a Config; flood: status OK). */
  accepted: number;
  /** Streams refused or ended, by gRPC status code; with one sample of details per code. */
  refused: Record<string, number>;
  details: Record<string, string>;
}

const WAIT_MS = 8_000;

function edges(report: number, count: number): EdgeSample[] {
  return Array.from({ length: count }, (_, i) => ({
    sourceWorkload: `flood-${report}-${i}`,
    sourceNamespace: "default",
    destinationService: `svc-${i}.default`,
    destinationWorkload: `dst-${i}`,
    destinationNamespace: "default",
    protocol: "http",
    mtlsRequests: 0,
    requests: 1,
    errors: 0,
    bytesSent: 100,
    bytesReceived: 100,
    latencyBuckets: [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
  }));
}

async function main(): Promise<void> {
  const args = JSON.parse(process.argv[2] ?? "{}") as RogueArgs;
  const [host, port] = args.address.split(":") as [string, string];
  const out: RogueReport = { accepted: 0, refused: {}, details: {} };
  const ca = args.caFile ? readFileSync(args.caFile) : undefined;
  // Its own secret, as a process that never saw the real agent's state dir would have.
  const secret = args.secret ?? randomBytes(32).toString("base64url");
  const clientCert =
    args.certFile && args.keyFile
      ? { chainPem: readFileSync(args.certFile, "utf8"), keyPem: readFileSync(args.keyFile, "utf8") }
      : undefined;
  const open = (node: string) =>
    new SimAgent(Number(port), node, {
      host,
      secret,
      ...(args.token ? { token: args.token } : {}),
      ...(ca ? { ca } : {}),
      ...(clientCert ? { clientCert } : {}),
    });
  /** Waits for a Config (accepted) or the stream's end; records which. */
  const outcome = async (agent: SimAgent): Promise<void> => {
    await agent.until(() => agent.configs.length > 0 || agent.status !== undefined, WAIT_MS, "a Config or a status");
    if (agent.status && agent.configs.length === 0) {
      const code = String(agent.status.code);
      out.refused[code] = (out.refused[code] ?? 0) + 1;
      out.details[code] ??= agent.status.details;
    } else out.accepted++;
  };

  if (args.mode === "hello") {
    const agent = open(args.node);
    agent.send({ kind: "podsChanged", podsChanged: { pods: args.pods } });
    await outcome(agent);
    agent.close();
  } else if (args.mode === "nodes") {
    const agents = Array.from({ length: args.count }, (_, i) => open(`${args.prefix}-${i}`));
    await Promise.all(agents.map(outcome));
    for (const a of agents) a.close();
  } else {
    for (let r = 0; r < args.reports; r++) {
      const agent = open(args.node);
      agent.decide = () => "ignore"; // answers would be written after our half-close
      const report: Report = {
        health: { ready: true, detail: "" },
        pods: [],
        traffic: { connectionsOpened: 0, connectionsClosed: 0, bytesReceived: 0, bytesSent: 0 },
        peers: [],
        edges: edges(r, args.edges),
        intervalSeconds: 5,
      };
      agent.send({ kind: "report", report });
      agent.end();
      await agent.until(() => agent.status !== undefined, WAIT_MS, "the end of the stream");
      const { code, details } = agent.status!;
      if (code === 0) out.accepted++;
      else {
        out.refused[String(code)] = (out.refused[String(code)] ?? 0) + 1;
        out.details[String(code)] ??= details;
      }
      agent.close();
    }
  }
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`${(err as Error).stack}\n`);
    process.exit(1);
  },
);
