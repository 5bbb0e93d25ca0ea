// An OTLP/HTTP trace receiver for the end-to-end tests, run inside a test namespace:
//
//   world.spawn(place, process.execPath, [OTLP_SINK, "--port", "4318", "--delay-ms", "0"])
//
// It decodes every `POST /v1/traces` body with the official protos (api/otlp.ts) and prints each
// span as one line, `SPAN {json}`, with its ids in hex and its attributes and its resource's as
// plain objects. With --delay-ms it answers that late (a slow collector); with --discard it
// answers at once without decoding (a benchmark's cheap sink). Prints `listening` once it listens.

import http from "node:http";
import { parseArgs } from "node:util";
import {
  ExportTraceServiceRequest,
  ExportTraceServiceResponse,
  OTLP_PROTOBUF,
  OTLP_TRACES_PATH,
} from "../../../api/otlp.ts";

export interface SinkSpan {
  traceId: string;
  spanId: string;
  parentSpanId: string;
  traceState: string;
  name: string;
  kind: number;
  startNs: string;
  endNs: string;
  attributes: Record<string, string | number | boolean>;
  events: { name: string; attributes: Record<string, string | number | boolean> }[];
  status: number;
  resource: Record<string, string | number | boolean>;
}

interface KeyValue {
  key: string;
  value: { stringValue?: string; intValue?: string; boolValue?: boolean; doubleValue?: number };
}

function plain(attributes: KeyValue[] | undefined): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = {};
  for (const { key, value } of attributes ?? []) {
    out[key] =
      value.stringValue ??
      (value.intValue !== undefined ? Number(value.intValue) : undefined) ??
      value.boolValue ??
      value.doubleValue ??
      "";
  }
  return out;
}

const hex = (b: string | undefined) => Buffer.from(b ?? "", "base64").toString("hex");

const { values } = parseArgs({
  options: {
    port: { type: "string", default: "4318" },
    "delay-ms": { type: "string", default: "0" },
    discard: { type: "boolean", default: false },
  },
});
const delayMs = Number(values["delay-ms"]);

const server = http.createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on("data", (c: Buffer) => chunks.push(c));
  req.on("end", () => {
    if (req.method !== "POST" || req.url !== OTLP_TRACES_PATH || req.headers["content-type"] !== OTLP_PROTOBUF) {
      res.writeHead(404).end();
      return;
    }
    if (values.discard) {
      res.writeHead(200, { "content-type": OTLP_PROTOBUF }).end();
      return;
    }
    const body = ExportTraceServiceRequest.toObject(ExportTraceServiceRequest.decode(Buffer.concat(chunks)), {
      longs: String,
      bytes: String,
      enums: Number,
    }) as {
      resourceSpans?: {
        resource?: { attributes?: KeyValue[] };
        scopeSpans?: { spans?: Record<string, never>[] }[];
      }[];
    };
    const lines: string[] = [];
    for (const rs of body.resourceSpans ?? []) {
      const resource = plain(rs.resource?.attributes);
      for (const ss of rs.scopeSpans ?? []) {
        for (const s of ss.spans ?? []) {
          const span: SinkSpan = {
            traceId: hex(s.traceId),
            spanId: hex(s.spanId),
            parentSpanId: hex(s.parentSpanId),
            traceState: s.traceState ?? "",
            name: s.name,
            kind: s.kind,
            startNs: s.startTimeUnixNano,
            endNs: s.endTimeUnixNano,
            attributes: plain(s.attributes),
            events: ((s.events ?? []) as { name: string; attributes?: KeyValue[] }[]).map((e) => ({
              name: e.name,
              attributes: plain(e.attributes),
            })),
            status: (s.status as { code?: number } | undefined)?.code ?? 0,
            resource,
          };
          lines.push(`SPAN ${JSON.stringify(span)}\n`);
        }
      }
    }
    process.stdout.write(lines.join(""));
    const answer = () => {
      res.writeHead(200, { "content-type": OTLP_PROTOBUF });
      res.end(ExportTraceServiceResponse.encode(ExportTraceServiceResponse.create({})).finish());
    };
    if (delayMs > 0) setTimeout(answer, delayMs);
    else answer();
  });
});

server.listen(Number(values.port), "0.0.0.0", () => process.stdout.write("listening\n"));
process.on("SIGTERM", () => process.exit(0));
