// Node certificates (issue 12, item 2: the bootstrap token "exchanged for a node certificate"):
// an agent that connected with the token gets one and, restarted without the token, still
// connects with it; node-1's certificate (and node secret) cannot speak for node-2; and once an
// operator releases node-1, its certificate no longer lets it in: it must bootstrap again.

import { X509Certificate } from "node:crypto";
import { cpSync, existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Node, World } from "../world/world.ts";
import { eventually } from "./eventually.ts";
import { Mesh } from "./mesh.ts";
import { httpFrom, metricSum, parseMetrics } from "./netns-client.ts";

interface AgentView {
  node: string;
  connected: boolean;
  connectedAt?: string;
}

describe("node certificates", () => {
  let world: World;
  let mesh: Mesh;
  let n1: Node;
  let n2: Node;

  const rest = async (path: string) => {
    const reply = await httpFrom(mesh.controller!.place.netnsPath, `http://127.0.0.1:8080${path}`);
    if (reply.status !== 200) throw new Error(`GET ${path}: ${reply.status} ${reply.body}`);
    return reply.body;
  };
  const refusals = async (reason: string) =>
    metricSum(parseMetrics(await rest("/metrics")), "nodemesh_controller_agent_streams_refused_total", { reason });
  const agent = async (node: string) =>
    (JSON.parse(await rest("/apis/nodemesh.io/v1alpha1/agents")).items as AgentView[]).find((a) => a.node === node);
  const certFile = (node: Node) => join(mesh.dir, node.name, "state", "node-cert.pem");

  beforeAll(async () => {
    world = await World.create({ nodes: 2 });
    mesh = new Mesh(world);
    [n1, n2] = world.nodes as [Node, Node];
    await mesh.startController();
    await Promise.all([mesh.startAgent(n1), mesh.startAgent(n2)]);
  }, 60_000);

  afterAll(async () => {
    await mesh?.destroy();
  });

  it("gets one after bootstrapping with the token, and connects with it alone after a restart", async () => {
    await eventually("node-1's node certificate", 15_000, () => (existsSync(certFile(n1)) ? true : undefined));
    const cert = new X509Certificate(readFileSync(certFile(n1)));
    expect(cert.subjectAltName).toBe("URI:spiffe://cluster.local/nodemesh/node/node-1");
    expect(cert.keyUsage ?? []).toBeDefined();
    expect(readFileSync(join(mesh.dir, n1.name, "state", "node-key.pem"), "utf8")).toContain("PRIVATE KEY");

    const before = (await agent("node-1"))!.connectedAt;
    await mesh.stopAgent(n1, "SIGTERM");
    const restarted = await mesh.startAgent(n1, { token: false });
    await eventually("node-1 connected without the token", 20_000, async () => {
      const a = await agent("node-1");
      return a?.connected && a.connectedAt !== before ? true : undefined;
    });
    expect(restarted.proc.lines.some((l) => l.includes('"credential":"node certificate"'))).toBe(true);
  }, 60_000);

  it("does not let node-1's certificate and secret speak for node-2", async () => {
    // node-1's state (certificate, key, node secret) copied to a process saying it is node-2.
    const stolen = join(mesh.dir, "stolen-state");
    cpSync(join(mesh.dir, n1.name, "state"), stolen, { recursive: true });
    const before = await refusals("node_certificate_mismatch");
    const impostor = mesh.spawnAgent(n2, "impostor", {
      token: false,
      nodeName: "node-2",
      stateDir: stolen,
      args: ["--admin-port", "15030", "--enrollment-socket", join(stolen, "agent.sock")],
    });
    await eventually("the impostor refused", 15_000, async () =>
      (await refusals("node_certificate_mismatch")) > before ? true : undefined,
    ).catch((e) => {
      console.log("IMPOSTOR", impostor.proc.lines.slice(-15).join("\n"));
      throw e;
    });
    await impostor.proc.stop("SIGTERM");
    expect((await agent("node-2"))?.connected).toBe(true); // the real node-2 was not replaced
  }, 60_000);

  it("refuses node-1's certificate once an operator released node-1; the token binds it again", async () => {
    const released = await mesh.cli(["nodes", "release", "node-1"]);
    expect(released.code, released.stderr).toBe(0);
    await eventually("node-1's certificate refused", 20_000, async () =>
      (await refusals("node_certificate_revoked")) > 0 ? true : undefined,
    );
    await new Promise((r) => setTimeout(r, 1500));
    expect((await agent("node-1"))?.connected).not.toBe(true);
    expect(existsSync(certFile(n1))).toBe(false); // dropped: the next stream bootstraps
    await mesh.stopAgent(n1, "SIGTERM");
    await mesh.startAgent(n1); // with the token
    await eventually("node-1 bound again, with a new certificate", 20_000, async () =>
      (await agent("node-1"))?.connected && existsSync(certFile(n1)) ? true : undefined,
    );
  }, 60_000);
});
