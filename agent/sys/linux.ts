// The few Linux calls Node does not expose: setns, socket creation in another network namespace,
// SO_ORIGINAL_DST, SO_MARK, SO_PEERCRED and the namespace-type ioctl. They go through koffi (prebuilt in its npm package),
// so there is no native build step. Everything here is synchronous and cheap (one syscall each).
//
// Network namespaces are per thread: `withNetns` enters a namespace, runs a synchronous function
// and returns to the thread's own namespace before anything else can run on this thread. A socket
// keeps the namespace it was created in, so creating the fd is the only step that needs it.
import { closeSync, constants, fstatSync, openSync, statSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import type { Socket } from "node:net";

const require = createRequire(import.meta.url);
const koffi = require("koffi") as typeof import("koffi");

const libc = koffi.load("libc.so.6");

const AF_INET = 2;
const SOCK_STREAM = 1;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SOL_IP = 0;
const SO_REUSEADDR = 2;
const SO_PEERCRED = 17;
const SO_REUSEPORT = 15;
const SO_MARK = 36;
const SO_ORIGINAL_DST = 80;
const CLONE_NEWNET = 0x40000000;
/** ioctl on a namespace file: answers the namespace's CLONE_NEW* type (Linux 4.11). */
const NS_GET_NSTYPE = 0xb703;

const SockaddrIn = koffi.struct("nodemesh_sockaddr_in", {
  family: "uint16",
  portBE: "uint16",
  addrBE: "uint32",
  zero: koffi.array("uint8", 8),
});
// struct ifaddrs; only the fields read here are typed, the rest are opaque pointers.
const IfAddrs = koffi.struct("nodemesh_ifaddrs", {
  next: "void *",
  name: "const char *",
  flags: "uint32",
  addr: "void *",
  netmask: "void *",
  ifu: "void *",
  data: "void *",
});
const IFF_LOOPBACK = 0x8;
/** A bound on the list walk: far more addresses than a pod namespace holds. */
const MAX_INTERFACE_ADDRESSES = 4096;
const UCred = koffi.struct("nodemesh_ucred", { pid: "int32", uid: "uint32", gid: "uint32" });

/**
 * Set once this thread is stopping (a data-plane worker about to be terminated): from then on every
 * call into libc fails with an ordinary SyscallError (ESHUTDOWN) and never enters koffi. Node
 * terminates a worker from another thread; a koffi call caught half-way by that cannot even throw its
 * error and aborts the whole process ("FATAL ERROR: Error::ThrowAsJavaScriptException napi_throw",
 * issue 21 item 5), so a worker stops making these calls before it is terminated.
 */
let refused = false;
const ESHUTDOWN = 108;

/** Makes every later system call of this thread fail as an ordinary error (see `refused`). */
export function refuseSystemCalls(): void {
  refused = true;
}

/** True once refuseSystemCalls() was called on this thread. */
export function systemCallsRefused(): boolean {
  return refused;
}

type Call = (...args: unknown[]) => unknown;
function guardAll<T extends Record<string, unknown>>(calls: T): T {
  const out: Record<string, Call> = {};
  for (const [name, fn] of Object.entries(calls)) {
    out[name] = (...args: unknown[]) => {
      if (refused) throw new SyscallError(`${name} (this thread is stopping)`, ESHUTDOWN);
      return (fn as Call)(...args);
    };
  }
  return out as T;
}

const c = guardAll({
  setns: libc.func("int setns(int fd, int nstype)"),
  socket: libc.func("int socket(int domain, int type, int protocol)"),
  bind: libc.func("int bind(int fd, const nodemesh_sockaddr_in *addr, uint32 len)"),
  setsockoptInt: libc.func("int setsockopt(int fd, int level, int name, const int *value, uint32 len)"),
  getsockoptAddr: libc.func(
    "int getsockopt(int fd, int level, int name, _Out_ nodemesh_sockaddr_in *value, _Inout_ uint32 *len)",
  ),
  ioctl: libc.func("int ioctl(int fd, unsigned long request, ...)"),
  getifaddrs: libc.func("int getifaddrs(_Out_ void **list)"),
  freeifaddrs: libc.func("void freeifaddrs(void *list)"),
  getsockoptInt: libc.func("int getsockopt(int fd, int level, int name, _Out_ int *value, _Inout_ uint32 *len)"),
  getsockoptCred: libc.func(
    "int getsockopt(int fd, int level, int name, _Out_ nodemesh_ucred *value, _Inout_ uint32 *len)",
  ),
});

export class SyscallError extends Error {
  readonly errno: number;
  constructor(call: string, errno: number) {
    super(`${call} failed: errno ${errno}`);
    this.errno = errno;
  }
}

function check(call: string, rc: number): number {
  if (rc < 0) throw new SyscallError(call, koffi.errno());
  return rc;
}

function htons(n: number): number {
  return ((n & 0xff) << 8) | ((n >> 8) & 0xff);
}

function ipv4ToBE(ip: string): number {
  const p = ip.split(".").map(Number);
  // struct in_addr holds network order; read as a little-endian uint32 that is the reversed bytes.
  return ((p[3] << 24) | (p[2] << 16) | (p[1] << 8) | p[0]) >>> 0;
}

function beToIpv4(n: number): string {
  return `${n & 0xff}.${(n >>> 8) & 0xff}.${(n >>> 16) & 0xff}.${(n >>> 24) & 0xff}`;
}

/** The path opens, but not a network namespace: a regular file, a directory, another kind of namespace. */
export class NotANetworkNamespaceError extends Error {}

// Every namespace file (/proc/<pid>/ns/*, the bind mounts under /run/netns) lives on the nsfs device.
let nsfsDevice: number | undefined;

/** A network namespace held open by fd, so it stays valid while the agent uses it. */
export class Netns {
  readonly fd: number;
  readonly path: string;
  private constructor(path: string, fd: number) {
    this.path = path;
    this.fd = fd;
  }
  /**
   * Opens `path` after checking it is a network namespace: the path may come from a caller, and
   * opening a FIFO or a device could block or act, so anything off nsfs is refused unopened.
   */
  static open(path: string): Netns {
    nsfsDevice ??= statSync("/proc/self/ns/net").dev;
    if (statSync(path).dev !== nsfsDevice) throw new NotANetworkNamespaceError(`${path} is not a namespace file`);
    const fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK); // libuv adds O_CLOEXEC
    // Checked again on the open fd: the path may have been swapped since the stat.
    if (fstatSync(fd).dev !== nsfsDevice || c.ioctl(fd, NS_GET_NSTYPE) !== CLONE_NEWNET) {
      closeSync(fd);
      throw new NotANetworkNamespaceError(`${path} is not a network namespace`);
    }
    return new Netns(path, fd);
  }
  /** Names the namespace: two paths open the same namespace when their inodes are equal. */
  get inode(): number {
    return fstatSync(this.fd).ino;
  }
  close(): void {
    closeSync(this.fd);
  }
}

