// The controller in the 2-node world: a Service applied over REST reaches both agents and carries
// traffic; a Service whose VIP:port another holds is refused at write time; an object one agent
// cannot apply is left out by that agent alone and shown on the object, while everything else
// keeps propagating; a server-side dry run stores nothing; the data plane survives the controller's death and an agent's restart while
// it is down (cached configuration); everything converges when it returns.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_PORT } from "../../api/dataplane.ts";
import { type Node, type Pod, World } from "../world/world.ts";
import { eventually } from "./eventually.ts";
import { Mesh } from "./mesh.ts";
import { httpFrom } from "./netns-client.ts";

const VIP = "10.96.0.10";

const serviceYaml = (name: string, vip: string) => `apiVersion: nodemesh.io/v1alpha1
kind: Service
metadata:
  name: ${name}
  namespace: default
spec:
  vip: ${vip}
  ports:
    - name: http
      port: 80
      targetPort: 8080
  selector:
    app: web
`;

interface AgentView {
  node: string;
  connected: boolean;
  appliedVersion?: string;
  currentVersion: string;
  lastNack?: { version: string; error: string };
  rejected?: { kind: string; namespace: string; name: string; reason: string }[];
  facts: { cpuModel: string; cpuCores: number; memoryBytes: number; kernel: string };
  /** Listed by `nodemesh nodes -o json`; `nodemesh status` reads summaries only. */
  peers?: Array<{ nodeName: string; rttMs: number; lossRatio: number; error: string }>;
  peerSummary: { probed: number; unreachable: number; lossy: number; rttMedianMs: number | null };
}

