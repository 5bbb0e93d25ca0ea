// A running mesh inside a test world: agents on nodes, sample workloads in pods, init run in
// pods. Used by the end-to-end tests and the demo; every process goes through the world, so the
// world's cleanup covers it.

import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ADMIN_PORT } from "../../api/dataplane.ts";
import { AGENT_PROCESS, CONTROLLER_PROCESS } from "../../api/process-settings.ts";
import type { ServiceTable } from "../../api/services.ts";
import type { InterceptionMode } from "../../init-container/cli.ts";
import { podPinDir } from "../../init-container/ebpf.ts";
import type { Controller, Node, Place, Pod, Proc, RunResult, World } from "../world/world.ts";
import { httpFrom, parseMetrics } from "./netns-client.ts";

const REPO = new URL("../..", import.meta.url).pathname;
const SOURCE_CLI = join(REPO, "bin/nodemesh.ts");
/** The command line as `npm run build` compiles it (what production runs). */
export const BUILT_CLI = join(REPO, "dist/bin/nodemesh.js");
const WORKLOAD = join(REPO, "test/workload/workload.ts");

export interface AgentOptions {
  controllerCaFile?: string;
  /** false: started without the bootstrap token. */
  token?: boolean;
  nodeName?: string;
  stateDir?: string;
  /** More agent flags (e.g. another --admin-port beside a running agent). */
  args?: string[];
  /** More environment (e.g. NODEMESH_TEST_REFUSE_OBJECTS). */
  env?: Record<string, string>;
}

export interface AgentHandle {
  node: Node;
  proc: Proc;
  socket: string;
  stateDir: string;
}

export class Mesh {
  readonly world: World;
  readonly dir: string;
  readonly servicesFile: string;
  /** The bootstrap token the controller requires of agents (its gRPC listens on the underlay). */
  readonly agentTokenFile: string;
  /** With `tunnelKey`: the key every agent signs and checks tunnel handshakes with (hex). */
  readonly tunnelKey: string | undefined;
  readonly agents = new Map<Node, AgentHandle>();
  private readonly agentArgs: string[];
  private readonly agentNodeArgs: string[];
  private readonly agentEnv: Record<string, string>;
  private readonly command: string;
  /** How `init` intercepts pods: iptables rules, or eBPF programs on the pod's cgroup (world with cgroups). */
  readonly mode: InterceptionMode;
  /** Set by startController: agents then take their configuration from it instead of the file. */
  controller: { place: Controller; proc: Proc; storeDir: string } | undefined;

  /**
   * `cli`: the nodemesh command line to run (default: from source; benchmarks run BUILT_CLI).
   * `agentNodeArgs` and `agentEnv`: Node options and environment of the agents (fault tests preload a module).
   */
  constructor(
    world: World,
    opts: {
      agentArgs?: string[];
      agentNodeArgs?: string[];
      agentEnv?: Record<string, string>;
      cli?: string;
      /** Agents share a tunnel key file (--tunnel-key-file), as a real install does. */
      tunnelKey?: boolean;
      /** `nodemesh init --mode`; "ebpf" needs a world created with `cgroups: true`. */
      mode?: InterceptionMode;
    } = {},
  ) {
    this.world = world;
    this.mode = opts.mode ?? "iptables";
    this.dir = mkdtempSync(join(tmpdir(), "nodemesh-test-"));
    this.servicesFile = join(this.dir, "services.json");
    this.agentTokenFile = join(this.dir, "agent-token");
    writeFileSync(this.agentTokenFile, `${randomBytes(24).toString("base64url")}\n`, { mode: 0o600 });
    this.agentArgs = [...(opts.agentArgs ?? [])];
    if (opts.tunnelKey) {
      this.tunnelKey = randomBytes(32).toString("hex");
      const keyFile = join(this.dir, "tunnel-key");
      writeFileSync(keyFile, `${this.tunnelKey}\n`, { mode: 0o600 });
      this.agentArgs.push("--tunnel-key-file", keyFile);
    }
    this.agentNodeArgs = opts.agentNodeArgs ?? [];
    this.agentEnv = opts.agentEnv ?? {};
    this.command = opts.cli ?? SOURCE_CLI;
    this.writeServices({ services: [] });
    // The world's signal hook ends the process before async cleanup could run; files go here.
    process.once("exit", this.removeDir);
  }

