// The cookie of this process's network namespace (SO_NETNS_COOKIE, Linux 5.14): what
// bpf_get_netns_cookie() answers in the eBPF programs for sockets of this namespace. The init
// container runs in the pod's namespace, so this names the pod to the splicing program.
import { closeSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const koffi = require("koffi") as typeof import("koffi");

const AF_INET = 2;
const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SO_NETNS_COOKIE = 71;

let calls: { socket: (...a: unknown[]) => number; getsockopt: (...a: unknown[]) => number } | undefined;

function libc() {
  if (!calls) {
    const lib = koffi.load("libc.so.6");
    calls = {
      socket: lib.func("int socket(int domain, int type, int protocol)"),
      getsockopt: lib.func("int getsockopt(int fd, int level, int name, _Out_ uint64 *value, _Inout_ uint32 *len)"),
    };
  }
  return calls;
}

/** The current network namespace's cookie, or an Error naming the failed call. */
export function netnsCookie(): bigint {
  const c = libc();
  const fd = c.socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw new Error(`socket(): errno ${koffi.errno()}`);
  try {
    const value = [0n];
    if (c.getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, value, [8]) < 0) {
      throw new Error(`getsockopt(SO_NETNS_COOKIE): errno ${koffi.errno()} (Linux 5.14 or later needed)`);
    }
    return BigInt(value[0]);
  } finally {
    closeSync(fd);
  }
}
