// The router: a request's path and method become a Route, as a pure function of the URL and the
// KINDS registry. No I/O here, so every path shape is testable without a server.

import { KINDS, type KindInfo } from "../../api/resources.ts";
import { RestError } from "./errors.ts";

export type Verb = "get" | "list" | "watch" | "create" | "update" | "patch" | "delete";

/** Paths outside the resource API. */
export type SystemPath = "healthz" | "readyz" | "metrics" | "openapi";

export interface ResourcePath {
  group: string;
  version: string;
  plural: string;
  /** Absent on cluster-wide URLs. */
  namespace?: string;
  /** Absent on collection URLs. */
  name?: string;
}

export type ParsedPath =
  | { type: "system"; path: SystemPath }
  | { type: "resource"; path: ResourcePath }
  | { type: "unknown" };

export interface ResourceRoute extends ResourcePath {
  kind: KindInfo;
  verb: Verb;
}

const SYSTEM_PATHS: Readonly<Record<string, SystemPath>> = {
  "/healthz": "healthz",
  "/readyz": "readyz",
  "/metrics": "metrics",
  "/openapi/v3": "openapi",
};

/** `/apis/{group}/{version}[/namespaces/{ns}]/{plural}[/{name}]`, or a system path. */
export function parsePath(pathname: string): ParsedPath {
  const system = SYSTEM_PATHS[pathname];
  if (system) return { type: "system", path: system };
  let parts: string[];
  try {
    parts = pathname.split("/").slice(1).map(decodeURIComponent);
  } catch {
    return { type: "unknown" }; // malformed percent-encoding
  }
  if (parts[0] !== "apis" || parts.length < 4 || parts.some((p) => p === "")) return { type: "unknown" };
  const [, group, version, ...rest] = parts as [string, string, string, ...string[]];
  if (rest[0] === "namespaces" && (rest.length === 3 || rest.length === 4)) {
    return { type: "resource", path: { group, version, namespace: rest[1], plural: rest[2]!, name: rest[3] } };
  }
  if (rest.length === 1 || rest.length === 2) {
    return { type: "resource", path: { group, version, plural: rest[0]!, name: rest[1] } };
  }
  return { type: "unknown" };
}

/** Resolves the kind and the verb; throws NotFound or MethodNotAllowed. */
export function resolveResourceRoute(path: ResourcePath, method: string, watch: boolean): ResourceRoute {
  const kind = KINDS.find((k) => k.group === path.group && k.version === path.version && k.plural === path.plural);
  // A namespaced kind has items only under a namespace; a cluster-scoped kind never has one.
  const shapeFits =
    kind && (kind.namespaced ? path.name === undefined || path.namespace !== undefined : path.namespace === undefined);
  if (!kind || !shapeFits) throw new RestError("NotFound", "the server could not find the requested resource");
  const verb = verbFor(kind, path, method, watch);
  return { ...path, kind, verb };
}

function verbFor(kind: KindInfo, path: ResourcePath, method: string, watch: boolean): Verb {
  if (path.name !== undefined) {
    if (watch) throw new RestError("BadRequest", "watch is supported on collections only");
    const verbs: Record<string, Verb> = { GET: "get", PUT: "update", PATCH: "patch", DELETE: "delete" };
    return verbs[method] ?? methodNotAllowed(method, Object.keys(verbs));
  }
  if (method === "GET") return watch ? "watch" : "list";
  // Creating needs a namespace: the all-namespaces list of a namespaced kind is read-only.
  const canCreate = !kind.namespaced || path.namespace !== undefined;
  if (method === "POST" && canCreate) return "create";
  return methodNotAllowed(method, canCreate ? ["GET", "POST"] : ["GET"]);
}

function methodNotAllowed(method: string, allowed: string[]): never {
  throw new RestError("MethodNotAllowed", `method ${method} is not allowed here`, {}, { allow: allowed.join(", ") });
}
