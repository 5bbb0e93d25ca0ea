// The eBPF mode's loader: loads the prebuilt objects of bpf/ with bpftool (Debian's, driven through
// execFile as iptables-restore is: no ELF parsing here), pins them under /sys/fs/bpf/nodemesh/,
// attaches them to cgroups (v2) and fills their config maps.
//
//   /sys/fs/bpf/nodemesh/node/            one per node, made by the first pod's install and removed
//     nm_getsockopt                       with the last pod's uninstall; nm_getsockopt is attached
//     nm_node_config, nm_tuple_dst        where the agent's getsockopt() calls run (--agent-cgroup,
//                                         default the root of the cgroup v2 hierarchy)
//   /sys/fs/bpf/nodemesh/pods/<cgroup id>/  one per pod (the id is the inode number of its cgroup
//     nm_connect4, nm_connect6,           directory); all five attached to the pod's cgroup (--cgroup)
//     nm_sockops, nm_getpeername4,
//     nm_getpeername6
//     nm_pod_config, nm_cookie_dst        (and sharing the node's nm_tuple_dst)
//
// Every change happens under a lock (a directory in bpffs, so it is shared by every init container
// of the node), is idempotent, and a failed install is rolled back: nothing stays attached or pinned
// half-way. Attachments are found again with `bpftool cgroup tree` by program id, so an uninstall
// detaches them wherever they are.
import { execFile } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, rmSync, statfsSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { hexWords, nodeConfigValue, podConfigValue, ZERO_KEY } from "./ebpf-maps.ts";
import { INIT_ERROR_CODES, InitError } from "./errors.ts";
import type { RedirectConfig } from "./rules.ts";

export const BPF_FS = "/sys/fs/bpf";
export const PIN_ROOT = `${BPF_FS}/nodemesh`;
export const NODE_PIN_DIR = `${PIN_ROOT}/node`;
export const PODS_PIN_DIR = `${PIN_ROOT}/pods`;
/** bpffs refuses names with a dot. */
const LOCK_DIR = `${PIN_ROOT}/lock`;
/** A lock older than this was left by a killed init: taken over. */
const STALE_LOCK_MS = 30_000;
const LOCK_WAIT_MS = 60_000;

const BPF_FS_MAGIC = 0xcafe4a11;
const CGROUP2_SUPER_MAGIC = 0x63677270;
const KERNEL_BTF = "/sys/kernel/btf/vmlinux";

/** Each program we attach, and the cgroup attach type bpftool names it by. */
const ATTACH_TYPES: Record<string, string> = {
  nm_connect4: "cgroup_inet4_connect",
  nm_connect6: "cgroup_inet6_connect",
  nm_sockops: "cgroup_sock_ops",
  nm_getpeername4: "cgroup_inet4_getpeername",
  nm_getpeername6: "cgroup_inet6_getpeername",
  nm_getsockopt: "cgroup_getsockopt",
};
const POD_PROGRAMS = ["nm_connect4", "nm_connect6", "nm_sockops", "nm_getpeername4", "nm_getpeername6"];
const POD_MAPS = ["nm_pod_config", "nm_cookie_dst"];
const NODE_MAPS = ["nm_node_config", "nm_tuple_dst"];

export interface EbpfTarget {
  /** The pod's cgroup (v2) directory, e.g. /sys/fs/cgroup/kubepods.slice/…/pod<uid>. */
  cgroup: string;
  /** Where the agent's getsockopt() calls run; default the root of the cgroup v2 hierarchy. */
  agentCgroup?: string;
  /** The prebuilt objects; default bpf/ of this checkout (or NODEMESH_BPF_DIR). */
  objectsDir?: string;
}

export interface EbpfInstall {
  podDir: string;
  /** false: the programs were already attached, only the config map was rewritten. */
  loaded: boolean;
}

