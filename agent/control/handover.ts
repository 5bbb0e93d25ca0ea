// Replacing an agent without losing a connection (docs/operations.md, "Upgrading an agent"). A new
// agent started beside the running one (a DaemonSet surge, or by hand) asks it, over the
// enrollment socket, to hand over: the old agent stops taking enrollments and leaves the
// controller, and answers. The new one then restores the node's pods, opening its listeners in
// each pod beside the old ones (SO_REUSEPORT), connects to the controller, binds the enrollment
// socket and admin port, and, HANDOVER_OVERLAP_MS later, sends the old agent SIGTERM: it closes its
// listeners — what waits in their queues moves to the new ones (tcp_migrate_req) — and drains
// (Dataplane.stop).

import { http } from "../../api/node-http.ts";
import { peerCredentials, socketFd } from "../sys/linux.ts";

export const HANDOVER_PATH = "/v1/agent/handover";

/**
 * How long both agents accept new connections (the kernel spreads them over every listener)
 * before the old one drains and sends the rest of the load over at once: the new agent's workers
 * warm up (compiled code, pooled connections, tunnels) on part of it first. Under 1000 requests/s
 * on the 2-core test machine, rounds of five surges collapsed into thousands of client timeouts in
 * 3 of 6 without an overlap and in none of 5 with this one (docs/benchmarks.md, "Twenty-seventh
 * session").
 */
export const HANDOVER_OVERLAP_MS = 3000;

/** The agent serving `socketPath`, once it handed over; undefined when none serves it. */
export function requestHandover(socketPath: string, timeoutMs = 5000): Promise<{ pid: number } | undefined> {
  return new Promise((resolve, reject) => {
    let peerPid: number | undefined;
    // One request, on a connection of its own (agent: false): nothing to keep alive.
    const request = { socketPath, method: "POST", path: HANDOVER_PATH, timeout: timeoutMs, agent: false };
    const req = http.request(request, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        body += chunk;
      });
      res.on("end", () => {
        if (res.statusCode !== 200 || peerPid === undefined || peerPid <= 0) {
          reject(new Error(`the agent serving ${socketPath} did not hand over (${res.statusCode}: ${body.trim()})`));
          return;
        }
        // The kernel's word for who answered, not the body's.
        resolve({ pid: peerPid });
      });
    });
    req.on("socket", (socket) =>
      socket.once("connect", () => {
        try {
          peerPid = peerCredentials(socketFd(socket)).pid;
        } catch {
          peerPid = undefined;
        }
      }),
    );
    req.on("timeout", () =>
      req.destroy(new Error(`the agent serving ${socketPath} did not answer within ${timeoutMs} ms`)),
    );
    req.on("error", (err: NodeJS.ErrnoException) => {
      // No socket, or a socket nobody listens on (a stale file): no agent to take over from.
      if (err.code === "ENOENT" || err.code === "ECONNREFUSED") resolve(undefined);
      else reject(err);
    });
    req.end();
  });
}
