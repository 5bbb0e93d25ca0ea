// A route regex cannot hold a node's workers (issue 21, item 4), end to end: the agent's workers
// compile the routes (loading the RE2 engine there) and match requests from a pod. Before, four
// requests with a 550-character path against `/api/.*.*.*.*x` held the node's workers for ~35 s
// and other Services' requests waited (p50 20.8 s). On that engine this test took 33.9 s for its
// 8 attack requests, and a request to the other Service waited up to 24.7 s; now ~0.1 s and 32 ms.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ServiceTable } from "../../api/services.ts";
import { type Pod, World } from "../world/world.ts";
import { Mesh } from "./mesh.ts";
import { httpFrom } from "./netns-client.ts";

const API_VIP = "10.96.0.10";
const OTHER_VIP = "10.96.0.11";

describe("route regexes in the data plane", () => {
  let world: World;
  let mesh: Mesh;
  let client: Pod;

  beforeAll(async () => {
    world = await World.create({ nodes: 1 });
    mesh = new Mesh(world, { agentArgs: ["--workers", "2"] });
    const [node] = world.nodes;
    client = await world.addPod(node!, "client");
    const api = await world.addPod(node!, "api");
    const other = await world.addPod(node!, "other");
    const http = [{ name: "http", port: 80, targetPort: 8080, protocol: "http" as const }];
    mesh.writeServices({
      services: [
        {
          name: "api",
          namespace: "default",
          vip: API_VIP,
          ports: http,
          endpoints: [{ ip: api.ip, pod: api.name, meshed: true }],
        },
        {
          name: "other",
          namespace: "default",
          vip: OTHER_VIP,
          ports: http,
          endpoints: [{ ip: other.ip, pod: other.name, meshed: true }],
        },
      ],
      traffic: [
        {
          kind: "HTTPRoute",
          namespace: "default",
          name: "api",
          spec: {
            parentRefs: [{ name: "api" }],
            rules: [
              {
                matches: [
                  { path: { type: "RegularExpression", value: "/api/.*.*.*.*x" } },
                  { headers: [{ type: "RegularExpression", name: "x-user", value: "(a|aa)+(b|bb)+c" }] },
                ],
                backendRefs: [{ name: "api", port: 80 }],
              },
            ],
          },
        },
        // As a user writes it; the agent fills in the defaults when it reads the file.
      ] as unknown as ServiceTable["traffic"],
    });
    await mesh.startAgent(node!);
    for (const pod of [api, other]) {
      await mesh.startWorkload(pod, ["--http-port", "8080", "--grpc-port", "0", "--tcp-echo-port", "0"]);
    }
    await mesh.enroll(client);
    await mesh.enroll(api);
    await mesh.enroll(other);
  }, 60_000);

  afterAll(async () => {
    await mesh?.destroy();
  });

  it("answers 550-character attack paths at once, and other Services' requests do not wait", async () => {
    const attack = `/api/${"a".repeat(545)}`;
    const start = Date.now();
    const attacks = Array.from({ length: 8 }, () => httpFrom(client.netnsPath, `http://${API_VIP}${attack}`));
    const others: number[] = [];
    for (let i = 0; i < 20; i++) {
      const t = Date.now();
      expect((await httpFrom(client.netnsPath, `http://${OTHER_VIP}/hello`)).status).toBe(200);
      others.push(Date.now() - t);
    }
    const answered = await Promise.all(attacks);
    const elapsed = Date.now() - start;
    for (const r of answered) {
      expect(r.status).toBe(404);
      expect(r.headers["x-nodemesh-error"]).toBe("NM_NO_ROUTE");
    }
    others.sort((a, b) => a - b);
    console.log(`8 attack requests and 20 others in ${elapsed} ms; others p50 ${others[10]} ms, max ${others[19]} ms`);
    expect(others[10]).toBeLessThan(200);
    expect(others[19]).toBeLessThan(1000);
    expect(elapsed).toBeLessThan(5000);
  });

  it("still routes what the path regex matches, and only that", async () => {
    expect((await httpFrom(client.netnsPath, `http://${API_VIP}/api/${"a".repeat(545)}x`)).status).toBe(200);
    expect((await httpFrom(client.netnsPath, `http://${API_VIP}/api/v1`)).status).toBe(404);
  });
});
