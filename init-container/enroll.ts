// The enrollment client (contract: api/enrollment.ts): HTTP/1.1 over the node agent's unix socket.
// The agent may be starting, restarting or not yet scheduled on a fresh node, so failures to reach
// it and 5xx answers are retried with a short backoff until a deadline; a 4xx is the agent's
// considered answer about this request and is final.
import type { OutgoingHttpHeaders } from "node:http";
import { setTimeout as sleep } from "node:timers/promises";
import type { EnrollmentReply, ErrorReply, InterceptionReply, PodEnrollment } from "../api/enrollment.ts";
import { http } from "../api/node-http.ts";
import { INIT_ERROR_CODES, InitError } from "./errors.ts";

export const DEFAULT_ENROLL_TIMEOUT_MS = 30_000;
/** Unenrolling is a courtesy to the agent: a pod leaving the mesh does not wait long for an absent one. */
export const DEFAULT_UNENROLL_TIMEOUT_MS = 2_000;

const FIRST_RETRY_DELAY_MS = 100;
const MAX_RETRY_DELAY_MS = 1_000;
/** One attempt never waits longer than this: a wedged connection is dropped and retried. */
const MAX_ATTEMPT_MS = 5_000;
/** Even the last attempt before the deadline gets this long to be answered. */
const MIN_ATTEMPT_MS = 100;
/** Replies are small JSON documents; anything bigger is not our agent. */
const MAX_REPLY_BYTES = 64 * 1024;

export interface AgentOptions {
  /** The agent's enrollment socket (DEFAULT_ENROLLMENT_SOCKET in api/dataplane.ts). */
  socketPath: string;
  /** Give up after this long (default 30 s). */
  timeoutMs?: number;
}

/** POST /v1/pods. The call must come from the pod's network namespace unless `pod.netnsPath` is set. */
export async function enroll(pod: PodEnrollment, options: AgentOptions): Promise<EnrollmentReply> {
  const what = `enroll pod ${pod.namespace}/${pod.name}`;
  const reply = await callAgent("POST", "/v1/pods", pod, options, what);
  try {
    return JSON.parse(reply.text) as EnrollmentReply;
  } catch {
    throw new InitError(INIT_ERROR_CODES.AGENT_REJECTED, `${what}: the agent's reply is not JSON: ${clip(reply.text)}`);
  }
}

/**
 * GET /v1/interception: the node's interception mode (nodemesh agent --interception). An agent
 * from before the question (404) uses iptables.
 */
export async function askInterception(options: AgentOptions): Promise<InterceptionReply["mode"]> {
  const what = "ask the node's interception mode";
  const reply = await callAgent("GET", "/v1/interception", undefined, options, what, [404]);
  if (reply.status === 404) return "iptables";
  let mode: unknown;
  try {
    mode = (JSON.parse(reply.text) as InterceptionReply).mode;
  } catch {}
  if (mode !== "iptables" && mode !== "ebpf") {
    throw new InitError(
      INIT_ERROR_CODES.AGENT_REJECTED,
      `${what}: the agent's reply is not a mode: ${clip(reply.text)}`,
    );
  }
  return mode;
}

/** DELETE /v1/pods/{namespace}/{name}. A pod the agent does not know (404) is already unenrolled. */
export async function unenroll(namespace: string, name: string, options: AgentOptions): Promise<void> {
  const path = `/v1/pods/${encodeURIComponent(namespace)}/${encodeURIComponent(name)}`;
  await callAgent("DELETE", path, undefined, options, `unenroll pod ${namespace}/${name}`, [404]);
}

interface Reply {
  status: number;
  text: string;
}

async function callAgent(
  method: string,
  path: string,
  body: unknown,
  { socketPath, timeoutMs = DEFAULT_ENROLL_TIMEOUT_MS }: AgentOptions,
  what: string,
  alsoFine: number[] = [],
): Promise<Reply> {
  const deadline = Date.now() + timeoutMs;
  let delay = FIRST_RETRY_DELAY_MS;
  for (let attempt = 1; ; attempt++) {
    const budget = Math.min(MAX_ATTEMPT_MS, Math.max(deadline - Date.now(), MIN_ATTEMPT_MS));
    let failure: string;
    try {
      const reply = await request(socketPath, method, path, body, budget);
      if (reply.status < 300 || alsoFine.includes(reply.status)) return reply;
      failure = describeError(reply);
      if (reply.status < 500) {
        throw new InitError(
          INIT_ERROR_CODES.AGENT_REJECTED,
          `the node agent at ${socketPath} refused to ${what}: ${failure}`,
        );
      }
    } catch (err) {
      if (err instanceof InitError) throw err;
      failure = (err as Error).message;
    }
    const remaining = deadline - Date.now();
    if (remaining <= 0) {
      const message =
        `could not ${what}: no successful answer from the node agent at ${socketPath} ` +
        `within ${timeoutMs / 1000} s (${attempt} attempts); last failure: ${failure}`;
      throw new InitError(INIT_ERROR_CODES.AGENT_UNREACHABLE, message);
    }
    await sleep(Math.min(delay, remaining));
    delay = Math.min(delay * 2, MAX_RETRY_DELAY_MS);
  }
}

function request(socketPath: string, method: string, path: string, body: unknown, timeoutMs: number): Promise<Reply> {
  const payload = body === undefined ? undefined : JSON.stringify(body);
  const headers: OutgoingHttpHeaders = payload
    ? { "content-type": "application/json", "content-length": Buffer.byteLength(payload) }
    : {};
  return new Promise((resolve, reject) => {
    // agent: false → one connection per attempt, closed afterwards, so nothing keeps the process alive.
    const req = http.request({ socketPath, method, path, headers, agent: false }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        text += chunk;
        if (text.length > MAX_REPLY_BYTES) req.destroy(new Error(`reply larger than ${MAX_REPLY_BYTES} bytes`));
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, text }));
      res.on("error", reject);
    });
    const timer = setTimeout(() => req.destroy(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    req.on("close", () => clearTimeout(timer));
    req.on("error", reject);
    req.end(payload);
  });
}

/** "HTTP 422 invalid: name must be a DNS label (field name)", from an ErrorReply when there is one. */
function describeError({ status, text }: Reply): string {
  try {
    const { error } = JSON.parse(text) as ErrorReply;
    if (typeof error?.message === "string") {
      return `HTTP ${status}${error.code ? ` ${error.code}` : ""}: ${error.message}${error.field ? ` (field ${error.field})` : ""}`;
    }
  } catch {}
  return `HTTP ${status}: ${clip(text) || "(empty body)"}`;
}

function clip(text: string): string {
  return text.length > 200 ? `${text.slice(0, 200)}…` : text.trim();
}
