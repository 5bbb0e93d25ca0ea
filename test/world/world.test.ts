import { spawnSync } from "node:child_process";
import { once } from "node:events";
import { existsSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PIN_ROOT, podPinDir } from "../../init-container/ebpf.ts";
import { modeUnavailable } from "../e2e/modes.ts";
import { createCgroup, enterCgroupArgs, orphanCgroups, removeCgroup, TEST_CGROUP_DIR } from "./cgroup.ts";
import { ipBatch, isAlive, newWorldPrefix, run, waitForLinks, worldNamespaces } from "./netns.ts";
import { orphans, reapOrphans } from "./reaper.ts";
import { type Controller, type Place, type Pod, Proc, World, withWorld } from "./world.ts";

const NODE = process.execPath;
const PORT = 8080;

// Node one-liners, run inside namespaces: a server that greets and closes, and a client that prints
// "ok <greeting>" or "error <code>" (always exiting 0, so that failure to connect is a result).
const SERVER = `require("net").createServer((s) => s.end("hello from " + process.env.WHO))
  .listen(+process.env.PORT, () => console.log("listening"))`;
const CLIENT = `const s = require("net").connect(+process.env.PORT, process.env.HOST);
  let data = "";
  s.setTimeout(2000, () => { console.log("error ETIMEDOUT"); process.exit(); });
  s.on("data", (chunk) => (data += chunk));
  s.on("end", () => console.log("ok " + data));
  s.on("error", (err) => console.log("error " + err.code));`;

async function connect(world: World, from: Place, host: string, port = PORT): Promise<string> {
  const { stdout } = await world.exec(from, NODE, ["-e", CLIENT], { env: { HOST: host, PORT: String(port) } });
  return stdout.trim();
}

function startServer(world: World, place: Place, who: string) {
  const proc = world.spawn(place, NODE, ["-e", SERVER], {
    env: { WHO: who, PORT: String(PORT) },
    name: `server-${who}`,
  });
  return proc.waitForLine(/listening/);
}

/** Names of the root namespace's links: a world must never add any. */
function rootLinks(): string[] {
  return spawnSync("ip", ["-o", "link", "show"], { encoding: "utf8" })
    .stdout.split("\n")
    .map((l) => l.split(":")[1]);
}

/** True once `pid` has exited (a zombie counts: it holds no namespace). Waits up to `ms`. */
async function gone(pid: number, ms = 2_000): Promise<boolean> {
  for (const deadline = Date.now() + ms; Date.now() < deadline; await new Promise((r) => setTimeout(r, 20))) {
    if (!isAlive(pid)) return true;
    try {
      if (readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.startsWith("Z")) return true;
    } catch {
      return true;
    }
  }
  return false;
}

