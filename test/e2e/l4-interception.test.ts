// Transparent L4 interception end to end, in a 2-node world: pods enrolled by `nodemesh init`,
// agents forwarding through per-pod listeners, replicas on both nodes. Once per interception mode
// (modes.ts): real iptables, and eBPF programs on each pod's cgroup.

import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, expect, it } from "vitest";
import type { ServiceTable } from "../../api/services.ts";
import { type Node, type Pod, type Proc, World } from "../world/world.ts";
import { Mesh } from "./mesh.ts";
import { describeModes } from "./modes.ts";
import { connectFrom, echoFrom, firstLineFrom, type HttpReply, httpFrom, metricSum, sha256 } from "./netns-client.ts";

const VIP = "10.96.0.10";
const ORIGINAL_DST_SERVICES = 500;
const IDENT_BASE_PORT = 20000;

/** The 500 services of the original-destination test: each VIP:port maps to its own endpoint port. */
function origDstTarget(i: number): { vip: string; port: number; endpointPort: number } {
  return {
    vip: `10.96.${1 + Math.floor(i / 100)}.${(i % 100) + 1}`,
    port: 1000 + (i % 5),
    endpointPort: IDENT_BASE_PORT + i,
  };
}

function serviceTable(replicas: Pod[]): ServiceTable {
  const endpoint = (p: Pod) => ({ ip: p.ip, node: p.node.name, pod: p.name, meshed: true });
  const r1 = replicas[0];
  return {
    services: [
      {
        name: "reviews",
        namespace: "default",
        vip: VIP,
        ports: [
          { name: "http", port: 80, targetPort: 8080 },
          { name: "echo", port: 7070, targetPort: 7070 },
        ],
        endpoints: replicas.map(endpoint),
      },
      ...Array.from({ length: ORIGINAL_DST_SERVICES }, (_, i) => {
        const t = origDstTarget(i);
        return {
          name: `orig-${i}`,
          namespace: "default",
          vip: t.vip,
          ports: [{ port: t.port }],
          endpoints: [{ ...endpoint(r1), port: t.endpointPort }],
        };
      }),
    ],
  };
}

async function servedBy(from: Pod, url: string): Promise<string> {
  const reply = await httpFrom(from.netnsPath, url);
  expect(reply.status).toBe(200);
  return JSON.parse(reply.body).pod;
}

function count(names: string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const n of names) out[n] = (out[n] ?? 0) + 1;
  return out;
}