/** Installs (or, when already there, updates the exclusions of) a pod's programs. */
export async function installEbpf(
  config: RedirectConfig,
  localAddresses: readonly string[],
  target: EbpfTarget,
): Promise<EbpfInstall> {
  const value = podConfigValue(config, localAddresses); // refuses too many exclusions before anything
  const objects = objectsDir(target);
  preflight(target.cgroup, objects);
  const agentCgroup = target.agentCgroup ?? cgroup2Root();
  preflightCgroup(agentCgroup, "--agent-cgroup");
  const podDir = podPinDir(target.cgroup);
  return withLock(async () => {
    // Rolled back on failure: only what this run made (an update of a working install keeps it).
    let podLoading = false;
    try {
      await ensureNode(objects, agentCgroup);
      if (await podAttached(podDir, target.cgroup)) {
        await updateMap(join(podDir, "nm_pod_config"), value);
        return { podDir, loaded: false };
      }
      podLoading = true;
      await removePodPins(podDir); // what a killed install left
      await loadPinned(join(objects, "redirect.bpf.o"), podDir, POD_MAPS, {
        nm_tuple_dst: join(NODE_PIN_DIR, "nm_tuple_dst"),
      });
      await updateMap(join(podDir, "nm_pod_config"), value);
      for (const prog of POD_PROGRAMS) await attach(target.cgroup, join(podDir, prog), prog);
      return { podDir, loaded: true };
    } catch (err) {
      if (podLoading) await removePodPins(podDir).catch(() => {});
      // The node's part serves pods only: with none left (this one failed) it goes, whoever loaded it.
      if (!hasPods()) await removeNodePins().catch(() => {});
      throw await explain(err);
    }
  });
}

/**
 * Detaches and unpins the pod's programs (nothing to do when they are not there); the node's
 * program goes with the last pod. Returns whether the pod had programs.
 */
export async function uninstallEbpf(cgroup: string): Promise<boolean> {
  if (!existsSync(PIN_ROOT)) return false;
  // A cgroup removed before its pod was uninstalled took its attachments with it; what is left of
  // it are pins attached nowhere, which is what removeStalePods finds.
  if (!existsSync(cgroup)) return (await removeStalePods()).length > 0;
  return uninstallEbpfById(cgroupId(cgroup));
}

/**
 * Removes the pins of every pod whose programs are attached nowhere (its cgroup is gone, or an
 * install was killed half-way and never rolled back), and the node's with the last pod. Returns
 * their ids.
 */
export async function removeStalePods(): Promise<number[]> {
  if (!existsSync(PIN_ROOT)) return [];
  const removed = await withLock(async () => {
    const attachedIds = new Set((await attachments()).map((a) => a.id));
    const stale: number[] = [];
    for (const id of pinnedPodIds()) {
      const dir = join(PODS_PIN_DIR, String(id));
      const ids = await Promise.all(
        POD_PROGRAMS.filter((prog) => existsSync(join(dir, prog))).map((prog) => progId(join(dir, prog))),
      );
      if (ids.some((pid) => attachedIds.has(pid))) continue;
      await removePodPins(dir);
      stale.push(id);
    }
    if (!hasPods()) await removeNodePins();
    removeEmptyPodsDir();
    return stale;
  });
  removeEmptyRoot();
  return removed;
}

/** uninstallEbpf by cgroup id, for a cgroup that may be gone already (the test world's reaper). */
export async function uninstallEbpfById(id: number): Promise<boolean> {
  if (!existsSync(PIN_ROOT)) return false;
  const podDir = join(PODS_PIN_DIR, String(id));
  const had = await withLock(async () => {
    const present = existsSync(podDir);
    await removePodPins(podDir);
    if (!hasPods()) await removeNodePins();
    removeEmptyPodsDir();
    return present;
  });
  removeEmptyRoot();
  return had;
}

/** Under the lock (only holders change what is under pods/). */
function removeEmptyPodsDir(): void {
  try {
    rmdirSync(PODS_PIN_DIR);
  } catch {}
}

