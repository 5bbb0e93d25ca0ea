// The eBPF mode's loader against the real kernel: `nodemesh init --mode ebpf` in a throwaway network
// namespace (nmi-*) with a throwaway cgroup, checked with bpftool and with real connections. The
// agent's side is played by this process: a listener made with the agent's own calls
// (agent/sys/linux.ts) and getsockopt(SO_ORIGINAL_DST) on what it accepts.
import { execFile, execFileSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmdirSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import { bindListenerFd, connectableFd, Netns, originalDst, socketFd } from "../agent/sys/linux.ts";
import { modeUnavailable } from "../test/e2e/modes.ts";
import { createCgroup, enterCgroupArgs, removeCgroup, withCgroup } from "../test/world/cgroup.ts";
import { newWorldPrefix } from "../test/world/netns.ts";
import { cgroup2Root, cgroupId, NODE_PIN_DIR, PIN_ROOT, podPinDir } from "./ebpf.ts";
import { NODE_CONFIG_SIZE, POD_CONFIG_SIZE } from "./ebpf-maps.ts";
import { init, iptablesSave, run, withNamespaces } from "./testing/netns.ts";

const BPF_DIR = new URL("../bpf/", import.meta.url).pathname;
const POD_CGROUP = new URL("./pod-cgroup.ts", import.meta.url).pathname;
const INIT_CLI = new URL("./cli.ts", import.meta.url).pathname;
const execFileAsync = promisify(execFile);
/** Connects an IPv6 socket to ::ffff:10.1.2.3:9443 and prints the peer it sees. */
const V6_CLIENT = `const s = require("net").connect({ port: 9443, host: "::ffff:10.1.2.3" });
s.on("connect", () => { console.log(s.remoteAddress + " " + s.remotePort); s.destroy(); });
s.on("error", (e) => console.log("error " + e.code));`;
const unavailable = modeUnavailable("ebpf");

function bpftool(...args: string[]): unknown {
  const out = execFileSync("bpftool", ["-j", ...args], { encoding: "utf8" }).trim();
  return out ? JSON.parse(out) : null;
}

/** "type name" of every program attached to the cgroup. */
function attached(cgroup: string): string[] {
  return ((bpftool("cgroup", "show", cgroup) as { attach_type: string; name: string }[] | null) ?? [])
    .map((p) => `${p.attach_type} ${p.name}`)
    .sort();
}

/** Every nodemesh program attached anywhere in the cgroup v2 hierarchy. */
function nodemeshAttachments(): string[] {
  const tree = (bpftool("cgroup", "tree") as { cgroup: string; programs: { name: string }[] }[] | null) ?? [];
  return tree.flatMap((c) => c.programs.filter((p) => p.name.startsWith("nm_")).map((p) => `${c.cgroup} ${p.name}`));
}

/** A cgroup named like a world's (the reaper removes it if this process dies), removed after fn. */
async function withCgroupDir<T>(fn: (cgroup: string) => Promise<T>): Promise<T> {
  const cgroup = createCgroup(`${newWorldPrefix()}ebpf`);
  try {
    return await fn(cgroup);
  } finally {
    await removeCgroup(cgroup);
  }
}

/** A listener on 0.0.0.0:15001 inside the namespace, owned by this process as the agent's is. */
async function agentListener(ns: Netns): Promise<net.Server> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen({ fd: bindListenerFd(ns, 15001) }, resolve));
  return server;
}

/** Connects from a socket of the cgroup (and of the namespace), with an optional SO_MARK. */
function connectAs(cgroup: string, ns: Netns, ip: string, port: number, mark = 0): Promise<net.Socket> {
  const socket = new net.Socket({
    fd: withCgroup(cgroup, () => connectableFd(ns, mark)),
    readable: true,
    writable: true,
  });
  return new Promise((resolve, reject) => {
    socket.once("connect", () => resolve(socket));
    socket.once("error", reject);
    socket.connect(port, ip);
  });
}

