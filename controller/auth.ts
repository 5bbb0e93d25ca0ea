// Bearer-token authentication for the controller's REST API, with two roles: `read` (get, list,
// watch) and `write` (everything). Tokens come from a file, one per line: `TOKEN ROLE NAME`, `#`
// starts a comment. Without a token file auth is off, which is only safe on loopback: the
// server refuses to listen anywhere else (`assertListenAllowed`).

import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { isIP } from "node:net";

export type Role = "read" | "write";

export interface Principal {
  name: string;
  role: Role;
}

export type AuthDecision =
  | { allowed: true; principal: Principal | undefined }
  | { allowed: false; reason: "Unauthorized" | "Forbidden"; message: string };

/** Tokens are kept as digests: a lookup then leaks no timing information about the token itself. */
function digest(token: string): string {
  return createHash("sha256").update(token).digest("hex");
}

export class TokenAuth {
  readonly #principals: ReadonlyMap<string, Principal>;

  private constructor(principals: Map<string, Principal>) {
    this.#principals = principals;
  }

  static async fromFile(path: string): Promise<TokenAuth> {
    return TokenAuth.parse(await readFile(path, "utf8"), path);
  }

  /** Parses a token file; every malformed line is an error naming `source:line`. */
  static parse(text: string, source = "tokens"): TokenAuth {
    const principals = new Map<string, Principal>();
    text.split("\n").forEach((raw, index) => {
      const line = raw.replace(/#.*/, "").trim();
      if (!line) return;
      const where = `${source}:${index + 1}`;
      const fields = line.split(/\s+/);
      const [token, role, name] = fields;
      if (fields.length !== 3 || !token || !name) throw new Error(`${where}: expected "TOKEN ROLE NAME"`);
      if (role !== "read" && role !== "write") throw new Error(`${where}: role must be read or write, not "${role}"`);
      const key = digest(token);
      if (principals.has(key)) throw new Error(`${where}: duplicate token`);
      principals.set(key, { name, role });
    });
    // An empty file would lock everyone out, or be mistaken for "auth off": both are mistakes.
    if (principals.size === 0) throw new Error(`${source}: no tokens`);
    return new TokenAuth(principals);
  }

  /** The principal of an `Authorization: Bearer …` header, if the token is known. */
  authenticate(authorization: string | undefined): Principal | undefined {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? "");
    return match ? this.#principals.get(digest(match[1]!)) : undefined;
  }

  authorize(authorization: string | undefined, needs: Role): AuthDecision {
    const principal = this.authenticate(authorization);
    if (!principal) {
      const message = authorization ? "the bearer token is not valid" : "a bearer token is required";
      return { allowed: false, reason: "Unauthorized", message };
    }
    if (needs === "write" && principal.role !== "write") {
      return { allowed: false, reason: "Forbidden", message: `${principal.name} has the read role and may not write` };
    }
    return { allowed: true, principal };
  }
}

/** Auth off (no token file) allows everything: the listen address then decides who can reach us. */
export function authorize(auth: TokenAuth | undefined, authorization: string | undefined, needs: Role): AuthDecision {
  return auth ? auth.authorize(authorization, needs) : { allowed: true, principal: undefined };
}

export function isLoopbackHost(host: string): boolean {
  if (host === "localhost") return true;
  const v4 = host.startsWith("::ffff:") ? host.slice("::ffff:".length) : host;
  if (isIP(v4) === 4) return v4.startsWith("127.");
  return isIP(host) === 6 && /^(0*:)*:?0*1$/.test(host); // ::1 in any spelling
}

/** Without tokens, anyone who can connect can write: only loopback is acceptable. */
export function assertListenAllowed(host: string, auth: TokenAuth | undefined): void {
  if (!auth && !isLoopbackHost(host)) {
    throw new Error(
      `refusing to serve the REST API on ${host} without authentication: configure a token file, or listen on 127.0.0.1`,
    );
  }
}

/**
 * The agents' gRPC stream: without a bootstrap token anyone who reaches it can pose as an agent of
 * a new node, so a reachable address needs a token or the operator's explicit `--insecure-agents`.
 */
export function assertAgentListenAllowed(host: string, hasToken: boolean, insecureAgents: boolean): void {
  if (!hasToken && !insecureAgents && !isLoopbackHost(host)) {
    throw new Error(
      `refusing to serve the agents' gRPC on ${host} without agent authentication: any process that reaches it ` +
        "could register nodes and pods. Give the controller and the agents a bootstrap token " +
        "(--agent-token-file FILE or $NODEMESH_BOOTSTRAP_TOKEN; agents: --controller-token-file), listen on " +
        "127.0.0.1 (--grpc-address), or pass --insecure-agents to accept unauthenticated agents on purpose",
    );
  }
}