/**
 * After the lock is released: the last one out removes /sys/fs/bpf/nodemesh. It is empty only
 * when nobody holds the lock; one about to take it retries (withLock treats ENOENT so).
 */
function removeEmptyRoot(): void {
  try {
    rmdirSync(PIN_ROOT);
  } catch {}
}

/** The ids (cgroup inode numbers) of the pods that have programs pinned on this node. */
export function pinnedPodIds(): number[] {
  try {
    return readdirSync(PODS_PIN_DIR)
      .filter((name) => /^\d+$/.test(name))
      .map(Number);
  } catch {
    return [];
  }
}

/** A cgroup's id: the inode number of its directory (what bpf_get_current_cgroup_id answers). */
export function cgroupId(cgroup: string): number {
  return statSync(cgroup).ino;
}

export function podPinDir(cgroup: string): string {
  return join(PODS_PIN_DIR, String(cgroupId(cgroup)));
}

/** The mount point of the cgroup v2 hierarchy (/sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid hosts). */
export function cgroup2Root(): string {
  const mounts = readFileSync("/proc/self/mounts", "utf8").split("\n");
  const line = mounts.find((l) => l.split(" ")[2] === "cgroup2");
  if (!line) throw unsupported("no cgroup v2 hierarchy is mounted (mount -t cgroup2 none /sys/fs/cgroup)");
  return line.split(" ")[1];
}

// ---------------------------------------------------------------------------------------------
// Steps

async function ensureNode(objects: string, agentCgroup: string): Promise<void> {
  const prog = join(NODE_PIN_DIR, "nm_getsockopt");
  if (existsSync(prog)) {
    const id = await progId(prog);
    if ((await attachments()).some((a) => a.id === id)) return;
    await attach(agentCgroup, prog, "nm_getsockopt"); // pinned by a killed install, never attached
    return;
  }
  // The shared map outlives a lost program pin only if pods still hold it: keep using it then.
  const tuple = join(NODE_PIN_DIR, "nm_tuple_dst");
  const reuse: Record<string, string> = existsSync(tuple) ? { nm_tuple_dst: tuple } : {};
  const pinMaps = NODE_MAPS.filter((name) => !(name in reuse));
  for (const name of pinMaps) rmSync(join(NODE_PIN_DIR, name), { force: true }); // a killed load's
  await loadPinned(join(objects, "origdst.bpf.o"), NODE_PIN_DIR, pinMaps, reuse);
  await updateMap(join(NODE_PIN_DIR, "nm_node_config"), nodeConfigValue());
  await attach(agentCgroup, prog, "nm_getsockopt");
}

/**
 * `bpftool prog loadall` pins the object's programs in `dir`; its own maps named in `pinMaps` are
 * then pinned beside them (by id: `pinmaps` would also try to pin the reused ones), and `reuse`
 * maps a map name to an existing pin the programs share instead of a new map.
 */
async function loadPinned(object: string, dir: string, pinMaps: string[], reuse: Record<string, string>) {
  mkdirSync(dirname(dir), { recursive: true });
  const mapArgs = Object.entries(reuse).flatMap(([name, pin]) => ["map", "name", name, "pinned", pin]);
  await bpftool(["prog", "loadall", object, dir, ...mapArgs]);
  const mapIds = new Set<number>();
  for (const name of readdirSync(dir)) {
    for (const id of ((await bpftoolJson(["prog", "show", "pinned", join(dir, name)])) as { map_ids?: number[] })
      .map_ids ?? [])
      mapIds.add(id);
  }
  for (const id of mapIds) {
    const { name } = (await bpftoolJson(["map", "show", "id", String(id)])) as { name: string };
    if (pinMaps.includes(name)) await bpftool(["map", "pin", "id", String(id), join(dir, name)]);
  }
  const missing = pinMaps.filter((name) => !existsSync(join(dir, name)));
  if (missing.length > 0) throw new InitError(INIT_ERROR_CODES.EBPF_FAILED, `${object}: no map ${missing.join(", ")}`);
}

