// The agent ↔ controller contract across versions: a message added to the stream must be one an
// older peer can pass over, never one it misreads.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ServiceDefinition } from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { describe, expect, it } from "vitest";
import {
  AGENT_SERVICE_NAME,
  type AgentMessage,
  agentServiceDefinition,
  PROTO_LOADER_OPTIONS,
  type WirePod,
} from "./agent-service.ts";

const PROTO = readFileSync(new URL("./agent.proto", import.meta.url), "utf8");

/** The contract as a controller built before `line` was added reads it. */
function contractWithout(line: RegExp): ServiceDefinition {
  const older = PROTO.replace(line, "");
  expect(older).not.toBe(PROTO);
  const dir = mkdtempSync(join(tmpdir(), "nodemesh-proto-"));
  try {
    writeFileSync(join(dir, "agent.proto"), older);
    const definition = loadSync(join(dir, "agent.proto"), PROTO_LOADER_OPTIONS);
    return definition[AGENT_SERVICE_NAME] as unknown as ServiceDefinition;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe("the agent's messages across versions", () => {
  const pod: WirePod = {
    name: "web-1",
    namespace: "shop",
    ip: "10.1.0.11",
    labels: { app: "web" },
    serviceAccount: "web",
  };
  const serialize = agentServiceDefinition.Connect.requestSerialize as (m: AgentMessage) => Buffer;

  it("a PodsDelta reads as a message of no kind to a controller that predates it (which ignores it)", () => {
    const bytes = serialize({ kind: "podsDelta", podsDelta: { upserted: [pod], removed: ["shop/web-2"] } });
    const older = contractWithout(/^\s*PodsDelta pods_delta = 7;\n/m);
    const read = older.Connect.requestDeserialize(bytes) as { kind?: string; podsChanged?: unknown };
    // Not a PodsChanged with an empty list (that would drop every pod of the node).
    expect(read.kind).toBeUndefined();
    expect(read.podsChanged).toBeUndefined();
    expect(agentServiceDefinition.Connect.requestDeserialize(bytes)).toMatchObject({
      kind: "podsDelta",
      podsDelta: { upserted: [pod], removed: ["shop/web-2"] },
    });
  });
});