// The thread's own namespace, opened once per thread the first time it is needed.
let homeNetns: Netns | undefined;
function home(): Netns {
  homeNetns ??= Netns.open(`/proc/self/task/${gettid()}/ns/net`);
  return homeNetns;
}
const gettidCall = guardAll({ gettid: libc.func("int gettid()") });
function gettid(): number {
  return gettidCall.gettid() as number;
}

/** Runs `fn` with this thread inside `ns`; always returns to the thread's own namespace. */
export function withNetns<T>(ns: Netns, fn: () => T): T {
  const back = home();
  check("setns", c.setns(ns.fd, CLONE_NEWNET) as number);
  try {
    return fn();
  } finally {
    check("setns(back)", c.setns(back.fd, CLONE_NEWNET) as number);
  }
}

/**
 * Lets the namespace's kernel move connections waiting in a closing listener's queue to another
 * listener of its SO_REUSEPORT group (net.ipv4.tcp_migrate_req, Linux 5.14): when an agent hands
 * over to its successor, what the old one had not accepted yet is the new one's, not reset.
 * /proc/sys/net is the opening thread's namespace's, hence withNetns. False where unsupported.
 */
export function allowListenerMigration(ns: Netns): boolean {
  try {
    withNetns(ns, () => writeFileSync("/proc/sys/net/ipv4/tcp_migrate_req", "1"));
    return true;
  } catch {
    return false;
  }
}

export interface InterfaceAddress {
  interface: string;
  address: string;
  /** On a loopback interface (IFF_LOOPBACK). */
  loopback: boolean;
}

/**
 * The IPv4 addresses configured in `ns`, whatever their interface's state. getifaddrs() asks
 * netlink from the calling thread, so inside withNetns it reads that namespace. (Node's
 * os.networkInterfaces() would too, but hides interfaces whose carrier the kernel has not yet
 * reported up, which lags a fresh veth by up to a second.)
 */