  private readonly removeDir = () => rmSync(this.dir, { recursive: true, force: true });

  writeServices(table: ServiceTable): void {
    this.writeServicesRaw(JSON.stringify(table, null, 2));
  }

  /** For tests of broken files: the agents read whatever is written here on start and on SIGHUP. */
  writeServicesRaw(text: string): void {
    writeFileSync(this.servicesFile, text);
  }

  /** Starts (or restarts) the node's agent and waits until it is ready. */
  /**
   * Spawns `nodemesh agent` on `node` as startAgent does, without waiting for it to be ready
   * (e.g. a second agent beside a running one). `token: false`: without the bootstrap token (its
   * node certificate, if held, must do); `nodeName`, `stateDir`: another than the node's own.
   */
  spawnAgent(node: Node, name = `agent ${node.name}`, opts: AgentOptions = {}): Omit<AgentHandle, "node"> {
    const socket = join(this.dir, node.name, "agent.sock");
    const stateDir = opts.stateDir ?? join(this.dir, node.name, "state");
    mkdirSync(stateDir, { recursive: true });
    const config = this.controller
      ? [
          "--controller",
          `${this.controller.place.ip}:15012`,
          ...(opts.token === false ? [] : ["--controller-token-file", this.agentTokenFile]),
          "--controller-ca-file",
          opts.controllerCaFile ?? this.controllerCaFile,
          "--underlay-ip",
          node.underlayIp,
          "--report-interval-s",
          "1",
        ]
      : ["--services", this.servicesFile];
    const proc = this.world.spawn(
      node,
      process.execPath,
      [
        ...AGENT_PROCESS.nodeFlags,
        ...this.agentNodeArgs,
        this.command,
        "agent",
        "--node-name",
        opts.nodeName ?? node.name,
        "--enrollment-socket",
        socket,
        "--state-dir",
        stateDir,
        ...config,
        // The product's --connect-timeout-ms (1 s): bursts on a loaded machine must pass with it.
        ...this.agentArgs,
        ...(opts.args ?? []),
      ],
      { name, env: { ...AGENT_PROCESS.env, ...this.agentEnv, ...opts.env } },
    );
    return { proc, socket, stateDir };
  }

  async startAgent(node: Node, opts: AgentOptions = {}): Promise<AgentHandle> {
    const { proc, socket, stateDir } = this.spawnAgent(node, undefined, opts);
    await proc.waitForLine(/"msg":"agent ready"/, 15_000);
    const handle = { node, proc, socket, stateDir };
    this.agents.set(node, handle);
    return handle;
  }

  /**
   * The controller's CA root (its store dir's ca.pem): agents verify its gRPC server certificate
   * with it (--controller-ca-file).
   */
  get controllerCaFile(): string {
    if (!this.controller) throw new Error("no controller");
    return join(this.controller.storeDir, "ca.pem");
  }