async function updateMap(pin: string, value: Buffer): Promise<void> {
  await bpftool(["map", "update", "pinned", pin, "key", "hex", ...ZERO_KEY, "value", "hex", ...hexWords(value)]);
}

async function attach(cgroup: string, pin: string, prog: string): Promise<void> {
  await bpftool(["cgroup", "attach", cgroup, ATTACH_TYPES[prog], "pinned", pin, "multi"]);
}

/** Both pod programs are pinned and attached to `cgroup`. */
async function podAttached(podDir: string, cgroup: string): Promise<boolean> {
  if (![...POD_PROGRAMS, ...POD_MAPS].every((name) => existsSync(join(podDir, name)))) return false;
  const attached = new Set(
    ((await bpftoolJson(["cgroup", "show", cgroup])) as { id: number }[] | null)?.map((p) => p.id),
  );
  for (const prog of POD_PROGRAMS) if (!attached.has(await progId(join(podDir, prog)))) return false;
  return true;
}

/** Detaches the pinned programs of `dir` from every cgroup they are attached to, then unpins all. */
async function removePins(dir: string): Promise<void> {
  if (!existsSync(dir)) return;
  const ids = new Map<number, string>();
  for (const prog of Object.keys(ATTACH_TYPES)) {
    if (existsSync(join(dir, prog))) ids.set(await progId(join(dir, prog)), prog);
  }
  if (ids.size > 0) {
    for (const a of await attachments()) {
      const prog = ids.get(a.id);
      if (prog) await bpftool(["cgroup", "detach", a.cgroup, ATTACH_TYPES[prog], "id", String(a.id)]);
    }
  }
  rmSync(dir, { recursive: true, force: true });
}

function removePodPins(podDir: string): Promise<void> {
  return removePins(podDir);
}

function removeNodePins(): Promise<void> {
  return removePins(NODE_PIN_DIR);
}

function hasPods(): boolean {
  return pinnedPodIds().length > 0;
}

interface Attachment {
  cgroup: string;
  id: number;
}

/** Every cgroup program attachment of the cgroup v2 hierarchy. */
async function attachments(): Promise<Attachment[]> {
  const tree = (await bpftoolJson(["cgroup", "tree", cgroup2Root()])) as
    | { cgroup: string; programs: { id: number }[] }[]
    | null;
  return (tree ?? []).flatMap(({ cgroup, programs }) => programs.map(({ id }) => ({ cgroup, id })));
}

async function progId(pin: string): Promise<number> {
  return ((await bpftoolJson(["prog", "show", "pinned", pin])) as { id: number }).id;
}

// ---------------------------------------------------------------------------------------------
// Checks and errors

function objectsDir(target: EbpfTarget): string {
  if (target.objectsDir) return target.objectsDir;
  if (process.env.NODEMESH_BPF_DIR) return process.env.NODEMESH_BPF_DIR;
  // From source (init-container/) or compiled (dist/init-container/): bpf/ of the checkout.
  const candidates = ["../bpf/", "../../bpf/"].map((rel) => new URL(rel, import.meta.url).pathname);
  return candidates.find((dir) => existsSync(join(dir, "redirect.bpf.o"))) ?? candidates[0];
}

/** What the eBPF mode needs of this machine, checked before anything is changed. */
function preflight(cgroup: string, objects: string): void {
  const missing: string[] = [];
  if (fsType(BPF_FS) !== BPF_FS_MAGIC) missing.push(`a BPF filesystem at ${BPF_FS} (mount -t bpf bpf ${BPF_FS})`);
  if (!existsSync(KERNEL_BTF)) missing.push(`kernel BTF at ${KERNEL_BTF} (CONFIG_DEBUG_INFO_BTF=y)`);
  for (const name of ["redirect.bpf.o", "origdst.bpf.o"]) {
    if (!existsSync(join(objects, name))) missing.push(`the prebuilt object ${join(objects, name)} (make bpf)`);
  }
  if (missing.length > 0) throw unsupported(missing.join("; "));
  preflightCgroup(cgroup, "--cgroup");
}