describe("a 2-node world with pods and a controller", () => {
  let world: World;
  let a: Pod; // node 1
  let b: Pod; // node 1
  let c: Pod; // node 2
  let d: Pod; // node 2
  let ctl: Controller;
  let linksBefore: string[];

  beforeAll(async () => {
    linksBefore = rootLinks();
    const start = performance.now();
    world = await World.create({ nodes: 2 });
    const [n1, n2] = world.nodes;
    [a, b, c, d] = await Promise.all([
      world.addPod(n1, "a"),
      world.addPod(n1, "b"),
      world.addPod(n2, "c"),
      world.addPod(n2, "d"),
    ]);
    console.log(`2 nodes + 4 pods built in ${(performance.now() - start).toFixed(0)} ms`);
    ctl = await world.addController();
    await Promise.all([startServer(world, b, "b"), startServer(world, c, "c"), startServer(world, ctl, "ctl")]);
  });
  afterAll(() => world?.destroy());

  it("numbers nodes and pods as documented", () => {
    expect(
      world.nodes.map(({ name, underlayIp, podCidr, gatewayIp }) => ({ name, underlayIp, podCidr, gatewayIp })),
    ).toEqual([
      { name: "node-1", underlayIp: "10.250.0.11", podCidr: "10.244.1.0/24", gatewayIp: "10.244.1.1" },
      { name: "node-2", underlayIp: "10.250.0.12", podCidr: "10.244.2.0/24", gatewayIp: "10.244.2.1" },
    ]);
    expect([a.ip, b.ip, c.ip, d.ip, ctl.ip]).toEqual([
      "10.244.1.11",
      "10.244.1.12",
      "10.244.2.11",
      "10.244.2.12",
      "10.250.0.2",
    ]);
    expect(c.netns).toMatch(new RegExp(`^nmt-${process.pid.toString(36)}-[0-9a-f]{4}-n2-c$`));
    expect(c.netnsPath).toBe(`/run/netns/${c.netns}`);
  });

  it("connects pods on the same node", async () => {
    expect(await connect(world, a, b.ip)).toBe("ok hello from b");
  });

  it("connects pods across nodes", async () => {
    expect(await connect(world, a, c.ip)).toBe("ok hello from c");
  });

  it("connects pods and the controller both ways", async () => {
    expect(await connect(world, d, ctl.ip)).toBe("ok hello from ctl");
    expect(await connect(world, ctl, b.ip)).toBe("ok hello from b");
  });

  it("keeps everything inside its namespaces", async () => {
    expect(rootLinks()).toEqual(linksBefore);
    // Route lookups only (no packet is sent): nothing but the pods has a default route, and the
    // pods' one ends at their node.
    for (const place of [world.underlay, ...world.nodes, ctl]) {
      const { code, stderr } = await world.exec(place, "ip", ["route", "get", "192.0.2.1"]);
      expect({ netns: place.netns, code, stderr }).toMatchObject({
        code: 2,
        stderr: expect.stringMatching(/unreachable/),
      });
    }
  });

  it("cannot reach a service on the root namespace's loopback", async () => {
    let accepted = 0;
    const server = createServer((socket) => {
      accepted++;
      socket.destroy();
    });
    await once(server.listen(0, "127.0.0.1"), "listening");
    try {
      const { port } = server.address() as { port: number };
      expect(await connect(world, a, "127.0.0.1", port)).toBe("error ECONNREFUSED");
      expect(accepted).toBe(0);
    } finally {
      server.close();
    }
  });

  it("does not carry service VIP traffic that nothing intercepts", async () => {
    // The packet dies at node 1, which has no route for 10.96.0.0/16.
    expect(await connect(world, a, "10.96.0.1", 80)).toMatch(/^error (EHOSTUNREACH|ENETUNREACH|ETIMEDOUT)$/);
  });

  it("runs commands with input, and kills them on timeout", async () => {
    expect(await world.exec(a, "cat", [], { input: "piped" })).toMatchObject({ code: 0, stdout: "piped" });
    await expect(world.exec(a, "sleep", ["10"], { timeoutMs: 200 })).rejects.toThrow(/timed out after 200 ms/);
    expect((await world.exec(a, "sh", ["-c", "exit 7"])).code).toBe(7);
  });

  it("reports a spawned process's output when waiting for a line fails", async () => {
    const early = world.spawn(a, "sh", ["-c", "echo starting; echo oops >&2; exit 3"], { name: "early" });
    await expect(early.waitForLine(/never/)).rejects.toThrow(/early .*exited \(code 3\).*starting\n {2}oops/s);
    expect(await early.exited).toEqual({ code: 3, signal: null });

    const slow = world.spawn(a, "sh", ["-c", "echo waiting; exec sleep 10"], { name: "slow" });
    await expect(slow.waitForLine((line) => line === "done", 200)).rejects.toThrow(
      /no line matched .* 200 ms.*waiting/s,
    );
    expect(await slow.waitForLine(/wait/)).toBe("waiting"); // lines already printed count too
    slow.kill();
    expect(await slow.exited).toEqual({ code: null, signal: "SIGTERM" });
  });

  it("removes a pod with its processes", async () => {
    const sleeper = world.spawn(d, "sleep", ["30"]);
    const untracked = world.spawn(d, "sh", ["-c", "sleep 30 & echo $!"]);
    const untrackedPid = Number(await untracked.waitForLine(/^\d+$/));
    await world.removePod(d);
    expect(sleeper.exit).toEqual({ code: null, signal: "SIGTERM" });
    expect(await gone(untrackedPid)).toBe(true);
    expect(worldNamespaces()).not.toContain(d.netns);
    expect(world.pods.map((p) => p.name)).toEqual(["a", "b", "c"]);
    expect(() => world.spawn(d, "true")).toThrow(/not a namespace of this world/);
  });
});

describe("links", () => {
  /** The bridge ports of `place` that are not forwarding yet, with their state. */
  async function portsNotForwarding(place: Place): Promise<string[]> {
    const { stdout } = await run("bridge", ["-n", place.netns, "-j", "link", "show"]);
    return (JSON.parse(stdout) as { ifname: string; state: string }[])
      .filter((port) => port.state !== "forwarding")
      .map((port) => `${port.ifname} ${port.state}`);
  }

  it("carry traffic once create, addPod and addController return: every bridge port forwards", async () => {
    // Another world's teardown holds the kernel's rtnl lock, which delays when links start carrying.
    const previous = await World.create({ nodes: 1 });
    await previous.addBareNamespaces("bare", 100, (i) => `10.1.0.${i + 1}`);
    const teardown = previous.destroy();
    try {
      await withWorld({ nodes: 2 }, async (world) => {
        const [n1, n2] = world.nodes;
        expect(await portsNotForwarding(world.underlay)).toEqual([]);
        await world.addPod(n2, "p");
        expect(await portsNotForwarding(n2)).toEqual([]);
        await world.addController();
        expect(await portsNotForwarding(world.underlay)).toEqual([]);
        const ul0 = await run("ip", ["-n", n1.netns, "-j", "link", "show", "ul0"]);
        expect(ul0.stdout).toContain('"operstate":"UP"');
      });
    } finally {
      await teardown;
    }
  });

  it("waitForLinks names the links that never come up", async () => {
    await withWorld({ nodes: 1 }, async (world) => {
      const [place] = await world.addBareNamespaces("bare", 1);
      // A veth whose peer stays down never has a carrier.
      await ipBatch(["link add e0 type veth peer name e1", "link set e0 up"], { netns: place!.netns });
      await expect(waitForLinks(place!.netns, ["e0"], 200)).rejects.toThrow(/links e0 in .* did not come up/);
    });
  });
});