describe.skipIf(unavailable !== undefined)(
  `nodemesh init --mode ebpf${unavailable ? ` (skipped: ${unavailable})` : ""}`,
  () => {
    const tmp = mkdtempSync(join(tmpdir(), "nodemesh-ebpf-test-"));
    afterAll(() => rmSync(tmp, { recursive: true, force: true }));

    it("loads, pins and attaches; a second run keeps the programs and rewrites the exclusions; --uninstall removes all", async () => {
      await withNamespaces(1, async (ns) => {
        await withCgroupDir(async (cgroup) => {
          const podDir = podPinDir(cgroup);
          const first = await init(ns, ["--no-enroll", "--mode=ebpf", `--cgroup=${cgroup}`]);
          expect(first.code, first.stderr).toBe(0);
          expect(attached(cgroup)).toEqual([
            "cgroup_inet4_connect nm_connect4",
            "cgroup_inet4_getpeername nm_getpeername4",
            "cgroup_inet6_connect nm_connect6",
            "cgroup_inet6_getpeername nm_getpeername6",
            "cgroup_sock_ops nm_sockops",
          ]);
          expect(nodemeshAttachments()).toContainEqual(expect.stringMatching(/ nm_getsockopt$/));
          const pins = ["nm_connect4", "nm_connect6", "nm_sockops", "nm_getpeername4", "nm_getpeername6"];
          for (const pin of [...pins, "nm_pod_config", "nm_cookie_dst"]) {
            expect(existsSync(join(podDir, pin)), pin).toBe(true);
          }
          // The maps hold what the loader encodes (bpf/nodemesh.h and ebpf-maps.ts agree).
          const podMap = bpftool("map", "show", "pinned", join(podDir, "nm_pod_config")) as { bytes_value: number };
          const nodeMap = bpftool("map", "show", "pinned", join(NODE_PIN_DIR, "nm_node_config")) as {
            bytes_value: number;
          };
          expect([podMap.bytes_value, nodeMap.bytes_value]).toEqual([POD_CONFIG_SIZE, NODE_CONFIG_SIZE]);
          // Inbound stays with iptables; outbound is the programs'.
          const nat = await iptablesSave(ns, "nat");
          expect(nat).toContain("-j NODEMESH_INBOUND");
          expect(nat).not.toContain("NODEMESH_OUTPUT");

          const ids = bpftool("cgroup", "show", cgroup);
          const second = await init(ns, [
            "--no-enroll",
            "--mode=ebpf",
            `--cgroup=${cgroup}`,
            "--exclude-outbound-ports=22",
          ]);
          expect(second.code, second.stderr).toBe(0);
          expect(second.stderr).toContain("already on");
          expect(bpftool("cgroup", "show", cgroup)).toEqual(ids);
          const value = bpftool(
            "map",
            "lookup",
            "pinned",
            join(podDir, "nm_pod_config"),
            "key",
            "0",
            "0",
            "0",
            "0",
          ) as {
            formatted?: { value: { n_ports: number } };
          };
          expect(value.formatted?.value.n_ports).toBe(1);

          const off = await init(ns, ["--no-enroll", "--uninstall", `--cgroup=${cgroup}`]);
          expect(off.code, off.stderr).toBe(0);
          expect(attached(cgroup)).toEqual([]);
          expect(nodemeshAttachments()).toEqual([]);
          expect(existsSync(PIN_ROOT)).toBe(false);
          expect(await iptablesSave(ns, "nat")).not.toContain("NODEMESH");
          const again = await init(ns, ["--no-enroll", "--uninstall", `--cgroup=${cgroup}`]);
          expect(again.code, again.stderr).toBe(0);
        });
      });
    });

    it("redirects the cgroup's connections and answers SO_ORIGINAL_DST; excluded ports and the agent's marked sockets pass", async () => {
      await withNamespaces(1, async (name) => {
        await withCgroupDir(async (cgroup) => {
          const r = await init(name, [
            "--no-enroll",
            "--mode=ebpf",
            `--cgroup=${cgroup}`,
            "--exclude-outbound-ports=22",
          ]);
          expect(r.code, r.stderr).toBe(0);
          const ns = Netns.open(`/run/netns/${name}`);
          const server = await agentListener(ns);
          const accepted: { ip: string; port: number }[] = [];
          server.on("connection", (socket) => {
            accepted.push(originalDst(socketFd(socket)));
            socket.destroy();
          });
          try {
            // Nothing routes 10.1.2.3 in this namespace: only a redirect can connect.
            const ports = [80, 443, 8080];
            const sockets = await Promise.all(ports.map((port) => connectAs(cgroup, ns, "10.1.2.3", port)));
            // The app's getpeername() shows what it connected to (nm_getpeername4), as REDIRECT does.
            expect(sockets.map((s) => `${s.remoteAddress}:${s.remotePort}`)).toEqual(
              ports.map((port) => `10.1.2.3:${port}`),
            );
            // The connections really end at the agent's listener.
            expect(sockets.map((s) => s.localAddress)).toEqual(["127.0.0.1", "127.0.0.1", "127.0.0.1"]);
            for (let i = 0; accepted.length < 3 && i < 100; i++) await new Promise((res) => setTimeout(res, 20));
            expect(accepted.sort((a, b) => a.port - b.port)).toEqual([
              { ip: "10.1.2.3", port: 80 },
              { ip: "10.1.2.3", port: 443 },
              { ip: "10.1.2.3", port: 8080 },
            ]);
            for (const s of sockets) s.destroy();
            // An IPv6 socket to an IPv4-mapped address (a dual-stack app), from a process of the pod.
            const [sh, ...shArgs] = enterCgroupArgs(cgroup);
            const v6 = await execFileAsync(
              sh,
              [...shArgs, "nsenter", `--net=/run/netns/${name}`, process.execPath, "-e", V6_CLIENT],
              { encoding: "utf8", timeout: 10_000 },
            );
            expect(v6.stdout.trim(), v6.stderr).toBe("::ffff:10.1.2.3 9443");
            for (let i = 0; accepted.length < 4 && i < 100; i++) await new Promise((res) => setTimeout(res, 20));
            expect(accepted[3]).toEqual({ ip: "10.1.2.3", port: 9443 });
            await expect(connectAs(cgroup, ns, "10.1.2.3", 22)).rejects.toThrow(/ENETUNREACH/);
            await expect(connectAs(cgroup, ns, "10.1.2.3", 80, 0x539)).rejects.toThrow(/ENETUNREACH/);
            // A process outside the pod's cgroup is not the pod's: not redirected.
            await expect(
              new Promise((resolve, reject) =>
                new net.Socket({ fd: connectableFd(ns, 0), readable: true, writable: true })
                  .once("connect", resolve)
                  .once("error", reject)
                  .connect(80, "10.1.2.3"),
              ),
            ).rejects.toThrow(/ENETUNREACH/);
          } finally {
            server.close();
            ns.close();
            await init(name, ["--no-enroll", "--uninstall", `--cgroup=${cgroup}`]);
          }
        });
      });
    });

    it("--cgroup parent: the pod's cgroup found from a container's cgroup under it, by path and, in a cgroup namespace of its own, by inode", async () => {
      await withNamespaces(1, async (name) => {
        await withCgroupDir(async (pod) => {
          const container = join(pod, "init");
          mkdirSync(container);
          const mountPoint = mkdtempSync(join(tmp, "cgroupns-"));
          try {
            const [sh, ...shArgs] = enterCgroupArgs(container);
            const find = (ownMount?: string) =>
              `import(${JSON.stringify(POD_CGROUP)}).then((m) => console.log(m.parentCgroup(${JSON.stringify({ hierarchy: cgroup2Root(), ...(ownMount ? { ownMount } : {}) })})))`;
            const byPath = await execFileAsync(sh, [...shArgs, process.execPath, "-e", find()], { encoding: "utf8" });
            expect(byPath.stdout.trim()).toBe(pod);
            // A cgroup namespace of its own, rooted at the container's cgroup, mounted as a runtime does.
            const inNamespace = await execFileAsync(
              sh,
              [
                ...shArgs,
                "unshare",
                "--cgroup",
                "--mount",
                "sh",
                "-c",
                'mount -t cgroup2 none "$0" && grep "^0::" /proc/self/cgroup && exec "$@"',
                mountPoint,
                process.execPath,
                "-e",
                find(mountPoint),
              ],
              { encoding: "utf8" },
            );
            expect(inNamespace.stdout.trim().split("\n")).toEqual(["0::/", pod]);
            // The whole init, run from the container's cgroup: the programs land on the pod's.
            const r = await run(name, [
              ...enterCgroupArgs(container),
              process.execPath,
              INIT_CLI,
              "--no-enroll",
              "--mode=ebpf",
              "--cgroup=parent",
            ]);
            expect(r.code, r.stderr).toBe(0);
            expect(attached(pod)).toHaveLength(5);
            expect(attached(container)).toEqual([]);
            const off = await init(name, ["--no-enroll", "--uninstall", `--cgroup=${pod}`]);
            expect(off.code, off.stderr).toBe(0);
          } finally {
            rmSync(mountPoint, { recursive: true, force: true });
            rmdirSync(container);
          }
        });
      });
    });

    it("--dry-run --mode ebpf prints the inbound-only rules and what it would load, changing nothing", async () => {
      await withNamespaces(1, async (ns) => {
        await withCgroupDir(async (cgroup) => {
          const r = await init(ns, ["--dry-run", "--mode=ebpf", `--cgroup=${cgroup}`]);
          expect(r.code, r.stderr).toBe(0);
          expect(r.stdout).toContain("-j NODEMESH_INBOUND");
          expect(r.stdout).not.toContain("NODEMESH_OUTPUT");
          expect(r.stderr).toContain(
            `would load bpf/redirect.bpf.o under ${PIN_ROOT}/pods/<cgroup id>/ and attach it to ${cgroup}`,
          );
          expect(attached(cgroup)).toEqual([]);
          expect(existsSync(PIN_ROOT)).toBe(false);
          expect(await iptablesSave(ns, "nat")).not.toContain("NODEMESH");
        });
      });
    });

    it("--uninstall of a pod whose cgroup is gone removes its pins (attached nowhere), and the node's with them", async () => {
      await withNamespaces(1, async (ns) => {
        let podDir = "";
        await withCgroupDir(async (cgroup) => {
          const r = await init(ns, ["--no-enroll", "--mode=ebpf", `--cgroup=${cgroup}`]);
          expect(r.code, r.stderr).toBe(0);
          podDir = podPinDir(cgroup);
          rmdirSync(cgroup); // the kubelet removed the pod's cgroup first
          expect(existsSync(podDir)).toBe(true);
          const off = await init(ns, ["--no-enroll", "--uninstall", `--cgroup=${cgroup}`]);
          expect(off.code, off.stderr).toBe(0);
          expect(off.stderr).toContain("is gone (and its attachments with it); stale eBPF pins removed");
        });
        expect(existsSync(podDir)).toBe(false);
        expect(existsSync(PIN_ROOT)).toBe(false);
        expect(nodemeshAttachments()).toEqual([]);
      });
    });

    it("serializes concurrent installs and uninstalls of several pods (a lock in bpffs), leaving nothing", async () => {
      await withNamespaces(1, async (ns) => {
        const cgroups = Array.from({ length: 5 }, (_, i) => createCgroup(`${newWorldPrefix()}ebpf-${i}`));
        try {
          const installs = await Promise.all(
            cgroups.map((cgroup) => init(ns, ["--no-enroll", "--mode=ebpf", `--cgroup=${cgroup}`])),
          );
          for (const r of installs) expect(r.code, r.stderr).toBe(0);
          for (const cgroup of cgroups) expect(attached(cgroup)).toHaveLength(5);
          expect(nodemeshAttachments().filter((a) => a.endsWith(" nm_getsockopt"))).toHaveLength(1);
          const removals = await Promise.all(
            cgroups.map((cgroup) => init(ns, ["--no-enroll", "--uninstall", `--cgroup=${cgroup}`])),
          );
          for (const r of removals) expect(r.code, r.stderr).toBe(0);
          expect(nodemeshAttachments()).toEqual([]);
          expect(existsSync(PIN_ROOT)).toBe(false);
        } finally {
          for (const cgroup of cgroups) await removeCgroup(cgroup);
        }
      });
    });

    it("refuses a directory that is not a cgroup v2, naming it and the iptables mode, and changes nothing", async () => {
      await withNamespaces(1, async (ns) => {
        const r = await init(ns, ["--no-enroll", "--mode=ebpf", `--cgroup=${tmp}`]);
        expect(r.code).toBe(1);
        expect(r.stderr).toContain("[ebpf_unsupported]");
        expect(r.stderr).toContain(`--cgroup ${tmp} is not a cgroup v2 directory`);
        expect(r.stderr).toContain("--mode iptables");
        expect(await iptablesSave(ns, "nat")).not.toContain("NODEMESH");
        expect(existsSync(PIN_ROOT)).toBe(false);
      });
    });

    it("rolls back a load that fails half-way: nothing stays attached or pinned", async () => {
      // The node's object loads; the pod's is one without its maps, so the install fails after.
      const objects = join(tmp, "objects");
      execFileSync("mkdir", ["-p", objects]);
      copyFileSync(join(BPF_DIR, "origdst.bpf.o"), join(objects, "origdst.bpf.o"));
      copyFileSync(join(BPF_DIR, "origdst.bpf.o"), join(objects, "redirect.bpf.o"));
      writeFileSync(join(objects, "README"), "redirect.bpf.o is origdst.bpf.o: a load without nm_pod_config\n");
      await withNamespaces(1, async (ns) => {
        await withCgroupDir(async (cgroup) => {
          const r = await init(ns, ["--no-enroll", "--mode=ebpf", `--cgroup=${cgroup}`], { NODEMESH_BPF_DIR: objects });
          expect(r.code).toBe(1);
          expect(r.stderr).toContain("[ebpf_failed]");
          expect(r.stderr).toContain("no map nm_pod_config");
          expect(attached(cgroup)).toEqual([]);
          expect(nodemeshAttachments()).toEqual([]);
          expect(existsSync(podPinDir(cgroup))).toBe(false);
          expect(existsSync(NODE_PIN_DIR)).toBe(false);
          expect(await iptablesSave(ns, "nat")).not.toContain("NODEMESH");
          expect(cgroupId(cgroup)).toBeGreaterThan(0);
        });
      });
    });
  },
);