  /**
   * Starts (or restarts) the controller in the world's controller namespace, its REST API on that
   * namespace's loopback, its gRPC stream on the underlay over TLS (agents present `agentTokenFile`
   * and verify it with `controllerCaFile`). Start it before the agents. `extraArgs` go to
   * `nodemesh controller`.
   */
  async startController(extraArgs: string[] = []): Promise<void> {
    const place = this.controller?.place ?? this.world.controller ?? (await this.world.addController());
    const storeDir = join(this.dir, "controller-store");
    const proc = this.world.spawn(
      place,
      process.execPath,
      [
        ...CONTROLLER_PROCESS.nodeFlags,
        this.command,
        "controller",
        "--store-dir",
        storeDir,
        "--agent-token-file",
        this.agentTokenFile,
        ...extraArgs,
      ],
      { name: "controller", env: { ...CONTROLLER_PROCESS.env } },
    );
    await proc.waitForLine(/"msg":"controller ready"/, 15_000);
    this.controller = { place, proc, storeDir };
    // The CA root is written on the controller's first start, before it says ready.
    for (let i = 0; !existsSync(this.controllerCaFile); i++) {
      if (i === 50) throw new Error(`the controller did not write ${this.controllerCaFile}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  /** Runs a `nodemesh` client command (apply, get, …) in the controller's namespace. */
  async cli(args: string[], input?: string): Promise<RunResult> {
    if (!this.controller) throw new Error("no controller");
    return this.world.exec(this.controller.place, process.execPath, [this.command, ...args], {
      timeoutMs: 20_000,
      ...(input !== undefined ? { input } : {}),
    });
  }

  async stopAgent(node: Node, signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
    await this.agents.get(node)?.proc.stop(signal);
  }

  /** Starts the sample workload in a pod and waits for its ready line. */
  async startWorkload(pod: Pod, args: string[] = []): Promise<Proc> {
    const proc = this.world.spawn(pod, process.execPath, [WORKLOAD, "--name", pod.name, ...args], {
      name: `workload ${pod.name}`,
    });
    await proc.waitForLine(/"event":"ready"/, 15_000);
    return proc;
  }

  /**
   * Runs `nodemesh init` inside the pod, against its node's agent, in the mesh's mode (eBPF: with
   * the pod's cgroup, also for --uninstall).
   */
  init(pod: Pod, args: string[] = []): Promise<RunResult> {
    const socket = join(this.dir, pod.node.name, "agent.sock");
    if (this.mode === "ebpf" && !pod.cgroup)
      throw new Error(`pod ${pod.name} has no cgroup: create the world with cgroups`);
    const mode = this.mode === "ebpf" ? ["--mode", "ebpf", "--cgroup", pod.cgroup!] : [];
    return this.world.exec(
      pod,
      process.execPath,
      [
        this.command,
        "init",
        "--pod-name",
        pod.name,
        "--pod-namespace",
        "default",
        "--enrollment-socket",
        socket,
        ...mode,
        ...args,
      ],
      { timeoutMs: 30_000 },
    );
  }

  /** Runs init and fails with its output if it did not succeed. */
  async enroll(pod: Pod, args: string[] = []): Promise<void> {
    const r = await this.init(pod, args);
    if (r.code !== 0) throw new Error(`nodemesh init in ${pod.name} failed (${r.code}): ${r.stderr}${r.stdout}`);
  }

  /**
   * A request on `node`'s enrollment socket, made (with curl) by a process inside `from`: a pod
   * calls as that pod; the node itself is the privileged caller (docs/security.md). `body` is sent
   * as is, with `contentType` (default application/json).
   */
  async enrollmentCall(
    node: Node,
    from: Place,
    method: string,
    path: string,
    body?: string,
    contentType = "application/json",
  ): Promise<{ status: number; body: string }> {
    const socket = join(this.dir, node.name, "agent.sock");
    const args = ["-s", "-m", "5", "--unix-socket", socket, "-X", method, "-w", "\n%{http_code}"];
    if (body !== undefined) args.push("-H", `content-type: ${contentType}`, "--data-binary", "@-");
    const r = await this.world.exec(from, "curl", [...args, `http://agent${path}`], {
      timeoutMs: 10_000,
      ...(body !== undefined ? { input: body } : {}),
    });
    if (r.code !== 0) throw new Error(`curl ${method} ${path} in ${from.netns} failed (${r.code}): ${r.stderr}`);
    const cut = r.stdout.lastIndexOf("\n");
    return { status: Number(r.stdout.slice(cut + 1)), body: r.stdout.slice(0, cut) };
  }

  async metrics(node: Node): Promise<Map<string, number>> {
    const reply = await httpFrom(node.netnsPath, `http://127.0.0.1:${ADMIN_PORT}/metrics`);
    if (reply.status !== 200) throw new Error(`metrics of ${node.name}: ${reply.status} ${reply.body}`);
    return parseMetrics(reply.body);
  }

