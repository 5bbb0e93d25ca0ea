/**
 * A small cluster made of network namespaces, for the end-to-end tests, the demo and benchmarks.
 *
 *   const world = await World.create({ nodes: 2 });      // in vitest: afterAll(() => world.destroy())
 *   const [n1, n2] = world.nodes;                         // Node { index, name, netns, netnsPath,
 *                                                         //        underlayIp, podCidr, gatewayIp }
 *   const server = await world.addPod(n2, "server");      // Pod { name, node, netns, netnsPath, ip }
 *   const client = await world.addPod(n1, "client");
 *   const ctl = await world.addController();              // Controller { netns, netnsPath, ip }
 *   const proc = world.spawn(server, process.execPath, ["srv.ts"], { env, name: "srv" });  // Proc
 *   await proc.waitForLine(/listening/, 5_000);           // also: proc.lines, kill(), stop(), exited
 *   const { code, stdout, stderr } = await world.exec(client, "cat", [], { input, timeoutMs });
 *   await world.removePod(client);
 *   await world.destroy();                                // idempotent
 *   await withWorld({ nodes: 1 }, async (world) => { ... });   // destroys even when the body throws
 *   await World.create({ nodes: 2, cgroups: true });      // every pod also gets a cgroup (v2), pod.cgroup,
 *                                                         // and its processes run in it (eBPF mode)
 *
 * Topology. Every address lives inside the world's namespaces and none has a route out of them.
 *
 *   underlay: bridge br0 ─┬─ veth n<i> ─ node i: ul0 10.250.0.(10+i)/24, ip_forward=1,
 *                         │                      route 10.244.j.0/24 via 10.250.0.(10+j) for j ≠ i,
 *                         │                      bridge br0 10.244.i.1/24 ─ veth vp<k> ─ pod k of node i:
 *                         │                                 eth0 10.244.i.(10+k)/24, default via 10.244.i.1
 *                         └─ veth ctl ─ controller: ul0 10.250.0.2/24, route 10.244.i.0/24 via node i
 *
 * create, addPod and addController return once every link they made carries traffic (waitForLinks).
 *
 * Pods have a default route so that traffic to service VIPs (10.96.0.0/16) reaches their own iptables
 * rules; the nodes have no route for it, so VIP traffic that nothing intercepts fails, as it should.
 *
 * Namespaces are named nmt-<owner pid, base36>-<4 hex>-<role> (roles: ul, n1, n1-<pod>, ctl), so that
 * concurrent runs never collide and the reaper can tell a dead run's namespaces from a live one's.
 * Veth pairs are created directly inside their namespaces, so nothing ever appears in the root one.
 *
 * Cleanup is guaranteed three ways: destroy() (or withWorld); a hook on process exit, SIGINT and
 * SIGTERM that destroys every live world; and, for a test process killed outright, the parent-death
 * signal given to every process started here plus the reaper that deletes dead runs' namespaces.
 * Pod cgroups (cgroup.ts) are named like their namespaces and go the same three ways, with the eBPF
 * programs pinned for them.
 */
import type { ChildProcess } from "node:child_process";
import { createCgroup, enterCgroupArgs, removeCgroup, removeCgroupSync } from "./cgroup.ts";
import {
  deleteNamespaces,
  deleteNamespacesSync,
  ipBatch,
  NETNS_DIR,
  newWorldPrefix,
  type RunResult,
  run,
  waitForLinks,
} from "./netns.ts";
import { Proc, type ProcOptions } from "./proc.ts";

export type { RunResult } from "./netns.ts";
export { Proc, type ProcOptions } from "./proc.ts";

/** Anything that has a network namespace: a node, a pod, the controller, the underlay. */
export interface Place {
  netns: string;
  netnsPath: string;
}

export interface Node extends Place {
  /** 1-based. */
  index: number;
  /** "node-<index>". */
  name: string;
  underlayIp: string;
  podCidr: string;
  gatewayIp: string;
}

export interface Pod extends Place {
  name: string;
  node: Node;
  ip: string;
  /** The pod's cgroup (v2) directory, in a world created with `cgroups: true`. */
  cgroup?: string;
}

