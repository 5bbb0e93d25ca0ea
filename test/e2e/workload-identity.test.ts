// Workload identities end to end (issue 12, item 1): real agents on two nodes hold certificates
// for their own pods' identities, from the controller's CA over the agent stream, and renew them
// at half-life; a certificate lives 4 s here so that renewals show within seconds.

import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_PORT } from "../../api/dataplane.ts";
import { type Node, World } from "../world/world.ts";
import { eventually } from "./eventually.ts";
import { Mesh } from "./mesh.ts";
import { httpFrom } from "./netns-client.ts";

interface Held {
  spiffeId: string;
  notAfter: string;
  renewals: number;
}

describe("workload identities", () => {
  let world: World;
  let mesh: Mesh;
  let n1: Node;
  let n2: Node;

  const held = async (node: Node): Promise<Held[]> =>
    JSON.parse((await httpFrom(node.netnsPath, `http://127.0.0.1:${ADMIN_PORT}/readyz`)).body).controller.certificates;

  beforeAll(async () => {
    world = await World.create({ nodes: 2 });
    mesh = new Mesh(world);
    [n1, n2] = world.nodes as [Node, Node];
    await mesh.startController(["--trust-domain", "mesh.test", "--workload-cert-ttl", "4s"]);
    await Promise.all([mesh.startAgent(n1), mesh.startAgent(n2)]);
    const checkout = await world.addPod(n1, "checkout-1");
    const cart = await world.addPod(n1, "cart-1");
    const db = await world.addPod(n2, "db-0");
    await mesh.enroll(checkout, ["--pod-namespace", "shop", "--service-account", "checkout"]);
    await mesh.enroll(cart, ["--pod-namespace", "shop", "--service-account", "checkout"]); // same identity
    await mesh.enroll(db, ["--pod-namespace", "shop"]);
  }, 60_000);

  afterAll(async () => {
    await mesh?.destroy();
  });

  it("gives each node's agent certificates for its pods' identities only, one per identity", async () => {
    const one = await eventually("node-1 holds its certificate", 10_000, async () => {
      const h = await held(n1);
      return h.length > 0 ? h : undefined;
    });
    const two = await eventually("node-2 holds its certificate", 10_000, async () => {
      const h = await held(n2);
      return h.length > 0 ? h : undefined;
    });
    expect(one.map((c) => c.spiffeId)).toEqual(["spiffe://mesh.test/ns/shop/sa/checkout"]);
    expect(two.map((c) => c.spiffeId)).toEqual(["spiffe://mesh.test/ns/shop/sa/default"]);
    // The CA's root, made on first start beside the store, is what the chain leads to.
    const root = new X509Certificate(readFileSync(join(mesh.controller!.storeDir, "ca.pem")));
    expect(root.ca).toBe(true);
  });

  it("renews at half-life: at least 3 renewals of a 4 s certificate within 10 s", async () => {
    const renewed = await eventually("3 renewals on node-1", 12_000, async () => {
      const [c] = await held(n1);
      return c && c.renewals >= 3 ? c : undefined;
    });
    expect(Date.parse(renewed.notAfter) - Date.now()).toBeGreaterThan(0);
    const metrics = await mesh.metrics(n1);
    expect(metrics.get("nodemesh_agent_workload_certificates")).toBe(1);
    expect(metrics.get("nodemesh_agent_workload_certificate_renewals")).toBeGreaterThanOrEqual(3);
  });
});