function preflightCgroup(cgroup: string, flag: string): void {
  if (fsType(cgroup) !== CGROUP2_SUPER_MAGIC || !statSync(cgroup).isDirectory()) {
    throw unsupported(`${flag} ${cgroup} is not a cgroup v2 directory`);
  }
}

function fsType(path: string): number | undefined {
  try {
    return Number(statfsSync(path).type);
  } catch {
    return undefined;
  }
}

/** After a failed bpftool call: name what the kernel lacks, if a probe finds it. */
async function explain(err: unknown): Promise<unknown> {
  if (!(err instanceof InitError) || err.code !== INIT_ERROR_CODES.EBPF_FAILED) return err;
  const lacking = await kernelLacks().catch(() => []);
  if (lacking.length === 0) return err;
  return unsupported(`this kernel lacks ${lacking.join(", ")} (${err.message})`, err);
}

/** Program types and helpers the objects need that `bpftool feature probe kernel` does not find. */
async function kernelLacks(): Promise<string[]> {
  const probe = (await bpftoolJson(["feature", "probe", "kernel"])) as {
    program_types?: Record<string, boolean>;
    helpers?: Record<string, string[]>;
  };
  const lacking: string[] = [];
  const needs: Record<string, string[]> = {
    cgroup_sock_addr: ["bpf_get_socket_cookie"],
    sock_ops: ["bpf_get_socket_cookie", "bpf_get_netns_cookie"],
    cgroup_sockopt: ["bpf_get_netns_cookie"],
  };
  for (const [type, helpers] of Object.entries(needs)) {
    if (!probe.program_types?.[`have_${type}_prog_type`]) {
      lacking.push(`the ${type} program type`);
      continue;
    }
    const available = probe.helpers?.[`${type}_available_helpers`] ?? [];
    for (const helper of helpers) if (!available.includes(helper)) lacking.push(`${helper} in ${type} programs`);
  }
  return lacking;
}

function unsupported(what: string, cause?: unknown): InitError {
  return new InitError(
    INIT_ERROR_CODES.EBPF_UNSUPPORTED,
    `the eBPF mode cannot run here: ${what}. Use --mode iptables instead (the default)`,
    cause ? { cause } : undefined,
  );
}

// ---------------------------------------------------------------------------------------------
// bpftool and the lock

function bpftool(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile("bpftool", args, { maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (!err) return resolve(stdout);
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOENT") {
        return reject(unsupported("bpftool is not installed (Debian: apt-get install bpftool)", err));
      }
      const details = `${stderr}`
        .replace(/^libbpf: /gm, "")
        .trim()
        .split("\n")
        .slice(-6)
        .join("; ");
      reject(new InitError(INIT_ERROR_CODES.EBPF_FAILED, `bpftool ${short(args)} failed: ${details}`, { cause: err }));
    });
  });
}

async function bpftoolJson(args: string[]): Promise<unknown> {
  return JSON.parse((await bpftool(["-j", ...args])) || "null");
}

/** The command without the map bytes, for messages. */
function short(args: string[]): string {
  const at = args.indexOf("value");
  return (at >= 0 ? [...args.slice(0, at), "value …"] : args).join(" ");
}

async function withLock<T>(body: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    try {
      mkdirSync(PIN_ROOT, { recursive: true });
      mkdirSync(LOCK_DIR);
      break;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOENT") continue; // PIN_ROOT was removed between the two mkdirs: make it again
      if (code !== "EEXIST") throw err;
      try {
        if (Date.now() - statSync(LOCK_DIR).mtimeMs > STALE_LOCK_MS) rmdirSync(LOCK_DIR);
      } catch {}
      if (Date.now() > deadline) {
        throw new InitError(INIT_ERROR_CODES.EBPF_FAILED, `${LOCK_DIR} is held by another nodemesh init`);
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
  try {
    return await body();
  } finally {
    rmdirSync(LOCK_DIR);
  }
}
