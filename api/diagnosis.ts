// What `nodemesh check` and `nodemesh explain` exchange with the agent's admin port
// (`GET /debug/check?pod=NS/NAME`, `POST /debug/explain`): the contract between the CLI
// (controller/client/diagnose.ts) and the agent (agent/control/diagnose.ts), which never import
// each other.

export type Verdict = "ok" | "warning" | "error";

/** One line of `nodemesh check`: what was checked, the verdict, and how to fix it. */
export interface Finding {
  readonly verdict: Verdict;
  /** What was checked, e.g. "rules", "listeners", "enrolled", "agent", "controller", "objects". */
  readonly check: string;
  /** What it is about: "pod default/client", "node node-1", "HTTPRoute default/split". */
  readonly subject: string;
  readonly message: string;
  /** A command to run or the field to change; absent when there is nothing to fix. */
  readonly fix?: string;
}

/** The agent's answer to `GET /debug/check?pod=NS/NAME`. */
export interface AgentCheck {
  readonly node: string;
  /** The configuration in force and where it came from (as /readyz says). */
  readonly config: { readonly version: string; readonly source: string };
  /** Absent when the agent runs without a controller (--services FILE). */
  readonly controller?: { readonly address: string; readonly connected: boolean };
  readonly findings: readonly Finding[];
}

/** `POST /debug/explain`: a request as the pod would send it. */
export interface ExplainRequest {
  /** "namespace/name" of the enrolled pod the request leaves from. */
  readonly pod: string;
  readonly method: string;
  /** http://HOST[:PORT]/PATH?QUERY, HOST an IPv4 address (a Service VIP or any other). */
  readonly url: string;
  /** Lower-case names. */
  readonly headers: Readonly<Record<string, string>>;
}

/** One step of an explanation, in the order the data plane takes them. */
export interface ExplainStep {
  /** "interception", "service", "route", "backend", "policy", "endpoints". */
  readonly step: string;
  /** One line: what happens there. */
  readonly summary: string;
  /** More lines (each earlier rule and why it did not match, each weight, each endpoint). */
  readonly details?: readonly string[];
}

export interface Explanation {
  readonly node: string;
  readonly configVersion: string;
  readonly pod: string;
  readonly request: {
    readonly method: string;
    readonly url: string;
    readonly headers: Readonly<Record<string, string>>;
  };
  /** What becomes of the request: "service", "passthrough", "not intercepted", "refused". */
  readonly outcome: string;
  readonly steps: readonly ExplainStep[];
}
