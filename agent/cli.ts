// `nodemesh agent`: starts the node agent.

import { hostname } from "node:os";
import { parseArgs } from "node:util";
import { ADMIN_PORT, DEFAULT_ENROLLMENT_SOCKET } from "../api/dataplane.ts";
import { Agent } from "./agent.ts";
import { defaultWorkerCount } from "./control/workers.ts";

const HELP = `Usage: nodemesh agent [options]

Runs the node agent: accepts pod enrollments on a unix socket, opens each enrolled pod's
listeners (15001 outbound, 15006 inbound, 15008 tunnel) inside the pod's network namespace and
forwards its TCP traffic. Run it in the node's network namespace, as root.

Options:
  --node-name NAME          this node's name (default: $NODE_NAME, else the hostname)
  --enrollment-socket PATH  unix socket for init containers (default: ${DEFAULT_ENROLLMENT_SOCKET})
  --state-dir DIR           where enrolled pods are recorded across restarts (default: /var/lib/nodemesh)
  --services FILE           static service table (JSON, see api/services.ts); SIGHUP re-reads it
  --admin-address ADDR      admin listener address (default: 0.0.0.0)
  --admin-port PORT         admin listener port: /healthz /readyz /metrics /debug/config (default: ${ADMIN_PORT})
  --workers N               data-plane worker threads (default: ${defaultWorkerCount()}, the core count up to 8)
  --connect-timeout-ms MS   budget of one upstream connect attempt before failing over (default: 1000)
  --log-level LEVEL         trace, debug, info, warn, error (default: info)
  -h, --help                show this help
`;

function positiveInt(name: string, value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer, got "${value}"`);
  return n;
}

export async function runAgent(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      "node-name": { type: "string" },
      "enrollment-socket": { type: "string", default: DEFAULT_ENROLLMENT_SOCKET },
      "state-dir": { type: "string", default: "/var/lib/nodemesh" },
      services: { type: "string" },
      "admin-address": { type: "string", default: "0.0.0.0" },
      "admin-port": { type: "string", default: String(ADMIN_PORT) },
      workers: { type: "string", default: String(defaultWorkerCount()) },
      "connect-timeout-ms": { type: "string", default: "1000" },
      "log-level": { type: "string", default: "info" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const agent = new Agent({
    nodeName: values["node-name"] ?? process.env.NODE_NAME ?? hostname(),
    enrollmentSocket: values["enrollment-socket"],
    stateDir: values["state-dir"],
    servicesFile: values.services,
    adminAddress: values["admin-address"],
    adminPort: positiveInt("admin-port", values["admin-port"]),
    workers: positiveInt("workers", values.workers),
    connectTimeoutMs: positiveInt("connect-timeout-ms", values["connect-timeout-ms"]),
    logLevel: values["log-level"],
  });
  await agent.start();
  process.on("SIGHUP", () => agent.reloadServices());
  await new Promise<void>((resolve) => {
    process.once("SIGTERM", resolve);
    process.once("SIGINT", resolve);
  });
  await agent.stop();
  return 0;
}
