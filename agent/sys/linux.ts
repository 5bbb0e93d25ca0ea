// The few Linux calls Node does not expose: setns, socket creation in another network namespace,
// SO_ORIGINAL_DST, SO_MARK and SO_PEERCRED. They go through koffi (prebuilt in its npm package),
// so there is no native build step. Everything here is synchronous and cheap (one syscall each).
//
// Network namespaces are per thread: `withNetns` enters a namespace, runs a synchronous function
// and returns to the thread's own namespace before anything else can run on this thread. A socket
// keeps the namespace it was created in, so creating the fd is the only step that needs it.
import { closeSync, openSync } from "node:fs";
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

const SockaddrIn = koffi.struct("nodemesh_sockaddr_in", {
  family: "uint16",
  portBE: "uint16",
  addrBE: "uint32",
  zero: koffi.array("uint8", 8),
});
const UCred = koffi.struct("nodemesh_ucred", { pid: "int32", uid: "uint32", gid: "uint32" });

const c = {
  setns: libc.func("int setns(int fd, int nstype)"),
  socket: libc.func("int socket(int domain, int type, int protocol)"),
  close: libc.func("int close(int fd)"),
  bind: libc.func("int bind(int fd, const nodemesh_sockaddr_in *addr, uint32 len)"),
  setsockoptInt: libc.func("int setsockopt(int fd, int level, int name, const int *value, uint32 len)"),
  getsockoptAddr: libc.func(
    "int getsockopt(int fd, int level, int name, _Out_ nodemesh_sockaddr_in *value, _Inout_ uint32 *len)",
  ),
  getsockoptCred: libc.func(
    "int getsockopt(int fd, int level, int name, _Out_ nodemesh_ucred *value, _Inout_ uint32 *len)",
  ),
};

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

/** A network namespace held open by fd, so it stays valid while the agent uses it. */
export class Netns {
  readonly fd: number;
  readonly path: string;
  private constructor(path: string, fd: number) {
    this.path = path;
    this.fd = fd;
  }
  static open(path: string): Netns {
    return new Netns(path, openSync(path, "r"));
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
const gettidCall = libc.func("int gettid()");
function gettid(): number {
  return gettidCall() as number;
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
    c.close(fd);
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
      c.close(fd);
      throw err;
    }
  }
  return fd;
}

export function closeFd(fd: number): void {
  c.close(fd);
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

/** The pid, uid and gid of the process at the other end of a unix socket. */
export function peerCredentials(fd: number): { pid: number; uid: number; gid: number } {
  const out = {} as { pid: number; uid: number; gid: number };
  check("getsockopt(SO_PEERCRED)", c.getsockoptCred(fd, SOL_SOCKET, SO_PEERCRED, out, [koffi.sizeof(UCred)]) as number);
  return { pid: out.pid, uid: out.uid, gid: out.gid };
}

export const _forTests = { ipv4ToBE, beToIpv4, htons };