describe("cleanup", () => {
  it("destroy() stops every process, deletes every namespace, and can be called again", async () => {
    const world = await World.create({ nodes: 1 });
    const pod = await world.addPod(world.nodes[0], "pod");
    const names = world.namespaces;
    expect(names).toHaveLength(3);
    // One process that ignores SIGTERM (sleep inherits the ignored signal), one that nothing tracks.
    const stubborn = world.spawn(pod, "sh", ["-c", "trap '' TERM; echo ready; sleep 30; echo survived"]);
    await stubborn.waitForLine("ready");
    const untracked = world.spawn(world.nodes[0], "sh", ["-c", "sleep 30 & echo $!"]);
    const untrackedPid = Number(await untracked.waitForLine(/^\d+$/));

    const destroying = world.destroy();
    expect(world.destroy()).toBe(destroying);
    await destroying;
    expect(stubborn.exit).toEqual({ code: null, signal: "SIGKILL" });
    expect(await gone(untrackedPid)).toBe(true);
    expect(worldNamespaces().filter((name) => names.includes(name))).toEqual([]);
    expect(world.namespaces).toEqual([]);
    await world.destroy();
    expect(() => world.spawn(pod, "true")).toThrow(/destroyed/);
  });

  it("withWorld destroys the world even when the body throws", async () => {
    let names: string[] = [];
    await expect(
      withWorld({ nodes: 2 }, async (world) => {
        await world.addPod(world.nodes[1], "pod");
        names = world.namespaces;
        throw new Error("boom");
      }),
    ).rejects.toThrow("boom");
    expect(names).toHaveLength(4);
    expect(worldNamespaces().filter((name) => names.includes(name))).toEqual([]);
  });

  it("the reaper reaps a dead owner's namespaces and spares a live owner's", async () => {
    const deadPid = spawnSync("true").pid;
    const dead = `${newWorldPrefix(deadPid)}reaped`;
    const alive = `${newWorldPrefix(process.pid)}spared`;
    spawnSync("ip", ["-batch", "-"], { input: `netns add ${dead}\nnetns add ${alive}\n` });
    let inside: Proc | undefined;
    try {
      expect(worldNamespaces()).toEqual(expect.arrayContaining([dead, alive]));
      inside = new Proc("nsenter", [`--net=/run/netns/${dead}`, "--", "sh", "-c", "echo in; exec sleep 30"]);
      await inside.waitForLine("in");

      expect(orphans()).toContain(dead);
      expect(orphans()).not.toContain(alive);
      expect(await reapOrphans()).toContain(dead);
      expect(await inside.exited).toEqual({ code: null, signal: "SIGKILL" });
      expect(worldNamespaces()).not.toContain(dead);
      expect(worldNamespaces()).toContain(alive);
    } finally {
      inside?.kill("SIGKILL");
      spawnSync("ip", ["-force", "-batch", "-"], { input: `netns del ${dead}\nnetns del ${alive}\n` });
    }
  });

  // Runs fixtures/hold-world.ts, which builds a world and never destroys it, and returns what it made.
  async function holdWorld(mode: "exit" | "wait") {
    const proc = new Proc(NODE, [new URL("fixtures/hold-world.ts", import.meta.url).pathname, mode], {
      name: "hold-world",
    });
    const made = JSON.parse(await proc.waitForLine(/^\{/)) as { namespaces: string[]; pid: number };
    return { proc, ...made };
  }

  it("an exiting process destroys its worlds", async () => {
    const { proc, namespaces, pid } = await holdWorld("exit");
    expect(namespaces).toHaveLength(3);
    expect(await proc.exited).toEqual({ code: 3, signal: null });
    expect(proc.lines).toContainEqual(expect.stringMatching(/1 world\(s\) not destroyed before exit/));
    expect(await gone(pid)).toBe(true);
    expect(worldNamespaces().filter((name) => namespaces.includes(name))).toEqual([]);
  });

  it("a process sent SIGTERM destroys its worlds, then dies of the signal", async () => {
    const { proc, namespaces, pid } = await holdWorld("wait");
    expect(worldNamespaces()).toEqual(expect.arrayContaining(namespaces));
    proc.kill("SIGTERM");
    expect(await proc.exited).toEqual({ code: null, signal: "SIGTERM" });
    expect(await gone(pid)).toBe(true);
    expect(worldNamespaces().filter((name) => namespaces.includes(name))).toEqual([]);
  });

  it("a process killed outright leaves no process behind, and the reaper deletes its namespaces", async () => {
    const { proc, namespaces, pid } = await holdWorld("wait");
    proc.kill("SIGKILL");
    await proc.exited;
    try {
      expect(await gone(pid)).toBe(true); // the parent-death signal, before the reaper has run
      expect(orphans()).toEqual(expect.arrayContaining(namespaces));
    } finally {
      expect(await reapOrphans()).toEqual(expect.arrayContaining(namespaces));
    }
    expect(worldNamespaces().filter((name) => namespaces.includes(name))).toEqual([]);
  });
});

// Pod cgroups (the eBPF interception mode): processes run in them, and they go with their pods and
// worlds — with the eBPF programs pinned for them — also when the owner died.
const ebpfUnavailable = modeUnavailable("ebpf");
describe.skipIf(ebpfUnavailable !== undefined)(
  `pod cgroups${ebpfUnavailable ? ` (skipped: ${ebpfUnavailable})` : ""}`,
  () => {
    const CLI = new URL("../../init-container/cli.ts", import.meta.url).pathname;
    const installEbpf = (world: World, pod: Pod) =>
      world.exec(pod, NODE, [CLI, "--no-enroll", "--mode=ebpf", `--cgroup=${pod.cgroup}`]);

    it("runs a pod's processes in its cgroup, and removes the cgroup and its eBPF pins with the pod and the world", async () => {
      const world = await World.create({ nodes: 1, cgroups: true });
      let cgroups: string[] = [];
      let pinDirs: string[] = [];
      try {
        const [a, b] = [await world.addPod(world.nodes[0], "a"), await world.addPod(world.nodes[0], "b")];
        cgroups = [a.cgroup!, b.cgroup!];
        const own = (await world.exec(a, "cat", ["/proc/self/cgroup"])).stdout;
        expect(own).toContain(`0::/${TEST_CGROUP_DIR}/${a.netns}\n`);
        const spawned = world.spawn(b, "sh", ["-c", "cat /proc/self/cgroup; exec sleep 30"]);
        await spawned.waitForLine(/^0::/);
        expect(spawned.lines).toContain(`0::/${TEST_CGROUP_DIR}/${b.netns}`);
        for (const pod of [a, b]) expect((await installEbpf(world, pod)).code).toBe(0);
        pinDirs = [podPinDir(a.cgroup!), podPinDir(b.cgroup!)];
        expect(pinDirs.every((dir) => existsSync(dir))).toBe(true);

        await world.removePod(a);
        expect(existsSync(cgroups[0])).toBe(false);
        expect(existsSync(pinDirs[0])).toBe(false);
        expect(existsSync(pinDirs[1])).toBe(true);
      } finally {
        await world.destroy();
      }
      expect(cgroups.filter((c) => existsSync(c))).toEqual([]);
      expect(existsSync(PIN_ROOT)).toBe(false);
    });

    it("the reaper removes a dead owner's cgroup: kills what runs there, detaches and unpins its programs", async () => {
      const deadPid = spawnSync("true").pid;
      const netns = `${newWorldPrefix(deadPid)}cg`;
      spawnSync("ip", ["netns", "add", netns]);
      const cgroup = createCgroup(netns);
      let inside: Proc | undefined;
      try {
        const r = spawnSync(
          "nsenter",
          [`--net=/run/netns/${netns}`, NODE, CLI, "--no-enroll", "--mode=ebpf", `--cgroup=${cgroup}`],
          {
            encoding: "utf8",
          },
        );
        expect(r.status, r.stderr).toBe(0);
        inside = new Proc("setpriv", [
          "--pdeathsig",
          "KILL",
          "--",
          ...enterCgroupArgs(cgroup),
          "sh",
          "-c",
          "echo in; exec sleep 30",
        ]);
        await inside.waitForLine("in");
        expect(orphanCgroups()).toContain(cgroup);

        const reaped = await reapOrphans();
        expect(reaped).toEqual(expect.arrayContaining([netns, cgroup]));
        expect(await inside.exited).toEqual({ code: null, signal: "SIGKILL" });
        expect(existsSync(cgroup)).toBe(false);
        expect(existsSync(PIN_ROOT)).toBe(false);
      } finally {
        inside?.kill("SIGKILL");
        spawnSync("ip", ["-force", "netns", "del", netns]);
        await removeCgroup(cgroup).catch(() => {});
      }
    });
  },
);
