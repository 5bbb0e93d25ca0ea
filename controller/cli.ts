// `nodemesh controller`: the standalone controller (embedded defaults: file store, no Kubernetes).

import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { CONTROLLER_GRPC_PORT } from "../api/agent-service.ts";
import { DEFAULT_MAX_NODES } from "./config/agent-server.ts";
import { Controller } from "./controller.ts";
import { DEFAULT_REST_PORT } from "./rest/server.ts";

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
  --agent-token-file FILE bootstrap token agents must present (default: $NODEMESH_BOOTSTRAP_TOKEN)
  --insecure-agents       accept agents without a token on a non-loopback --grpc-address: anyone who
                          reaches the port can then register nodes (tests and demos only)
  --max-nodes N           most node names bound at once; Hellos from further new nodes are refused
                          (default: ${DEFAULT_MAX_NODES}). Each node name is bound to the node secret of
                          the agent that first claimed it: \`nodemesh nodes release NODE\` frees it
  --log-level LEVEL       trace, debug, info, warn, error (default: info)
  -h, --help              show this help
`;

function port(name: string, value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new Error(`--${name} must be a port number, got "${value}"`);
  return n;
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
      "agent-token-file": { type: "string" },
      "insecure-agents": { type: "boolean", default: false },
      "max-nodes": { type: "string", default: String(DEFAULT_MAX_NODES) },
      "log-level": { type: "string", default: "info" },
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
    ...(values.tokens ? { tokensFile: values.tokens } : {}),
    ...(agentToken ? { agentToken } : {}),
    insecureAgents: values["insecure-agents"],
    maxNodes,
    logLevel: values["log-level"],
  });
  await new Promise<void>((resolve) => {
    process.once("SIGTERM", resolve);
    process.once("SIGINT", resolve);
  });
  await controller.stop();
  return 0;
}