describeModes("transparent L4 interception", (mode) => {
  let world: World;
  let mesh: Mesh;
  let n1: Node;
  let n2: Node;
  let client: Pod;
  let clientExcl: Pod;
  let replicas: Pod[];
  let outsider: Pod;
  let outsiderExcluded: Pod;
  let workloads: Map<Pod, Proc>;
  let rulesBeforeInit: string;

  const outboundOpened = async (node: Node) =>
    metricSum(await mesh.metrics(node), "nodemesh_tcp_connections_opened_total", { reporter: "source" });
  /** HTTP on an undeclared port is detected and proxied per request: count requests, not connections. */
  const inboundRequests = async (node: Node) =>
    metricSum(await mesh.metrics(node), "nodemesh_requests_total", { reporter: "destination" });

  beforeAll(async () => {
    world = await World.create({ nodes: 2, cgroups: mode === "ebpf" });
    mesh = new Mesh(world, { mode });
    [n1, n2] = world.nodes;
    client = await world.addPod(n1, "client");
    clientExcl = await world.addPod(n1, "client-excl");
    replicas = [
      await world.addPod(n1, "reviews-1"),
      await world.addPod(n2, "reviews-2"),
      await world.addPod(n2, "reviews-3"),
    ];
    outsider = await world.addPod(n2, "outsider");
    outsiderExcluded = await world.addPod(n2, "outsider-excl");
    mesh.writeServices(serviceTable(replicas));
    // The node's mode is this suite's: `nodemesh init --mode node` asks the agent for it.
    const interception = { args: ["--interception", mode] };
    await Promise.all([mesh.startAgent(n1, interception), mesh.startAgent(n2, interception)]);

    const identPorts = `${IDENT_BASE_PORT}-${IDENT_BASE_PORT + ORIGINAL_DST_SERVICES - 1}`;
    const workloadArgs = ["--http-port", "8080", "--grpc-port", "0", "--tcp-echo-port", "7070"];
    workloads = new Map();
    for (const pod of [...replicas, outsider, outsiderExcluded]) {
      const extra = pod === replicas[0] ? ["--tcp-ident-ports", identPorts] : [];
      workloads.set(pod, await mesh.startWorkload(pod, [...workloadArgs, ...extra]));
    }
    rulesBeforeInit = await mesh.interception(clientExcl);
    await Promise.all([client, ...replicas].map((p) => mesh.enroll(p, ["--label", `app=${p.name.split("-")[0]}`])));
    await mesh.enroll(clientExcl, exclusionArgs());
  }, 120_000);

  afterAll(async () => {
    await mesh?.destroy();
  });

  function exclusionArgs(): string[] {
    return ["--exclude-outbound-ports", "7070", "--exclude-outbound-cidrs", `${outsiderExcluded.ip}/32`];
  }

  it(`intercepts outbound connections with ${mode === "ebpf" ? "eBPF programs on the pod's cgroup" : "iptables"}`, async () => {
    const state = await mesh.interception(client);
    if (mode === "ebpf") {
      expect(state).not.toContain("NODEMESH_OUTPUT");
      expect(state).toMatch(/cgroup_inet4_connect nm_connect4 id \d+/);
      expect(state).toMatch(/cgroup_sock_ops nm_sockops id \d+/);
      expect(state).toMatch(/cgroup_inet4_getpeername nm_getpeername4 id \d+/);
      expect(state).toMatch(/cgroup_inet6_connect nm_connect6 id \d+/);
    } else {
      expect(state).toContain("-j NODEMESH_OUTPUT");
      expect(state).not.toContain("nm_connect4");
    }
    expect(state).toContain("-j NODEMESH_INBOUND");
  });

  it("installs the node's mode with --mode node, as the agent's --interception names it", async () => {
    const pod = await world.addPod(n1, "auto");
    // The mesh's own --mode comes first; the later --mode node wins.
    const r = await mesh.init(pod, ["--mode", "node", "--label", "app=auto"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain(`this node's interception mode (nodemesh agent --interception): ${mode}`);
    const state = await mesh.interception(pod);
    if (mode === "ebpf") {
      expect(state).toMatch(/cgroup_inet4_connect nm_connect4 id \d+/);
      expect(state).not.toContain("NODEMESH_OUTPUT");
    } else {
      expect(state).toContain("-j NODEMESH_OUTPUT");
      expect(state).not.toContain("nm_connect4");
    }
    const off = await mesh.init(pod, ["--uninstall"]);
    expect(off.code, off.stderr).toBe(0);
  });

  it("spreads connections round-robin over 3 replicas on both nodes", async () => {
    const served: string[] = [];
    for (let i = 0; i < 30; i++) served.push(await servedBy(client, `http://${VIP}/`));
    expect(count(served)).toEqual({ "reviews-1": 10, "reviews-2": 10, "reviews-3": 10 });
    // The rotation is exact: every window of three connections hits each replica once.
    for (let i = 0; i < 30; i += 3) expect(new Set(served.slice(i, i + 3)).size).toBe(3);
  });

  it("carries a 1 MiB payload both ways intact, with half-close", async () => {
    const payload = randomBytes(1024 * 1024);
    // echoFrom half-closes after sending; the echo keeps arriving after our FIN, then the server's FIN.
    const echoed = await echoFrom(client.netnsPath, VIP, 7070, payload);
    expect(echoed.length).toBe(payload.length);
    expect(sha256(echoed)).toBe(sha256(payload));
  });

  it("gives each of 500 concurrent connections to different VIPs and ports its own original destination", async () => {
    // Settled, not all: on a failure the rest must not go on into the next test's counters.
    const settled = await Promise.allSettled(
      Array.from({ length: ORIGINAL_DST_SERVICES }, (_, i) => {
        const t = origDstTarget(i);
        return firstLineFrom(client.netnsPath, t.vip, t.port);
      }),
    );
    const failures = settled.flatMap((s, i) => (s.status === "rejected" ? [`${i}: ${s.reason}`] : []));
    expect(failures.slice(0, 5), `${failures.length} of ${ORIGINAL_DST_SERVICES} failed`).toEqual([]);
    const lines = settled.map((s) => (s.status === "fulfilled" ? s.value : ""));
    lines.forEach((line, i) => {
      expect(line).toBe(`reviews-1 ${origDstTarget(i).endpointPort}`);
    });
  });

  it("lets excluded ports and CIDRs bypass the agent", async () => {
    const before = await outboundOpened(n1);
    // Excluded port: straight to the (unmeshed) outsider.
    const viaPort = await echoFrom(clientExcl.netnsPath, outsider.ip, 7070, Buffer.from("port"));
    expect(viaPort.toString()).toBe("port");
    // Excluded CIDR: any port of that address.
    expect(await servedBy(clientExcl, `http://${outsiderExcluded.ip}:8080/`)).toBe("outsider-excl");
    expect(await outboundOpened(n1)).toBe(before);
    // Control: the same pod's other traffic is intercepted, and counted exactly once.
    expect(await servedBy(clientExcl, `http://${outsider.ip}:8080/`)).toBe("outsider");
    expect(await outboundOpened(n1)).toBe(before + 1);
  });

  it("is idempotent, and --uninstall restores the namespace and direct connectivity", async () => {
    const installed = await mesh.interception(clientExcl);
    await mesh.enroll(clientExcl, exclusionArgs());
    expect(await mesh.interception(clientExcl)).toBe(installed);

    const r = await mesh.init(clientExcl, ["--uninstall"]);
    expect(r.code, r.stderr).toBe(0);
    expect(await mesh.interception(clientExcl)).toBe(rulesBeforeInit);
    const before = await outboundOpened(n1);
    expect(await servedBy(clientExcl, `http://${outsider.ip}:8080/`)).toBe("outsider");
    expect(await outboundOpened(n1)).toBe(before);
  });

  /**
   * Makes the client's agent dial the outsider and get no answer (the outsider drops SYNs to 8080
   * for a moment), and returns the source port of that dial, which the pod's conntrack table keeps
   * for two minutes. The port must be free in the pod for the app to bind it: the earlier tests
   * leave about a thousand of the pod's ports in TIME_WAIT, so the dial is repeated until one is.
   */
  async function sourcePortOfUnansweredAgentDial(): Promise<number> {
    const drop = ["INPUT", "-p", "tcp", "--dport", "8080", "-j", "DROP"];
    const synSent = new RegExp(`SYN_SENT src=${client.ip} dst=${outsider.ip} sport=(\\d+) dport=8080 `, "g");
    for (let attempt = 0; attempt < 5; attempt++) {
      const dropping = await world.exec(outsider, "iptables", ["-I", ...drop]);
      expect(dropping.code, dropping.stderr).toBe(0);
      let unanswered: HttpReply | Error;
      try {
        unanswered = await httpFrom(client.netnsPath, `http://${outsider.ip}:8080/`).catch((err: Error) => err);
      } finally {
        await world.exec(outsider, "iptables", ["-D", ...drop]);
      }
      expect(unanswered instanceof Error ? unanswered.message : unanswered.status).not.toBe(200);
      const conntrack = await world.exec(client, "cat", ["/proc/net/nf_conntrack"]);
      const dialPorts = [...conntrack.stdout.matchAll(synSent)].map((m) => Number(m[1]));
      expect(dialPorts.length, conntrack.stdout).toBeGreaterThan(0);
      for (const port of dialPorts) {
        const holders = await world.exec(client, "ss", ["-Htan", `sport = :${port}`]);
        if (holders.stdout.trim() === "") return port;
      }
    }
    throw new Error("every unanswered dial's source port was still held by another socket in the pod");
  }

  it("carries an app connection from the source port of the agent's unanswered dial to the same destination", async () => {
    const agentPort = await sourcePortOfUnansweredAgentDial();
    // The same four-tuple from the app, now that the outsider answers: the agent carries it. Had
    // the SYN matched the agent's entry, it would have skipped the redirect and reached the
    // outsider directly, outside the mesh (and its policies).
    const before = await outboundOpened(n1);
    const reply = await httpFrom(client.netnsPath, `http://${outsider.ip}:8080/`, { localPort: agentPort });
    expect(reply.status).toBe(200);
    expect(JSON.parse(reply.body).pod).toBe("outsider");
    expect(await outboundOpened(n1), "connections the client's agent opened").toBe(before + 1);
  });

  it("passes a connection from an unmeshed pod to a meshed pod through the destination node's agent", async () => {
    const before = await inboundRequests(n1);
    expect(await servedBy(outsider, `http://${replicas[0].ip}:8080/`)).toBe("reviews-1");
    expect(await inboundRequests(n1)).toBe(before + 1);
  });

  it("fails closed while the agent is down and recovers without re-running init", async () => {
    await mesh.stopAgent(n1, "SIGKILL");
    await expect(connectFrom(client.netnsPath, VIP, 80, 2000)).rejects.toThrow(/ECONNREFUSED/);
    // Never a bypass: a destination that is directly reachable is refused too.
    await expect(connectFrom(client.netnsPath, outsider.ip, 8080, 2000)).rejects.toThrow(/ECONNREFUSED/);

    await mesh.startAgent(n1);
    expect(await servedBy(client, `http://${outsider.ip}:8080/`)).toBe("outsider");
    const served = new Set<string>();
    for (let i = 0; i < 3; i++) served.add(await servedBy(client, `http://${VIP}/`));
    expect(served.size).toBe(3);
  });

  it("fails over when a replica's process dies, within the first attempt's connect budget", async () => {
    await workloads.get(replicas[2])!.stop("SIGKILL");
    const tunnelRefusals = async () =>
      metricSum(await mesh.metrics(n1), "nodemesh_tcp_connect_failures_total", { reason: "NM_TUNNEL_REFUSED" });
    const refusalsBefore = await tunnelRefusals();
    const served: string[] = [];
    let slowest = 0;
    for (let i = 0; i < 30; i++) {
      const t0 = performance.now();
      served.push(await servedBy(client, `http://${VIP}/`));
      slowest = Math.max(slowest, performance.now() - t0);
    }
    expect(count(served)).toEqual({ "reviews-1": 15, "reviews-2": 15 });
    // The destination agent answers the tunnel handshake with a refusal at once: no timeout is spent.
    expect(slowest).toBeLessThan(500);
    // The rotation goes r1, r2, r3✗→r1, r2, r3✗→r1, …: every other request first picked the dead
    // replica, was refused by its agent at once and re-picked: 14 or 15 of 30 by where it started.
    const refusals = (await tunnelRefusals()) - refusalsBefore;
    expect(refusals).toBeGreaterThanOrEqual(14);
    expect(refusals).toBeLessThanOrEqual(15);
  });

  it("fails over when a replica's whole pod is gone, after at most one connect timeout", async () => {
    await world.removePod(replicas[1]);
    const served: string[] = [];
    let slowest = 0;
    for (let i = 0; i < 6; i++) {
      const t0 = performance.now();
      served.push(await servedBy(client, `http://${VIP}/`));
      slowest = Math.max(slowest, performance.now() - t0);
    }
    expect(new Set(served)).toEqual(new Set(["reviews-1"]));
    // The agents run with the default --connect-timeout-ms, 1 s: one dead attempt costs at most that.
    expect(slowest).toBeLessThan(1000 + 400);
  });
});