  /**
   * The namespace's rules as `iptables-save` prints them, without timestamps and counters, and
   * without tables that hold no rule and only ACCEPT policies: such a table behaves exactly like
   * an absent one (iptables-nft cannot delete a table, so an uninstall leaves it empty).
   */
  async iptablesSave(place: Place): Promise<string> {
    const r = await this.world.exec(place, "iptables-save", []);
    const tables = r.stdout
      .split("\n")
      .filter((l) => !l.startsWith("#"))
      .map((l) => l.replace(/\[\d+:\d+\]/, "[0:0]"))
      .join("\n")
      .split(/^(?=\*)/m);
    const empty = (t: string) => !/^-A /m.test(t) && !/^:\S+ (DROP|REJECT)/m.test(t) && !/^:\S+ - /m.test(t);
    return tables.filter((t) => t.trim() && !empty(t)).join("");
  }

  /**
   * What intercepts the pod, as text to compare: its iptables rules (iptablesSave) and, in the eBPF
   * mode, the programs attached to its cgroup (id, type, name) and the pins of its cgroup id.
   */
  async interception(pod: Pod): Promise<string> {
    const rules = await this.iptablesSave(pod);
    if (!pod.cgroup) return rules;
    const r = await this.world.exec(pod, "bpftool", ["-j", "cgroup", "show", pod.cgroup]);
    if (r.code !== 0) throw new Error(`bpftool cgroup show ${pod.cgroup}: ${r.stderr}`);
    const attached = (
      (JSON.parse(r.stdout.trim() || "[]") ?? []) as { id: number; attach_type: string; name: string }[]
    )
      .map((p) => `${p.attach_type} ${p.name} id ${p.id}`)
      .sort();
    let pins: string[] = [];
    try {
      pins = readdirSync(podPinDir(pod.cgroup)).sort();
    } catch {}
    return `${rules}# cgroup programs: ${attached.join(", ") || "none"}\n# pins: ${pins.join(", ") || "none"}\n`;
  }

  /** The world's destroy stops the processes; this removes the agents' files. */
  async destroy(): Promise<void> {
    await this.world.destroy();
    this.removeDir();
    // A benchmark makes a Mesh per world, one after another: each would leave its hook behind.
    process.off("exit", this.removeDir);
  }
}

/**
 * On the world's one node: a client pod and a server pod (HTTP on 8080) behind `vip` port 80, the
 * node's agent, the server's workload, both pods enrolled. `echoPort`: the workload's TCP echo
 * also serves there, behind the same port of `vip` declared opaque TCP.
 */
export async function oneNodeServer(
  world: World,
  mesh: Mesh,
  vip: string,
  opts: { echoPort?: number } = {},
): Promise<{ client: Pod; server: Pod; agent: AgentHandle }> {
  const [node] = world.nodes;
  const client = await world.addPod(node!, "client");
  const server = await world.addPod(node!, "server");
  mesh.writeServices({
    services: [
      {
        name: "server",
        namespace: "default",
        vip,
        ports: [
          { name: "http", port: 80, targetPort: 8080, protocol: "http" },
          ...(opts.echoPort
            ? [{ name: "echo", port: opts.echoPort, targetPort: opts.echoPort, protocol: "tcp" as const }]
            : []),
        ],
        endpoints: [{ ip: server.ip, pod: server.name, meshed: true }],
      },
    ],
  });
  const agent = await mesh.startAgent(node!);
  const echo = String(opts.echoPort ?? 0);
  await mesh.startWorkload(server, ["--http-port", "8080", "--grpc-port", "0", "--tcp-echo-port", echo]);
  await mesh.enroll(client);
  await mesh.enroll(server);
  return { client, server, agent };
}

/** Listening TCP sockets on `port` inside `pod`: one per data-plane worker on a pod's ports. */
export async function listenersOn(world: World, pod: Pod, port: number): Promise<number> {
  const r = await world.exec(pod, "ss", ["-Hltn", `sport = :${port}`]);
  return r.stdout.split("\n").filter((l) => l.trim()).length;
}
