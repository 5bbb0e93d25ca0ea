// GET /apis/nodemesh.io/v1alpha1/agents: what the controller knows of each node's agent, with the
// controller's own config version beside the one each agent applied.
//
// `?peers=summary` leaves out each node's probes of the others but their summary: every agent
// probes every node, so the whole list grows as nodes² (1000 nodes: 71 MB against 6 MB, and 1.7 s
// of the controller's CPU against 0.13, test/bench/control-plane.ts). `?peers=matrix`, what the
// dashboard and the CLI's tables ask, lists them only in a mesh small enough to draw them as a
// matrix (MATRIX_MAX_NODES), so the controller alone decides that. `?pods=count` leaves out
// each node's pods but their number (`podCount`), most of what the summaries' list still carries.
// `all`, the default of both, lists everything.

import type { AgentStatus, AgentsDetail } from "./config/agent-registry.ts";
import { RestError } from "./rest/errors.ts";
import type { View } from "./rest/server.ts";

export interface AgentsSource {
  agents(detail: AgentsDetail): AgentStatus[];
  configVersion(): string | undefined;
}

export function agentsView(source: AgentsSource): View {
  return {
    kind: "Agent",
    items: (query) => {
      const version = source.configVersion() ?? "";
      const detail = {
        peers: oneOf(query, "peers", ["all", "summary", "matrix"] as const),
        pods: oneOf(query, "pods", ["all", "count"] as const),
      };
      return source.agents(detail).map((a) => ({ ...a, currentVersion: version }));
    },
  };
}

/** A parameter's value: one of `values`, the first when absent; anything else is a 400 naming it. */
function oneOf<const T extends string>(query: URLSearchParams, name: string, values: readonly [T, ...T[]]): T {
  const given = query.getAll(name);
  if (given.length === 0) return values[0];
  const value = given[0] as T;
  if (given.length === 1 && values.includes(value)) return value;
  const expected = values.map((v) => `"${v}"`).join(" or ");
  throw new RestError("BadRequest", `${name}: ${expected} (got ${JSON.stringify(given.join(","))})`);
}