/** Polls `check` every 100 ms until it returns a value (vitest's waitFor), for at most `ms`. */
describe("controller and agents", () => {
  let world: World;
  let mesh: Mesh;
  let n1: Node;
  let n2: Node;
  let client: Pod;

  const statusJson = async (): Promise<AgentView[]> => {
    const r = await mesh.cli(["status", "-o", "json"]);
    if (r.code !== 0) throw new Error(r.stderr);
    return JSON.parse(r.stdout);
  };
  const inSync = async () => {
    const agents = await statusJson();
    return agents.length === 2 && agents.every((a) => a.connected && a.appliedVersion === a.currentVersion)
      ? agents
      : undefined;
  };
  /** Which configuration node-1's agent says is in force, in /readyz and in /metrics. */
  const inForce = async () => {
    const ready = JSON.parse((await httpFrom(n1.netnsPath, `http://127.0.0.1:${ADMIN_PORT}/readyz`)).body);
    const metrics = await mesh.metrics(n1);
    const info = [...metrics.keys()].filter((k) => k.startsWith("nodemesh_config_applied_version_info{"));
    return { config: ready.config, controller: ready.controller, info };
  };
  const served = async () => {
    const reply = await httpFrom(client.netnsPath, `http://${VIP}/`);
    expect(reply.status).toBe(200);
    return JSON.parse(reply.body).pod as string;
  };

  beforeAll(async () => {
    world = await World.create({ nodes: 2 });
    mesh = new Mesh(world);
    [n1, n2] = world.nodes;
    await mesh.startController();
    // node-2's agent refuses one object by name: an agent that cannot apply what the controller
    // accepted (as an older agent during an upgrade might), injected as a test fault.
    await Promise.all([
      mesh.startAgent(n1),
      mesh.startAgent(n2, { env: { NODEMESH_TEST_REFUSE_OBJECTS: "TrafficPolicy/default/web-refused" } }),
    ]);
    client = await world.addPod(n1, "client");
    const web = [await world.addPod(n1, "web-1"), await world.addPod(n2, "web-2")];
    for (const pod of web)
      await mesh.startWorkload(pod, ["--http-port", "8080", "--grpc-port", "0", "--tcp-echo-port", "0"]);
    await mesh.enroll(client, ["--label", "app=client"]);
    for (const pod of web) await mesh.enroll(pod, ["--label", "app=web"]);
  }, 60_000);

  afterAll(async () => {
    await mesh?.destroy();
  });

  it("applies a Service from YAML; both agents apply it and traffic to its VIP works", async () => {
    const r = await mesh.cli(["apply", "-f", "-"], serviceYaml("web", VIP));
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe("service/web created");

    const listed = await eventually("2 of 2 agents to apply the Service", 15_000, async () => {
      const get = await mesh.cli(["get", "services"]);
      return /web\s+10\.96\.0\.10\s+80\/auto\s+2\/2/.test(get.stdout) ? get.stdout : undefined;
    });
    expect(listed).toContain("APPLIED");
    const pods = new Set<string>();
    for (let i = 0; i < 4; i++) pods.add(await served());
    expect(pods).toEqual(new Set(["web-1", "web-2"]));

    // Applying the same file again changes nothing.
    const again = await mesh.cli(["apply", "-f", "-"], serviceYaml("web", VIP));
    expect(again.stdout.trim()).toBe("service/web unchanged");
  });

  it("refuses a malformed Service with the server's message and each bad field", async () => {
    const bad = serviceYaml("Bad_Name", "10.96.0.999").replace("port: 80", "port: 0");
    const r = await mesh.cli(["apply", "-f", "-"], bad);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/422/);
    for (const field of ["metadata.name", "spec.vip", "spec.ports[0].port"]) expect(r.stderr).toContain(field);
  });

  it("refuses a Service whose VIP:port another holds, naming both; a valid change still reaches every agent", async () => {
    await eventually("agents in sync", 10_000, inSync);
    const r = await mesh.cli(["apply", "-f", "-"], serviceYaml("web-clash", VIP));
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("409");
    expect(r.stderr).toBe(
      `nodemesh apply: 409: Service "web-clash" conflicts:\n  spec.ports[0].port: VIP:port ${VIP}:80 is already Service default/web's\n`,
    );
    expect((await mesh.cli(["get", "service", "web-clash"])).code).toBe(1);
    // A valid change is not held up: both agents apply it.
    expect((await mesh.cli(["apply", "-f", "-"], serviceYaml("web-other", "10.96.0.11"))).code).toBe(0);
    await eventually("2 of 2 agents to apply web-other", 10_000, async () => {
      const get = await mesh.cli(["get", "service", "web-other"]);
      return /web-other\s+10\.96\.0\.11\s+80\/auto\s+2\/2/.test(get.stdout) ? get.stdout : undefined;
    });
    expect(await served()).toMatch(/^web-/);
    await mesh.cli(["delete", "service", "web-other"]);
  });

  it("an object one agent refuses: the object shows which agent and why, the rest keeps propagating, and it clears", async () => {
    const policy = (name: string) => `apiVersion: nodemesh.io/v1alpha1
kind: TrafficPolicy
metadata:
  name: ${name}
  namespace: default
spec:
  targetRefs:
    - name: web
  timeouts:
    request: 5s
`;
    expect((await mesh.cli(["apply", "-f", "-"], policy("web-refused"))).code).toBe(0);
    const listed = await eventually("node-2 to refuse web-refused", 10_000, async () => {
      const get = await mesh.cli(["get", "trafficpolicies"]);
      return /web-refused\s+.*1\/2, 1 rejected/.test(get.stdout) ? get.stdout : undefined;
    });
    expect(listed).toContain("APPLIED");
    const obj = JSON.parse((await mesh.cli(["get", "trafficpolicy", "web-refused", "-o", "json"])).stdout);
    expect(obj.status).toMatchObject({ agentsApplied: 1, agentsTotal: 2, agentsRejected: 1 });
    const applied = obj.status.conditions.find((c: { type: string }) => c.type === "Applied");
    expect(applied).toMatchObject({ status: "False", reason: "Rejected" });
    expect(applied.message).toContain("node-2: refused by NODEMESH_TEST_REFUSE_OBJECTS");
    // node-2 took the rest of the version: it is in sync and names what it left out.
    const agents = await eventually("agents in sync", 10_000, inSync);
    expect(agents.find((a) => a.node === "node-2")!.rejected).toEqual([
      expect.objectContaining({ kind: "TrafficPolicy", name: "web-refused" }),
    ]);
    const table = await mesh.cli(["status"]);
    expect(table.stdout).toMatch(/node-2\s+true\s+\S+\s+\S+\s+yes\s+TrafficPolicy\/default\/web-refused/);

    // Everything else keeps propagating to both agents, node-2 included.
    expect(
      (await mesh.cli(["apply", "-f", "-"], policy("web-accepted").replace("- name: web", "- name: web-more"))).code,
    ).toBe(0);
    expect((await mesh.cli(["apply", "-f", "-"], serviceYaml("web-more", "10.96.0.12"))).code).toBe(0);
    await eventually("both agents to apply web-more and its policy", 10_000, async () => {
      const svc = await mesh.cli(["get", "service", "web-more"]);
      const pol = await mesh.cli(["get", "trafficpolicy", "web-accepted"]);
      return /2\/2/.test(svc.stdout) && /web-accepted\s+.*2\/2(?!,)/.test(pol.stdout) ? true : undefined;
    });

    // Fixed (here: gone), the refusal clears.
    await mesh.cli(["delete", "trafficpolicy", "web-refused"]);
    await eventually("node-2 to hold no refusal", 10_000, async () => {
      const list = await inSync();
      return list?.every((a) => (a.rejected ?? []).length === 0) ? list : undefined;
    });
    await mesh.cli(["delete", "trafficpolicy", "web-accepted"]);
    await mesh.cli(["delete", "service", "web-more"]);
  });

  it("a server-side dry run says what would not be accepted and what each agent would receive; it stores nothing", async () => {
    const route = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: web-split
  namespace: default
spec:
  parentRefs:
    - name: web
  rules:
    - backendRefs:
        - name: web-v9
`;
    const r = await mesh.cli(["apply", "--dry-run=server", "-f", "-"], route);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.split("\n")).toEqual([
      "httproute/web-split created (server dry run)",
      "  ResolvedRefs: False (BackendNotFound) no such Service: default/web-v9 (its share of requests gets a 500)",
      "  node-1, node-2 would receive: + HTTPRoute default/web-split",
      "",
    ]);
    expect((await mesh.cli(["get", "httproutes"])).stdout.trim()).toBe("No httproutes found.");
    const clash = await mesh.cli(["apply", "--dry-run=server", "-f", "-"], serviceYaml("web-clash", VIP));
    expect(clash.code).toBe(1);
    expect(clash.stderr).toContain("is already Service default/web's");
  });

  it("shows node facts and a measured RTT between the nodes", async () => {
    const agents = await eventually("RTT probes of both nodes", 10_000, async () => {
      const list = await statusJson();
      const measured = (a: AgentView) => a.peerSummary.unreachable === 0 && (a.peerSummary.rttMedianMs ?? 0) > 0;
      return list.every(measured) ? list : undefined;
    });
    for (const a of agents) {
      expect(a.peers).toBeUndefined(); // status needs no probe: the controller sent summaries only
      expect(a.peerSummary.probed).toBeGreaterThan(0);
      expect(a.facts.cpuCores).toBeGreaterThan(0);
      expect(a.facts.memoryBytes).toBeGreaterThan(0);
      expect(a.facts.kernel).not.toBe("");
    }
    const json = await mesh.cli(["nodes", "-o", "json"]);
    for (const a of JSON.parse(json.stdout) as AgentView[]) {
      expect(a.peers?.some((p) => p.rttMs > 0 && p.lossRatio === 0 && !p.error)).toBe(true);
    }
    const r = await mesh.cli(["nodes"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/node-1\s+true/);
    expect(r.stdout).toMatch(/node-2\s+true/);
    // The RTT matrix: node-1's row has a number of milliseconds for node-2.
    expect(r.stdout).toMatch(/^node-1\s+-\s+\d+\.\d{3}/m);
  });

  it("keeps traffic flowing with the controller dead, even across an agent restart, and converges after", async () => {
    await mesh.controller!.proc.stop("SIGKILL");
    expect(await served()).toMatch(/^web-/);

    // Static stability: a restarted agent serves its cached configuration.
    await mesh.stopAgent(n1, "SIGKILL");
    await mesh.startAgent(n1);
    const pods = new Set<string>();
    for (let i = 0; i < 4; i++) pods.add(await served());
    expect(pods).toEqual(new Set(["web-1", "web-2"]));
    // ... and says so, in one voice: /readyz and the metric name the cache, nothing names the controller.
    const cached = await inForce();
    expect(cached.config).toEqual({ source: "cache", version: expect.any(String) });
    expect(cached.controller).toMatchObject({ connected: false });
    expect(cached.controller).not.toHaveProperty("appliedFrom");
    expect(cached.info).toEqual([
      `nodemesh_config_applied_version_info{version="${cached.config.version}",source="cache"}`,
    ]);

    await mesh.startController();
    const agents = await eventually("agents to reconnect and converge", 20_000, inSync);
    expect(new Set(agents.map((a) => a.appliedVersion)).size).toBe(1);
    expect(await served()).toMatch(/^web-/);
    const fresh = await inForce();
    expect(fresh.config).toEqual({ source: "controller", version: agents[0].appliedVersion });
    expect(fresh.info).toEqual([
      `nodemesh_config_applied_version_info{version="${fresh.config.version}",source="controller"}`,
    ]);
  });
});
