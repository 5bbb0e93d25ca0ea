// OTLP requests as two agents export them for one request through the mesh, encoded with the
// official protos (api/otlp.ts): frontend on node-1 calls `service` on node-2; the first attempt
// fails with 503 and is retried after a backoff. Per agent a SERVER span (the request as it
// arrived) and a CLIENT span per upstream attempt; node-2's SERVER spans are children of node-1's
// CLIENT spans. For the trace window's tests and the dashboard's page tests.

import { randomBytes } from "node:crypto";
import { ExportTraceServiceRequest } from "../../api/otlp.ts";

const SERVER = 2;
const CLIENT = 3;
const ERROR = 2;

export interface MeshTraceOptions {
  /** "namespace/name" (default shop/checkout). */
  service?: string;
  /** When the request began, ms since the epoch (default now). */
  startMs?: number;
  /** The retry fails too: the whole request answers 503. */
  fail?: boolean;
  /** Scales every duration (default 1: about 42 ms in all). */
  slow?: number;
}

export interface MeshTrace {
  traceId: string;
  /** One ExportTraceServiceRequest per agent: node-1's, then node-2's. */
  requests: Uint8Array[];
  spanCount: number;
}

type Attr = string | number | boolean;
const kv = (attrs: Record<string, Attr>) =>
  Object.entries(attrs).map(([key, v]) => ({
    key,
    value:
      typeof v === "string"
        ? { stringValue: v }
        : typeof v === "boolean"
          ? { boolValue: v }
          : Number.isInteger(v)
            ? { intValue: v }
            : { doubleValue: v },
  }));

export function meshTrace(opts: MeshTraceOptions = {}): MeshTrace {
  const service = opts.service ?? "shop/checkout";
  const [namespace, name] = service.split("/") as [string, string];
  const t0 = BigInt(Math.round((opts.startMs ?? Date.now()) * 1000)) * 1000n;
  const k = opts.slow ?? 1;
  const at = (ms: number) => String(t0 + BigInt(Math.round(ms * k * 1e6)));
  const traceId = randomBytes(16);
  const id = () => randomBytes(8);
  const finalStatus = opts.fail ? 503 : 200;

  const common = {
    "nodemesh.source.workload": "frontend",
    "nodemesh.destination.service": service,
    "nodemesh.destination.workload": name,
    "http.request.method": "GET",
    "url.path": `/api/${name}`,
    "server.address": `${name}.${namespace}`,
  };
  const span = (
    spanId: Buffer,
    parent: Buffer | undefined,
    kind: number,
    from: number,
    to: number,
    status: number,
    attrs: Record<string, Attr>,
    events: { name: string; at: number; attrs: Record<string, Attr> }[] = [],
  ) => ({
    traceId,
    spanId,
    ...(parent ? { parentSpanId: parent } : {}),
    name: `GET /api/${name}`,
    kind,
    startTimeUnixNano: at(from),
    endTimeUnixNano: at(to),
    attributes: kv({ ...common, "http.response.status_code": status, ...attrs }),
    events: events.map((e) => ({ name: e.name, timeUnixNano: at(e.at), attributes: kv(e.attrs) })),
    status: status >= 500 ? { code: ERROR, message: `upstream answered ${status}` } : {},
  });

  const aServer = id();
  const attempts = [id(), id()];
  const bServers = [id(), id()];
  const bClients = [id(), id()];
  const node1 = [
    span(
      aServer,
      undefined,
      SERVER,
      0,
      42,
      finalStatus,
      { "nodemesh.node": "node-1", "nodemesh.retries": 1, "nodemesh.route": `${namespace}/${name}-route` },
      [{ name: "nodemesh.backoff", at: 14, attrs: { "nodemesh.attempt": 1, "nodemesh.backoff.ms": 5 } }],
    ),
    span(attempts[0]!, aServer, CLIENT, 1, 13.5, 503, {
      "nodemesh.node": "node-1",
      "nodemesh.attempt": 1,
      "nodemesh.mtls": true,
      "network.peer.address": "10.0.2.10",
      "network.peer.port": 15006,
      "error.type": "503",
    }),
    span(attempts[1]!, aServer, CLIENT, 19, 41, finalStatus, {
      "nodemesh.node": "node-1",
      "nodemesh.attempt": 2,
      "nodemesh.mtls": true,
      "network.peer.address": "10.0.2.10",
      "network.peer.port": 15006,
    }),
  ];
  const node2 = [0, 1].flatMap((i) => {
    const from = i === 0 ? 2 : 20;
    const to = i === 0 ? 13 : 40;
    const status = i === 0 ? 503 : finalStatus;
    return [
      span(bServers[i]!, attempts[i]!, SERVER, from, to, status, { "nodemesh.node": "node-2", "nodemesh.mtls": true }),
      span(bClients[i]!, bServers[i]!, CLIENT, from + 0.5, to - 0.5, status, {
        "nodemesh.node": "node-2",
        "network.peer.address": "10.0.2.10",
        "network.peer.port": 8080,
      }),
    ];
  });
  const request = (node: string, spans: unknown[]) =>
    ExportTraceServiceRequest.encode(
      ExportTraceServiceRequest.fromObject({
        resourceSpans: [
          {
            resource: {
              attributes: kv({ "service.name": "nodemesh-agent", "service.instance.id": node, "k8s.node.name": node }),
            },
            scopeSpans: [{ scope: { name: "nodemesh" }, spans }],
          },
        ],
      }),
    ).finish();
  return {
    traceId: traceId.toString("hex"),
    requests: [request("node-1", node1), request("node-2", node2)],
    spanCount: node1.length + node2.length,
  };
}