export interface Controller extends Place {
  ip: string;
}

export interface WorldOptions {
  nodes: number;
  /** Give every pod a cgroup (v2) and run its processes in it (cgroup.ts: cgroupsUnavailable()). */
  cgroups?: boolean;
}

/** The cgroup of the pod whose namespace is at `netnsPath`, for clients that make sockets in-process. */
const cgroupByNetns = new Map<string, string>();
export function cgroupOfNetns(netnsPath: string): string | undefined {
  return cgroupByNetns.get(netnsPath);
}

export interface ExecOptions {
  input?: string;
  timeoutMs?: number;
  /** Added to the test process's environment. */
  env?: Record<string, string>;
}

// Limits that keep every address a valid IPv4 address (10+i and 10+k must stay below 255).
const MAX_NODES = 200;
const MAX_PODS_PER_NODE = 200;
const CONTROLLER_IP = "10.250.0.2";
/** How long a process gets to exit after SIGTERM before destroy() sends SIGKILL. */
const STOP_GRACE_MS = 500;

export class World {
  readonly nodes: readonly Node[];
  readonly underlay: Place;
  readonly #prefix = newWorldPrefix();
  /** Every namespace this world has created or is creating: what destroy() deletes. */
  readonly #namespaces = new Set<string>();
  readonly #pods = new Map<string, Pod>();
  /** Pods ever added per node: numbers addresses and veth names, which are never reused. */
  readonly #podCounts = new Map<Node, number>();
  /** Running processes started by spawn(), with the namespace each runs in. */
  readonly #procs = new Map<Proc, string>();
  readonly #execs = new Set<ChildProcess>();
  #controller: Controller | undefined;
  #destroyed: Promise<void> | undefined;
  readonly #withCgroups: boolean;
  /** Pod cgroups that exist: what destroy() removes. */
  readonly #cgroups = new Set<string>();

  private constructor(nodeCount: number, withCgroups: boolean) {
    this.#withCgroups = withCgroups;
    this.underlay = this.#place("ul");
    this.nodes = Array.from({ length: nodeCount }, (_, i) => ({
      ...this.#place(`n${i + 1}`),
      index: i + 1,
      name: `node-${i + 1}`,
      underlayIp: `10.250.0.${11 + i}`,
      podCidr: `10.244.${i + 1}.0/24`,
      gatewayIp: `10.244.${i + 1}.1`,
    }));
  }

  static async create(options: WorldOptions): Promise<World> {
    const { nodes } = options;
    if (!Number.isInteger(nodes) || nodes < 1 || nodes > MAX_NODES) {
      throw new RangeError(`nodes must be an integer from 1 to ${MAX_NODES}, got ${nodes}`);
    }
    const world = new World(nodes, options.cgroups ?? false);
    track(world); // before anything exists, so that even a half-built world is cleaned up
    try {
      await world.#build();
    } catch (err) {
      await world.destroy().catch(() => {}); // the exit hook retries if this fails too
      throw err;
    }
    return world;
  }

