// Opening upstream connections. Sockets that must leave from a pod's network namespace are
// created there (the pod's IP is the source, as with ztunnel's in-pod mode) and carry the agent's
// mark so the pod's interception rules let them through.

import net from "node:net";
import { AGENT_SOCKET_MARK } from "../../api/dataplane.ts";
import { AgentError, AgentErrors } from "../errors.ts";
import { closeFd, connectableFd, type Netns } from "../sys/linux.ts";

export interface DialOptions {
  /** The namespace to leave from; undefined means the agent's own (node) namespace. */
  netns: Netns | undefined;
  ip: string;
  port: number;
  timeoutMs: number;
}

const ignore = () => {};

export function dial(opts: DialOptions): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    let fd: number;
    try {
      // Fails as an ordinary error too once the worker is stopping (sys/linux.ts refuses the calls).
      fd = connectableFd(opts.netns, opts.netns ? AGENT_SOCKET_MARK : 0);
    } catch (err) {
      reject(
        new AgentError(AgentErrors.CONNECT_FAILED, `${opts.ip}:${opts.port}: ${(err as Error).message}`, {
          cause: err,
        }),
      );
      return;
    }
    let socket: net.Socket;
    try {
      socket = new net.Socket({ fd, readable: true, writable: true, allowHalfOpen: true });
    } catch (err) {
      closeFd(fd);
      reject(err);
      return;
    }
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new AgentError(AgentErrors.CONNECT_TIMEOUT, `${opts.ip}:${opts.port} after ${opts.timeoutMs} ms`));
    }, opts.timeoutMs);
    socket.once("connect", () => {
      clearTimeout(timer);
      socket.removeListener("error", onError);
      // Whoever takes the socket adds its own handler; until then an error must not crash the worker.
      socket.on("error", ignore);
      resolve(socket);
    });
    const onError = (err: Error) => {
      clearTimeout(timer);
      socket.destroy();
      reject(new AgentError(AgentErrors.CONNECT_FAILED, `${opts.ip}:${opts.port}: ${err.message}`, { cause: err }));
    };
    socket.once("error", onError);
    socket.setNoDelay(true);
    socket.connect(opts.port, opts.ip);
  });
}