export function interfaceAddresses(ns: Netns): InterfaceAddress[] {
  const list: [unknown] = [null];
  withNetns(ns, () => check("getifaddrs", c.getifaddrs(list) as number));
  const found: InterfaceAddress[] = [];
  try {
    let entry = list[0];
    for (let i = 0; entry && i < MAX_INTERFACE_ADDRESSES; i++) {
      const ifa = koffi.decode(entry, IfAddrs) as { next: unknown; name: string; flags: number; addr: unknown };
      if (ifa.addr) {
        const sa = koffi.decode(ifa.addr, SockaddrIn) as { family: number; addrBE: number };
        if (sa.family === AF_INET) {
          found.push({ interface: ifa.name, address: beToIpv4(sa.addrBE), loopback: (ifa.flags & IFF_LOOPBACK) !== 0 });
        }
      }
      entry = ifa.next;
    }
  } finally {
    c.freeifaddrs(list[0]);
  }
  return found;
}

function newTcpSocket(): number {
  return check("socket", c.socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0) as number);
}

function setInt(fd: number, level: number, name: number, value: number, what: string): void {
  check(what, c.setsockoptInt(fd, level, name, [value], 4) as number);
}

/**
 * A listening-ready IPv4 socket bound to 0.0.0.0:port inside `ns`, with SO_REUSEPORT so every
 * data-plane worker can own one and the kernel spreads connections over them. Pass the fd to
 * `server.listen({ fd })`.
 */
export function bindListenerFd(ns: Netns, port: number): number {
  const fd = withNetns(ns, newTcpSocket);
  try {
    setInt(fd, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR");
    setInt(fd, SOL_SOCKET, SO_REUSEPORT, 1, "SO_REUSEPORT");
    const addr = { family: AF_INET, portBE: htons(port), addrBE: 0, zero: [0, 0, 0, 0, 0, 0, 0, 0] };
    check("bind", c.bind(fd, addr, koffi.sizeof(SockaddrIn)) as number);
    return fd;
  } catch (err) {
    closeSync(fd);
    throw err;
  }
}

/**
 * An unconnected TCP socket created inside `ns` (so its traffic leaves from that namespace),
 * optionally carrying SO_MARK `mark` so the namespace's interception rules let it through.
 * Adopt it with `new net.Socket({ fd })` and then `.connect()`.
 */
export function connectableFd(ns: Netns | undefined, mark: number): number {
  const fd = ns ? withNetns(ns, newTcpSocket) : newTcpSocket();
  if (mark) {
    try {
      setInt(fd, SOL_SOCKET, SO_MARK, mark, "SO_MARK");
    } catch (err) {
      closeSync(fd);
      throw err;
    }
  }
  return fd;
}

/** Closes an fd that no Node handle owns (Node's own close: no FFI, so it also works while stopping). */
export function closeFd(fd: number): void {
  closeSync(fd);
}

/** The fd behind a connected Node socket (Linux TCP and pipe handles expose it). */
export function socketFd(socket: Socket): number {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== "number" || fd < 0) throw new SyscallError("socket fd", 9);
  return fd;
}

export interface Address {
  ip: string;
  port: number;
}

/** The destination the connection had before iptables REDIRECT rewrote it. */
export function originalDst(fd: number): Address {
  const out = {} as { family: number; portBE: number; addrBE: number };
  const len = [koffi.sizeof(SockaddrIn)];
  check("getsockopt(SO_ORIGINAL_DST)", c.getsockoptAddr(fd, SOL_IP, SO_ORIGINAL_DST, out, len) as number);
  return { ip: beToIpv4(out.addrBE), port: htons(out.portBE) };
}

const SO_ACCEPTCONN = 30;

/**
 * Whether the socket is still listening in the kernel. A listener can be closed under a process
 * that keeps its descriptor (`ss -K` destroys it; Node's server never notices): then it is not.
 */
export function isListening(fd: number): boolean {
  const out = [0];
  if ((c.getsockoptInt(fd, SOL_SOCKET, SO_ACCEPTCONN, out, [4]) as number) < 0) return false;
  return out[0] === 1;
}

/** The pid, uid and gid of the process at the other end of a unix socket. */
export function peerCredentials(fd: number): { pid: number; uid: number; gid: number } {
  const out = {} as { pid: number; uid: number; gid: number };
  check("getsockopt(SO_PEERCRED)", c.getsockoptCred(fd, SOL_SOCKET, SO_PEERCRED, out, [koffi.sizeof(UCred)]) as number);
  return { pid: out.pid, uid: out.uid, gid: out.gid };
}

export const _forTests = { ipv4ToBE, beToIpv4, htons };
