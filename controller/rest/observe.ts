// The REST API's traces and alerts (api/traces.ts, api/alerts.ts): the controller's window of
// recent traces, and the alerts Alertmanager holds. Read-only; the server authorizes them as reads.

import type { IncomingMessage, ServerResponse } from "node:http";
import { sendJson } from "../../api/http-json.ts";
import { API_VERSION } from "../../api/resources.ts";
import { DEFAULT_TRACE_LIST_LIMIT, MAX_TRACE_LIST_LIMIT } from "../../api/traces.ts";
import { AlertmanagerError, type AlertsAnswer } from "../alerts/alertmanager.ts";
import type { TraceFilter, TraceWindow } from "../traces/trace-store.ts";
import { RestError } from "./errors.ts";

/** `/apis/nodemesh.io/v1alpha1/traces[/{traceId}]` */
export const TRACES_PATH = /^\/apis\/nodemesh\.io\/v1alpha1\/traces(?:\/([^/]*))?\/?$/;
export const ALERTS_PATH = /^\/apis\/nodemesh\.io\/v1alpha1\/alerts\/?$/;

export type TraceQueries = Pick<TraceWindow, "list" | "get">;
export interface AlertSource {
  alerts(): Promise<AlertsAnswer>;
}

function onlyGet(req: IncomingMessage, what: string): void {
  if (req.method !== "GET") throw new RestError("MethodNotAllowed", `${what} is read-only`, {}, { allow: "GET" });
}

export function serveTraces(
  req: IncomingMessage,
  res: ServerResponse,
  url: URL,
  traceId: string | undefined,
  traces: TraceQueries | undefined,
): void {
  if (!traces) throw new RestError("NotFound", "traces are not kept here");
  onlyGet(req, "traces");
  if (traceId) {
    if (!/^[0-9a-fA-F]{32}$/.test(traceId))
      throw new RestError("BadRequest", `a trace id is 32 hex digits, got "${traceId.slice(0, 64)}"`);
    const trace = traces.get(traceId);
    if (!trace) throw new RestError("NotFound", `trace ${traceId} is not in the window (never received, or forgotten)`);
    sendJson(res, 200, { apiVersion: API_VERSION, kind: "Trace", ...trace });
    return;
  }
  sendJson(res, 200, { apiVersion: API_VERSION, kind: "TraceList", items: traces.list(traceFilter(url.searchParams)) });
}

/** `?service=ns/name&errors=true&minDurationMs=100&sort=duration&limit=50`; anything unusable is a 400 naming it. */
export function traceFilter(q: URLSearchParams): TraceFilter {
  const filter: TraceFilter = { limit: DEFAULT_TRACE_LIST_LIMIT };
  const service = q.get("service");
  if (service !== null && service !== "") {
    if (!/^[^/]+\/[^/]+$/.test(service))
      throw new RestError("BadRequest", `service must be "namespace/name", got "${service.slice(0, 256)}"`);
    filter.service = service;
  }
  const errors = q.get("errors");
  if (errors !== null) {
    if (!["true", "false", "1", "0"].includes(errors))
      throw new RestError("BadRequest", `errors must be true or false, got "${errors.slice(0, 32)}"`);
    filter.errorsOnly = errors === "true" || errors === "1";
  }
  const min = q.get("minDurationMs");
  if (min !== null && min !== "") {
    const n = Number(min);
    if (!Number.isFinite(n) || n < 0)
      throw new RestError(
        "BadRequest",
        `minDurationMs must be a number of milliseconds ≥ 0, got "${min.slice(0, 32)}"`,
      );
    filter.minDurationMs = n;
  }
  const sort = q.get("sort");
  if (sort !== null) {
    if (sort !== "recent" && sort !== "duration")
      throw new RestError("BadRequest", `sort must be recent or duration, got "${sort.slice(0, 32)}"`);
    filter.sort = sort;
  }
  const limit = q.get("limit");
  if (limit !== null) {
    const n = Number(limit);
    if (!Number.isInteger(n) || n < 1 || n > MAX_TRACE_LIST_LIMIT)
      throw new RestError(
        "BadRequest",
        `limit must be an integer from 1 to ${MAX_TRACE_LIST_LIMIT}, got "${limit.slice(0, 32)}"`,
      );
    filter.limit = n;
  }
  return filter;
}

export async function serveAlerts(
  req: IncomingMessage,
  res: ServerResponse,
  source: AlertSource | undefined,
): Promise<void> {
  if (!source)
    throw new RestError("NotFound", "no Alertmanager is configured: start the controller with --alertmanager-url URL");
  onlyGet(req, "alerts");
  let answer: AlertsAnswer;
  try {
    answer = await source.alerts();
  } catch (err) {
    if (err instanceof AlertmanagerError) throw new RestError("ServiceUnavailable", err.message);
    throw err;
  }
  sendJson(res, 200, { apiVersion: API_VERSION, kind: "AlertList", ...answer });
}
