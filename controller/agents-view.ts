// GET /apis/nodemesh.io/v1alpha1/agents: what the controller knows of each node's agent, with the
// controller's own config version beside the one each agent applied.
//
// `?peers=summary` leaves out each node's probes of the others but their summary: every agent
// probes every node, so the whole list grows as nodes² (1000 nodes: 71 MB against 6 MB, and 1.7 s
// of the controller's CPU against 0.13, test/bench/control-plane.ts). `?peers=all`, the default,
// lists every probe.

import type { AgentStatus } from "./config/agent-registry.ts";
import { RestError } from "./rest/errors.ts";
import type { View } from "./rest/server.ts";

export interface AgentsSource {
  agents(peers: "all" | "summary"): AgentStatus[];
  configVersion(): string | undefined;
}

export function agentsView(source: AgentsSource): View {
  return {
    kind: "Agent",
    items: (query) => {
      const version = source.configVersion() ?? "";
      return source.agents(peersParameter(query)).map((a) => ({ ...a, currentVersion: version }));
    },
  };
}

/** `?peers=`: "all" (the default) or "summary"; anything else is a 400 naming the parameter. */
function peersParameter(query: URLSearchParams): "all" | "summary" {
  const values = query.getAll("peers");
  if (values.length === 0) return "all";
  if (values.length === 1 && (values[0] === "all" || values[0] === "summary")) return values[0];
  throw new RestError("BadRequest", `peers: "all" or "summary" (got ${JSON.stringify(values.join(","))})`);
}
