// OTLP, the OpenTelemetry protocol: the official proto definitions (api/otlp/, from
// open-telemetry/opentelemetry-proto v1.11.0, Apache-2.0) loaded with protobufjs. Agents export
// their spans in it, the controller receives it, and tests decode what they catch with it, so all
// three read the same schema as any OpenTelemetry collector.

import { fileURLToPath } from "node:url";
import protobuf from "protobufjs";

const PROTO_ROOT = fileURLToPath(new URL("./otlp/", import.meta.url));
const TRACE_SERVICE = "opentelemetry/proto/collector/trace/v1/trace_service.proto";

function loadOtlp(): protobuf.Root {
  const root = new protobuf.Root();
  // Imports in the official files are relative to the repository's top, as protoc's -I would be.
  root.resolvePath = (_origin, target) => (target.startsWith("/") ? target : PROTO_ROOT + target);
  root.loadSync(TRACE_SERVICE, { keepCase: false });
  root.resolveAll();
  return root;
}

const root = loadOtlp();

/** The body of an OTLP/HTTP `POST /v1/traces` (Content-Type: application/x-protobuf). */
export const ExportTraceServiceRequest = root.lookupType(
  "opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest",
);
/** The answer to it; `partialSuccess.rejectedSpans` counts what the receiver dropped. */
export const ExportTraceServiceResponse = root.lookupType(
  "opentelemetry.proto.collector.trace.v1.ExportTraceServiceResponse",
);

/** OTLP/HTTP's path for traces and its protobuf content type. */
export const OTLP_TRACES_PATH = "/v1/traces";
export const OTLP_PROTOBUF = "application/x-protobuf";
