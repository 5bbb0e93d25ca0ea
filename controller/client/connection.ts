// Where the CLI finds the controller's REST API, and how it talks to it.
//
// The address comes from --server, else $NODEMESH_SERVER, else the current context of the context
// file (kubeconfig-style, ~/.config/nodemesh/config), else the loopback default. The token comes
// from --token, else $NODEMESH_TOKEN, else the context, and the context's token only goes to the
// context's own server: a token is never sent to an address it was not written down for.

import { existsSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { fieldErrors, fieldPath } from "../../api/field-path.ts";

export const DEFAULT_SERVER = "http://127.0.0.1:8080";

/** A failure the CLI reports as `nodemesh <command>: message` and exit code 1. */
export class CliError extends Error {}

export interface Client {
  server: string;
  token: string | undefined;
  /** Where `server` came from, for messages: "--server", "$NODEMESH_SERVER", a context, "the default". */
  serverFrom: string;
  /** The context file's path (whether or not it exists), for messages. */
  contextFile: string;
}

/** An http:// or https:// URL that fetch accepts (a port in range, no spaces). */
function isHttpUrl(text: string): boolean {
  if (!URL.canParse(text)) return false;
  const { protocol, hostname } = new URL(text);
  return (protocol === "http:" || protocol === "https:") && hostname !== "";
}

const ContextFile = z.strictObject({
  "current-context": z.string().optional(),
  contexts: z.record(
    z.string(),
    z.strictObject({
      server: z.string().refine(isHttpUrl, "must be an http:// or https:// URL"),
      token: z.string().min(1).optional(),
    }),
  ),
});
type ContextFile = z.infer<typeof ContextFile>;

export function contextFilePath(env: NodeJS.ProcessEnv = process.env): string {
  if (env.NODEMESH_CONFIG) return env.NODEMESH_CONFIG;
  return join(env.XDG_CONFIG_HOME || join(homedir(), ".config"), "nodemesh", "config");
}

function readContextFile(path: string): ContextFile | undefined {
  if (!existsSync(path)) return undefined;
  let data: unknown;
  try {
    data = parseYaml(readFileSync(path, "utf8"));
  } catch (err) {
    throw new CliError(`${path}: ${(err as Error).message}`);
  }
  const parsed = ContextFile.safeParse(data ?? {});
  if (parsed.success) return parsed.data;
  const problems = fieldErrors(ContextFile, parsed.error.issues).map(
    (e) => `${fieldPath(e.path) || "(top)"}: ${e.message}`,
  );
  throw new CliError(`${path} is invalid: ${problems.join("; ")}`);
}

export interface ConnectionFlags {
  server?: string;
  token?: string;
  context?: string;
}

/** Flags, environment and context file → the controller to talk to. */
export function resolveClient(flags: ConnectionFlags, env: NodeJS.ProcessEnv = process.env): Client {
  const contextFile = contextFilePath(env);
  const file = readContextFile(contextFile);
  const contextName = flags.context ?? file?.["current-context"];
  const context = contextName === undefined ? undefined : file?.contexts[contextName];
  if (contextName !== undefined && !context) {
    const known = Object.keys(file?.contexts ?? {});
    throw new CliError(
      file
        ? `context "${contextName}" is not in ${contextFile} (it has: ${known.join(", ") || "none"})`
        : `--context ${contextName}: there is no context file at ${contextFile}`,
    );
  }
  const token = flags.token ?? env.NODEMESH_TOKEN;
  if (flags.server) return checked({ server: flags.server, token, serverFrom: "--server", contextFile });
  if (env.NODEMESH_SERVER) {
    return checked({ server: env.NODEMESH_SERVER, token, serverFrom: "$NODEMESH_SERVER", contextFile });
  }
  if (context) {
    const serverFrom = `context "${contextName}" of ${contextFile}`;
    return checked({ server: context.server, token: token ?? context.token, serverFrom, contextFile });
  }
  return { server: DEFAULT_SERVER, token, serverFrom: "the default", contextFile };
}

function checked(c: Client): Client {
  if (!isHttpUrl(c.server)) {
    throw new CliError(`the server "${c.server}" (${c.serverFrom}) is not an http:// or https:// URL`);
  }
  return { ...c, server: c.server.replace(/\/$/, "") };
}

/** What to say when the controller does not answer at all: why that is likely, and what to do. */
export function unreachableMessage(c: Client, cause: string): string {
  return [
    `cannot reach the controller at ${c.server} (${c.serverFrom}): ${cause}`,
    "  Without --tokens the controller's REST API listens on 127.0.0.1 only, so only its own host reaches it.",
    "  From elsewhere, start it with --address 0.0.0.0 --tokens FILE, then give the CLI its address and a token:",
    `  --server URL --token TOKEN, or $NODEMESH_SERVER and $NODEMESH_TOKEN, or a context in ${c.contextFile}.`,
  ].join("\n");
}

/** The reason fetch gives for a failed connection: "connect ECONNREFUSED 127.0.0.1:8080". */
function connectFailure(err: unknown): string {
  const cause = (err as Error).cause as (Error & { code?: string; errors?: Error[] }) | undefined;
  if (!cause) return (err as Error).message;
  // Several addresses (localhost: ::1 and 127.0.0.1) fail together as an AggregateError without a message.
  const first = cause.errors?.[0];
  return cause.message || first?.message || cause.code || String(cause);
}

/** A Kubernetes Status, as the REST API answers any failure. */
interface Status {
  message?: string;
  details?: { name?: string; kind?: string; causes?: Array<{ field?: string; message?: string }> };
}

/** A refused request: the HTTP status, and the server's message with one line per bad field. */
export class ApiError extends CliError {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

/** The server's Status as lines; a 422's (or 409's) summary repeats every cause, so it is shown once, below its head. */
function describeStatus(status: number, data: Status | undefined, text: string): string {
  const causes = data?.details?.causes ?? [];
  const { kind, name } = data?.details ?? {};
  if (causes.length === 0 || !kind) return `${status}: ${data?.message ?? text}`;
  const head = `${status}: ${kind}${name ? ` "${name}"` : ""} ${status === 409 ? "conflicts" : "is invalid"}:`;
  return [head, ...causes.map((cause) => `  ${cause.field ?? ""}: ${cause.message ?? ""}`)].join("\n");
}

export async function call(c: Client, method: string, path: string, body?: unknown): Promise<unknown> {
  let res: Response;
  try {
    res = await fetch(`${c.server}${path}`, {
      method,
      headers: {
        ...(body !== undefined ? { "content-type": "application/json" } : {}),
        ...(c.token ? { authorization: `Bearer ${c.token}` } : {}),
      },
      body: body !== undefined ? JSON.stringify(body) : undefined,
    });
  } catch (err) {
    throw new CliError(unreachableMessage(c, connectFailure(err)));
  }
  const text = await res.text();
  let data: unknown;
  try {
    data = text ? JSON.parse(text) : undefined;
  } catch {
    data = undefined;
  }
  if (!res.ok) throw new ApiError(res.status, describeStatus(res.status, data as Status | undefined, text));
  return data;
}
