// The enrollment socket's trust boundary (docs/security.md, "Enrollment socket"): a pod's process
// that reaches the socket may enroll, re-enroll and remove only its own network namespace, with an
// address of that namespace; it may not list the node's pods. The tunnel never connects to a
// pod's loopback or to a port the pod excluded from interception. Calls made from the node's own
// namespace are privileged, as kubelet's or an operator's on a node are.

import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_PORT, TUNNEL_PORT } from "../../api/dataplane.ts";
import { type Node, type Pod, type Proc, World } from "../world/world.ts";
import { Mesh } from "./mesh.ts";
import { connectFrom, httpFrom } from "./netns-client.ts";

const VIP = "10.96.0.10";
const SECRET_PORT = 9999;
const EXCLUDED_PORT = 9090;
const TUNNEL_ATTEMPTS = 20;

/**
 * Sends a tunnel handshake from `from` and returns what the agent answers: everything until it
 * closes, or (`headOnly`) the answer's head. 5 s at most.
 */
async function tunnelExchange(from: Pod, to: Pod, target: string, headOnly = false): Promise<string> {
  const socket = await connectFrom(from.netnsPath, to.ip, TUNNEL_PORT);
  return new Promise((resolve) => {
    let text = "";
    const timer = setTimeout(() => socket.destroy(), 5000);
    socket.setEncoding("latin1");
    socket.on("data", (c: string) => {
      text += c;
      if (headOnly && text.includes("\r\n\r\n")) socket.destroy();
    });
    socket.on("error", () => {});
    socket.on("close", () => {
      clearTimeout(timer);
      resolve(text);
    });
    socket.write(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`);
  });
}

describe("enrollment trust boundary", () => {
  let world: World;
  let mesh: Mesh;
  let node: Node;
  let victim: Pod; // enrolled, serves the VIP, keeps a secret on its loopback, excludes a port
  let client: Pod; // enrolled, calls the VIP
  let mallory: Pod; // enrolled, tries everything
  let stranger: Pod; // not meshed: speaks to tunnel ports directly
  let secret: Proc;

  /** A call from `from` (a pod: as that pod; the node: privileged), the body as JSON. */
  const call = async (from: Pod | Node, method: string, path: string, body?: unknown) =>
    mesh.enrollmentCall(node, from, method, path, body === undefined ? undefined : JSON.stringify(body));

  const servedByVictim = async (): Promise<boolean> => {
    const reply = await httpFrom(client.netnsPath, `http://${VIP}/`).catch(() => undefined);
    return reply?.status === 200 && JSON.parse(reply.body).pod === "victim";
  };
  const enrolledNames = async (): Promise<string[]> =>
    JSON.parse((await call(node, "GET", "/v1/pods")).body)
      .pods.map((p: { name: string }) => p.name)
      .sort();

  beforeAll(async () => {
    world = await World.create({ nodes: 1 });
    mesh = new Mesh(world);
    [node] = world.nodes;
    victim = await world.addPod(node, "victim");
    client = await world.addPod(node, "client");
    mallory = await world.addPod(node, "mallory");
    stranger = await world.addPod(node, "stranger");
    mesh.writeServices({
      services: [
        {
          name: "web",
          namespace: "default",
          vip: VIP,
          ports: [{ port: 80, targetPort: 8080 }],
          endpoints: [{ ip: victim.ip, pod: victim.name, meshed: true }],
        },
      ],
    });
    await mesh.startAgent(node);
    await mesh.startWorkload(victim, [
      "--http-port",
      "8080",
      "--grpc-port",
      "0",
      "--tcp-echo-port",
      String(EXCLUDED_PORT),
    ]);
    const script = `require("node:net").createServer((s) => s.end("the-secret\\n")).listen(${SECRET_PORT}, "127.0.0.1", () => console.log("ready"))`;
    secret = world.spawn(victim, process.execPath, ["-e", script], { name: "secret" });
    await secret.waitForLine(/ready/, 10_000);
    await mesh.enroll(victim, ["--exclude-inbound-ports", String(EXCLUDED_PORT)]);
    await mesh.enroll(client);
    await mesh.enroll(mallory);
  }, 60_000);

  afterAll(async () => {
    await mesh?.destroy();
  });

  it("refuses a ghost pod with 127.0.0.1 in another pod's namespace; the tunnel never reaches that loopback", async () => {
    const ghost = { name: "ghost", namespace: "default", ip: "127.0.0.1", netnsPath: victim.netnsPath };
    const reply = await call(mallory, "POST", "/v1/pods", ghost);
    // The attempts first: on an agent that took the ghost, the failure then says how much leaked.
    const answers: string[] = [];
    for (let i = 0; i < TUNNEL_ATTEMPTS; i++) {
      answers.push(await tunnelExchange(stranger, victim, `127.0.0.1:${SECRET_PORT}`));
    }
    expect(answers.filter((a) => a.includes("the-secret")).length).toBe(0);
    for (const answer of answers) expect(answer).toMatch(/^HTTP\/1\.1 503 .*\r\nX-Nodemesh-Error: NM_TUNNEL_FORBIDDEN/);
    expect(reply.status).toBe(422);
    expect(reply.body).toContain('"field":"ip"');
    expect(await enrolledNames()).toEqual(["client", "mallory", "victim"]);
    expect(await servedByVictim()).toBe(true);
  });

  it("refuses another pod's IP in that pod's namespace, and in the caller's own", async () => {
    const intoVictim = { name: "ghost", namespace: "default", ip: victim.ip, netnsPath: victim.netnsPath };
    const r1 = await call(mallory, "POST", "/v1/pods", intoVictim);
    expect.soft(r1.status).toBe(403);
    expect.soft(r1.body).toContain('"field":"netnsPath"');
    const own = { name: "ghost", namespace: "default", ip: victim.ip };
    const r2 = await call(mallory, "POST", "/v1/pods", own);
    expect.soft(r2.status).toBe(422);
    expect.soft(r2.body).toContain('"field":"ip"');
    const loopback = { name: "ghost", namespace: "default", ip: "127.0.0.1" };
    const r3 = await call(mallory, "POST", "/v1/pods", loopback);
    expect.soft(r3.status).toBe(422);
    expect.soft(r3.body).toContain('"field":"ip"');
    expect(await enrolledNames()).toEqual(["client", "mallory", "victim"]);
  });

  it("refuses taking over another pod's name from another namespace", async () => {
    const hijack = (from: Pod) => ({ name: "victim", namespace: "default", ip: from.ip, labels: { app: "victim" } });
    // From a namespace not enrolled yet: the name belongs to a namespace that still exists.
    const fresh = await call(stranger, "POST", "/v1/pods", hijack(stranger));
    expect(fresh.status).toBe(409);
    expect(fresh.body).toContain("enrolled from another network namespace");
    // From an enrolled one: one pod per namespace.
    const enrolled = await call(mallory, "POST", "/v1/pods", hijack(mallory));
    expect(enrolled.status).toBe(409);
    expect(enrolled.body).toContain("already enrolled as pod default/mallory");
    expect(await enrolledNames()).toEqual(["client", "mallory", "victim"]);
    expect(await servedByVictim()).toBe(true);
  });

  it("refuses a cross-pod DELETE, and the victim keeps its traffic", async () => {
    const reply = await call(mallory, "DELETE", "/v1/pods/default/victim");
    expect(reply.status).toBe(403);
    expect(await enrolledNames()).toEqual(["client", "mallory", "victim"]);
    expect(await servedByVictim()).toBe(true);
  });

  it("answers the pod list only to a privileged caller", async () => {
    const fromPod = await call(mallory, "GET", "/v1/pods");
    expect(fromPod.status).toBe(403);
    expect(fromPod.body).not.toContain("victim");
    expect(await enrolledNames()).toEqual(["client", "mallory", "victim"]);
  });

  it("shows the admin debug view (every pod) only on the node's loopback; metrics stay open", async () => {
    const admin = (path: string) => `http://${node.gatewayIp}:${ADMIN_PORT}${path}`;
    const fromPod = await httpFrom(stranger.netnsPath, admin("/debug/config"));
    expect(fromPod.status).toBe(403);
    expect(fromPod.body).not.toContain("victim");
    expect((await httpFrom(stranger.netnsPath, admin("/metrics"))).status).toBe(200);
    const onNode = await httpFrom(node.netnsPath, `http://127.0.0.1:${ADMIN_PORT}/debug/config`);
    expect(onNode.status).toBe(200);
    expect(onNode.body).toContain("victim");
  });

  it.each([
    ["a regular file", "/etc/passwd"],
    ["a directory", "/run"],
    ["a mount namespace", "/proc/self/ns/mnt"], // the agent's own, as the agent resolves it
  ])("refuses a netnsPath that is %s with 422 naming the field", async (_, netnsPath) => {
    const body = { name: "odd", namespace: "default", ip: "10.244.1.99", netnsPath };
    const reply = await call(node, "POST", "/v1/pods", body);
    expect(reply.status).toBe(422);
    expect(reply.body).toContain('"field":"netnsPath"');
    expect(await enrolledNames()).toEqual(["client", "mallory", "victim"]);
  });

  it("does not reach a port the pod excluded from inbound interception through the tunnel", async () => {
    const excluded = await tunnelExchange(stranger, victim, `${victim.ip}:${EXCLUDED_PORT}`);
    expect(excluded).toMatch(/^HTTP\/1\.1 503 .*\r\nX-Nodemesh-Error: NM_TUNNEL_FORBIDDEN/);
    // The port itself is up (reached directly, as the exclusion intends), and so is the tunnel.
    const direct = await connectFrom(stranger.netnsPath, victim.ip, EXCLUDED_PORT);
    direct.destroy();
    const served = await tunnelExchange(stranger, victim, `${victim.ip}:8080`, true);
    expect(served).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
  });

  it("drops, on restart, a ghost that a state file from before these checks still holds", async () => {
    const handle = mesh.agents.get(node)!;
    await mesh.stopAgent(node, "SIGTERM");
    const file = join(handle.stateDir, "pods.json");
    const state = JSON.parse(readFileSync(file, "utf8"));
    const victimPod = state.pods.find((p: { name: string }) => p.name === "victim");
    state.pods.push({ ...victimPod, name: "ghost", ip: "127.0.0.1", excludeInboundPorts: undefined });
    writeFileSync(file, JSON.stringify(state));
    await mesh.startAgent(node);
    expect(await enrolledNames()).toEqual(["client", "mallory", "victim"]);
    for (let i = 0; i < 5; i++) {
      const answer = await tunnelExchange(stranger, victim, `127.0.0.1:${SECRET_PORT}`);
      expect(answer).toMatch(/^HTTP\/1\.1 503 .*\r\nX-Nodemesh-Error: NM_TUNNEL_FORBIDDEN/);
    }
    expect(await servedByVictim()).toBe(true);
  });

  it("still lets a pod remove itself, and the host remove anyone", async () => {
    const own = await call(mallory, "DELETE", "/v1/pods/default/mallory");
    expect(own.status).toBe(200);
    const byHost = await call(node, "DELETE", "/v1/pods/default/client");
    expect(byHost.status).toBe(200);
    expect(await enrolledNames()).toEqual(["victim"]);
  });
});