  get pods(): Pod[] {
    return [...this.#pods.values()];
  }

  get controller(): Controller | undefined {
    return this.#controller;
  }

  /** Names of the namespaces that currently exist for this world. */
  get namespaces(): string[] {
    return [...this.#namespaces];
  }

  async addPod(node: Node, name: string): Promise<Pod> {
    if (this.nodes[node.index - 1] !== node) throw new Error(`${node.name} is not a node of this world`);
    if (!/^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$/.test(name)) throw new Error(`invalid pod name "${name}"`);
    if (this.#pods.has(name)) throw new Error(`pod "${name}" already exists`);
    const k = (this.#podCounts.get(node) ?? 0) + 1;
    if (k > MAX_PODS_PER_NODE) throw new Error(`${node.name} already had ${MAX_PODS_PER_NODE} pods`);
    this.#podCounts.set(node, k);
    const pod: Pod = { ...this.#place(`n${node.index}-${name}`), name, node, ip: `10.244.${node.index}.${10 + k}` };
    this.#pods.set(name, pod);
    const nodeSide = `vp${k}`;
    try {
      if (this.#withCgroups) {
        pod.cgroup = createCgroup(pod.netns);
        this.#cgroups.add(pod.cgroup);
        cgroupByNetns.set(pod.netnsPath, pod.cgroup);
      }
      await this.#create(
        [pod.netns],
        [`link add eth0 netns ${pod.netns} type veth peer name ${nodeSide} netns ${node.netns}`],
      );
      await Promise.all([
        ipBatch(
          [
            "link set lo up",
            `addr add ${pod.ip}/24 dev eth0`,
            "link set eth0 up",
            `route add default via ${node.gatewayIp}`,
          ],
          { netns: pod.netns },
        ),
        ipBatch([`link set ${nodeSide} master br0 up`], { netns: node.netns }),
      ]);
      await Promise.all([waitForLinks(pod.netns, ["eth0"]), waitForLinks(node.netns, [nodeSide])]);
    } catch (err) {
      await this.removePod(pod).catch(() => {}); // destroy() still covers it if this fails
      throw err;
    }
    return pod;
  }

  /**
   * `count` empty namespaces (not even loopback up), named `<prefix><role>-<i>`: stand-ins for pods
   * when what matters is how many are enrolled (agent memory per pod), not their traffic. They are
   * deleted with the world. One `ip` process creates them all. With `address`, the i-th gets that
   * address on an interface that is up (a veth pair inside it, joined to nothing), as the agent
   * requires of an enrolled pod's IP; one more `ip` process per namespace sets it.
   */
  async addBareNamespaces(role: string, count: number, address?: (i: number) => string): Promise<Place[]> {
    if (!/^[a-z0-9-]{1,20}$/.test(role)) throw new Error(`invalid role "${role}"`);
    const places = Array.from({ length: count }, (_, i) => this.#place(`${role}-${i}`));
    await this.#create(
      places.map((p) => p.netns),
      address ? places.map((p) => `link add e0 netns ${p.netns} type veth peer name e1 netns ${p.netns}`) : [],
    );
    if (address) {
      const PARALLEL = 8;
      for (let first = 0; first < places.length; first += PARALLEL) {
        await Promise.all(
          places.slice(first, first + PARALLEL).map((p, j) =>
            ipBatch([`addr add ${address(first + j)}/32 dev e0`, "link set e1 up", "link set e0 up"], {
              netns: p.netns,
            }),
          ),
        );
      }
    }
    return places;
  }

  /** Stops the pod's processes and deletes its namespace (its veth pair goes with it). */
  async removePod(pod: Pod): Promise<void> {
    if (this.#pods.get(pod.name) !== pod) throw new Error(`pod "${pod.name}" is not in this world`);
    this.#pods.delete(pod.name);
    // Tracked processes get a graceful stop; deleteNamespaces SIGKILLs whatever else is inside.
    const procs = [...this.#procs].filter(([, netns]) => netns === pod.netns).map(([proc]) => proc);
    await Promise.all(procs.map((proc) => proc.stop("SIGTERM", STOP_GRACE_MS)));
    await deleteNamespaces([pod.netns]);
    this.#namespaces.delete(pod.netns);
    await this.#removeCgroup(pod);
  }

  async #removeCgroup(pod: Pod): Promise<void> {
    if (!pod.cgroup) return;
    cgroupByNetns.delete(pod.netnsPath);
    await removeCgroup(pod.cgroup);
    this.#cgroups.delete(pod.cgroup);
  }

  /** Adds the controller's namespace on the underlay, with routes to every node's pods. */
  async addController(): Promise<Controller> {
    if (this.#controller) throw new Error("this world already has a controller");
    const ctl: Controller = { ...this.#place("ctl"), ip: CONTROLLER_IP };
    this.#controller = ctl;
    await this.#create(
      [ctl.netns],
      [`link add ul0 netns ${ctl.netns} type veth peer name ctl netns ${this.underlay.netns}`],
    );
    await Promise.all([
      ipBatch(
        [
          "link set lo up",
          `addr add ${ctl.ip}/24 dev ul0`,
          "link set ul0 up",
          ...this.nodes.map((n) => `route add ${n.podCidr} via ${n.underlayIp}`),
        ],
        { netns: ctl.netns },
      ),
      ipBatch(["link set ctl master br0 up"], { netns: this.underlay.netns }),
    ]);
    await Promise.all([waitForLinks(ctl.netns, ["ul0"]), waitForLinks(this.underlay.netns, ["ctl"])]);
    return ctl;
  }

  /**
   * Starts a long-running process inside `place`'s network namespace (only: `nsenter --net`, unlike
   * `ip netns exec`, keeps the mount namespace, so /sys and /run stay the host's). destroy() stops it.
   */
  spawn(place: Place, command: string, args: readonly string[] = [], options: ProcOptions = {}): Proc {
    const proc = new Proc("setpriv", this.#enter(place, command, args), { name: command, ...options });
    this.#procs.set(proc, place.netns);
    void proc.exited.then(() => this.#procs.delete(proc));
    return proc;
  }

  /** Runs a command inside `place` to completion; rejects (after killing it) on timeout. */
  async exec(
    place: Place,
    command: string,
    args: readonly string[] = [],
    options: ExecOptions = {},
  ): Promise<RunResult> {
    return run("setpriv", this.#enter(place, command, args), {
      input: options.input,
      timeoutMs: options.timeoutMs,
      env: { ...process.env, ...options.env },
      onSpawn: (child) => {
        this.#execs.add(child);
        child.on("exit", () => this.#execs.delete(child));
      },
    });
  }

  /**
   * Stops every process (SIGTERM, SIGKILL after a short grace), kills anything else inside the
   * namespaces and deletes them. Idempotent: later calls return the first call's promise.
   */
  destroy(): Promise<void> {
    this.#destroyed ??= (async () => {
      for (const child of this.#execs) child.kill("SIGKILL");
      await Promise.all([...this.#procs.keys()].map((proc) => proc.stop("SIGTERM", STOP_GRACE_MS)));
      await deleteNamespaces(this.namespaces);
      this.#namespaces.clear();
      for (const cgroup of [...this.#cgroups]) {
        await removeCgroup(cgroup);
        this.#cgroups.delete(cgroup);
      }
      for (const pod of this.#pods.values()) cgroupByNetns.delete(pod.netnsPath);
      untrack(this); // only on success: if deletion failed, the exit hook tries again
    })();
    return this.#destroyed;
  }

  /** destroy() for exit paths, where nothing asynchronous can run: no grace, SIGKILL at once. */
  destroySync(): void {
    this.#destroyed ??= Promise.resolve();
    for (const child of this.#execs) child.kill("SIGKILL");
    for (const proc of this.#procs.keys()) proc.kill("SIGKILL");
    deleteNamespacesSync(this.namespaces);
    this.#namespaces.clear();
    // bpftool cannot run here: the pins of these cgroups go with the next run's reaper.
    for (const cgroup of this.#cgroups) removeCgroupSync(cgroup);
    this.#cgroups.clear();
    untrack(this);
  }

  #place(role: string): Place {
    const netns = this.#prefix + role;
    return { netns, netnsPath: `${NETNS_DIR}/${netns}` };
  }

  /**
   * The setpriv argument list that runs `command` in `place`. The parent-death signal kills the
   * process even if the test process dies by SIGKILL, when no hook can run. (It is armed when setpriv
   * runs, a few milliseconds after spawn() returns.)
   */
  #enter(place: Place, command: string, args: readonly string[]): string[] {
    if (this.#destroyed) throw new Error("this world has been destroyed");
    if (!this.#namespaces.has(place.netns)) throw new Error(`${place.netns} is not a namespace of this world`);
    const cgroup = (place as Partial<Pod>).cgroup;
    const enter = cgroup ? enterCgroupArgs(cgroup) : [];
    return ["--pdeathsig", "KILL", "--", ...enter, "nsenter", `--net=${place.netnsPath}`, "--", command, ...args];
  }

  /**
   * Creates namespaces, then runs `links` (`ip link add ... netns <name>` lines) in the same `ip`
   * process in the root namespace: the links are born inside their namespaces.
   */
  async #create(names: readonly string[], links: readonly string[]): Promise<void> {
    if (this.#destroyed) throw new Error("this world has been destroyed");
    for (const name of names) this.#namespaces.add(name);
    await ipBatch([...names.map((name) => `netns add ${name}`), ...links]);
  }

  async #build(): Promise<void> {
    const { underlay, nodes } = this;
    await this.#create(
      [underlay.netns, ...nodes.map((n) => n.netns)],
      [
        `link add br0 netns ${underlay.netns} type bridge`,
        ...nodes.flatMap((n) => [
          `link add br0 netns ${n.netns} type bridge`,
          `link add ul0 netns ${n.netns} type veth peer name n${n.index} netns ${underlay.netns}`,
        ]),
      ],
    );
    // Then one `ip` per namespace, all at once: each only touches its own namespace.
    await Promise.all([
      ipBatch(["link set lo up", "link set br0 up", ...nodes.map((n) => `link set n${n.index} master br0 up`)], {
        netns: underlay.netns,
      }),
      ...nodes.map((node) =>
        ipBatch(
          [
            "link set lo up",
            `addr add ${node.underlayIp}/24 dev ul0`,
            "link set ul0 up",
            `addr add ${node.gatewayIp}/24 dev br0`,
            // A bridge without an address of its own takes its lowest port's, and changes it when
            // a pod with a lower one joins: the other pods' ARP entries for the gateway then point
            // at a pod's veth, and their traffic fails for seconds (ENETUNREACH, resets).
            `link set br0 address 02:6e:6d:00:${node.index.toString(16).padStart(2, "0")}:01`,
            "link set br0 up",
            ...nodes
              .filter((other) => other !== node)
              .map((other) => `route add ${other.podCidr} via ${other.underlayIp}`),
          ],
          { netns: node.netns },
        ),
      ),
      ...nodes.map((node) => this.#enableForwarding(node)),
    ]);
    await Promise.all([
      waitForLinks(
        underlay.netns,
        nodes.map((n) => `n${n.index}`),
      ),
      ...nodes.map((n) => waitForLinks(n.netns, ["ul0"])),
    ]);
  }

  async #enableForwarding(node: Node): Promise<void> {
    const { code, stderr } = await run("nsenter", [
      `--net=${node.netnsPath}`,
      "--",
      "sysctl",
      "-qw",
      "net.ipv4.ip_forward=1",
    ]);
    if (code !== 0) throw new Error(`enabling forwarding on ${node.name} failed: ${stderr}`);
  }
}

/** Builds a world, runs `body` with it and always destroys it, whether `body` returns or throws. */
export async function withWorld<T>(options: WorldOptions, body: (world: World) => Promise<T>): Promise<T> {
  const world = await World.create(options);
  try {
    return await body(world);
  } finally {
    await world.destroy();
  }
}

// Exit hooks: installed while at least one world is live, so that a process without worlds keeps
// its default signal behaviour.
const live = new Set<World>();
const SIGNALS = ["SIGINT", "SIGTERM"] as const;

function track(world: World): void {
  if (live.size === 0) {
    process.on("exit", destroyAllSync);
    for (const signal of SIGNALS) process.on(signal, onSignal);
  }
  live.add(world);
}

function untrack(world: World): void {
  live.delete(world);
  if (live.size === 0) {
    process.off("exit", destroyAllSync);
    for (const signal of SIGNALS) process.off(signal, onSignal);
  }
}

function destroyAllSync(): void {
  if (live.size === 0) return;
  // Tests should destroy their worlds themselves: say so, since a forgotten world costs a whole run.
  process.stderr.write(`nodemesh test world: ${live.size} world(s) not destroyed before exit; destroying them now\n`);
  for (const world of [...live]) world.destroySync();
}

/** Destroys every world, then raises the signal again so that the process ends as it would have. */
function onSignal(signal: NodeJS.Signals): void {
  for (const s of SIGNALS) process.off(s, onSignal); // a second signal takes effect at once
  void Promise.allSettled([...live].map((world) => world.destroy())).then(() => {
    destroyAllSync(); // what destroy() failed to remove
    process.kill(process.pid, signal);
  });
}
