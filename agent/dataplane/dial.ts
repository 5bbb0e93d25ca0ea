// Opening upstream connections. On a node, sockets that must leave from a pod's network namespace
// are created there (the pod's IP is the source, as with ztunnel's in-pod mode) and carry the
// agent's mark so the pod's interception rules let them through. How a socket is made is the one
// seam between the data path and Linux: unit tests pass plain sockets and run without root.

import net from "node:net";
import { AGENT_SOCKET_MARK } from "../../api/dataplane.ts";
import { AgentError, AgentErrors } from "../errors.ts";
import { closeFd, connectableFd, type Netns } from "../sys/linux.ts";
import { ioDeadline } from "./io-deadline.ts";

/** Makes an unconnected TCP socket that will leave from `netns` (undefined: the agent's own). */
export type SocketMaker = (netns: Netns | undefined) => net.Socket;

/** Sockets in the pod's namespace, marked so its rules let them through (the agent's way). */
export const inPodSockets: SocketMaker = (netns) => {
  const fd = connectableFd(netns, netns ? AGENT_SOCKET_MARK : 0);
  try {
    return new net.Socket({ fd, readable: true, writable: true, allowHalfOpen: true });
  } catch (err) {
    closeFd(fd);
    throw err;
  }
};

/** Plain sockets in the caller's namespace, whatever `netns` says (unit tests over loopback). */
export const plainSockets: SocketMaker = () => new net.Socket({ allowHalfOpen: true });

export interface DialOptions {
  /** The namespace to leave from; undefined means the agent's own (node) namespace. */
  netns: Netns | undefined;
  ip: string;
  port: number;
  timeoutMs: number;
}

const ignore = () => {};

export function dial(sockets: SocketMaker, opts: DialOptions): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    let socket: net.Socket;
    try {
      // Fails as an ordinary error too once the worker is stopping (sys/linux.ts refuses the calls).
      socket = sockets(opts.netns);
    } catch (err) {
      reject(
        new AgentError(AgentErrors.CONNECT_FAILED, `${opts.ip}:${opts.port}: ${(err as Error).message}`, {
          cause: err,
        }),
      );
      return;
    }
    const deadline = ioDeadline(() => {
      socket.destroy();
      reject(new AgentError(AgentErrors.CONNECT_TIMEOUT, `${opts.ip}:${opts.port} after ${opts.timeoutMs} ms`));
    }, opts.timeoutMs);
    socket.once("connect", () => {
      deadline.clear();
      socket.removeListener("error", onError);
      // Whoever takes the socket adds its own handler; until then an error must not crash the worker.
      socket.on("error", ignore);
      resolve(socket);
    });
    const onError = (err: Error) => {
      deadline.clear();
      socket.destroy();
      reject(new AgentError(AgentErrors.CONNECT_FAILED, `${opts.ip}:${opts.port}: ${err.message}`, { cause: err }));
    };
    socket.once("error", onError);
    socket.setNoDelay(true);
    socket.connect(opts.port, opts.ip);
  });
}
