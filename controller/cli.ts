// `nodemesh controller`: the standalone controller (embedded defaults: file store, no Kubernetes).

import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { CONTROLLER_GRPC_PORT } from "../api/agent-service.ts";
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
  --grpc-address ADDR     AgentService address (default: 0.0.0.0)
  --grpc-port PORT        AgentService port (default: ${CONTROLLER_GRPC_PORT})
  --agent-token-file FILE bootstrap token agents must present (default: $NODEMESH_BOOTSTRAP_TOKEN; none: open)
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
      "log-level": { type: "string", default: "info" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
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
    logLevel: values["log-level"],
  });
  await new Promise<void>((resolve) => {
    process.once("SIGTERM", resolve);
    process.once("SIGINT", resolve);
  });
  await controller.stop();
  return 0;
}
