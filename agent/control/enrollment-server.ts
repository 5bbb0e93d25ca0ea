// The enrollment endpoint on the agent's unix socket (contract: api/enrollment.ts).
//
// Who calls is taken from the connection, never from the request (docs/security.md, "Enrollment
// socket"): SO_PEERCRED gives the calling process, /proc/<pid>/ns/net its network namespace. A
// caller enrolls, re-enrolls and removes only the pod of its own namespace, with an address of
// that namespace. A privileged caller (root in the agent's own network namespace, the node's host
// network: kubelet, an operator, the tests) may name any pod namespace, list and remove any pod.

import { chmodSync, mkdirSync, rmSync } from "node:fs";
import { createServer as createNetServer, type Server, type Socket } from "node:net";
import { dirname } from "node:path";
import type { EnrolledPod, InterceptionReply } from "../../api/enrollment.ts";
import { validateEnrollment } from "../../api/enrollment-schema.ts";
import { sendJson } from "../../api/http-json.ts";
import { http } from "../../api/node-http.ts";
import { Netns, NotANetworkNamespaceError, peerCredentials, socketFd } from "../sys/linux.ts";
import { identifyNetnsOfPid, type NetnsIdentity, ownNetnsInode } from "../sys/netns-path.ts";
import { HANDOVER_PATH } from "./handover.ts";
import { HttpError, readJson, sendError } from "./http.ts";
import { EnrollmentConflict, type PodRegistry, podAddressProblem } from "./pods.ts";

/**
 * Bounds against a pod flooding the socket (agent --help, "Limits"): a caller that is not
 * privileged holds at most `connectionsPerCaller` connections (counted per network namespace; more
 * are closed at once), and a request must arrive whole within `requestTimeoutMs`.
 */
export const ENROLLMENT_LIMITS = {
  bodyBytes: 64 * 1024,
  connectionsPerCaller: 8,
  requestTimeoutMs: 5000,
  /** A connection over a caller's limit is closed after this, unread; at most `heldPerCaller` wait so. */
  refusalDelayMs: 1000,
  heldPerCaller: 64,
} as const;
const POD_PATH = /^\/v1\/pods\/([a-z0-9-]+)\/([a-z0-9-]+)$/;

interface Caller {
  /** The caller's network namespace; undefined when the calling process could not be identified. */
  netns: NetnsIdentity | undefined;
  privileged: boolean;
}

function identifyCaller(socket: Socket, agentNetns: number): Caller {
  try {
    const { pid, uid } = peerCredentials(socketFd(socket));
    // pid 0: the caller lives in a pid namespace the agent cannot see into (the agent needs hostPID).
    if (pid <= 0) return { netns: undefined, privileged: false };
    const netns = identifyNetnsOfPid(pid);
    return { netns, privileged: uid === 0 && netns.inode === agentNetns };
  } catch {
    return { netns: undefined, privileged: false };
  }
}

function forbidden(message: string, field?: string): HttpError {
  return new HttpError(403, "FORBIDDEN", message, field);
}

/** Opens the namespace a request names; a path that is not a network namespace is the caller's mistake (422). */
function openPodNetns(path: string): Netns {
  try {
    return Netns.open(path);
  } catch (err) {
    const why = err instanceof NotANetworkNamespaceError ? "is not a network namespace" : "cannot be opened";
    throw new HttpError(422, "INVALID", `${path} ${why}`, "netnsPath");
  }
}

export interface EnrollmentHooks {
  /** A new agent takes over this node (handover.ts): stop taking part, but keep serving traffic. */
  handOver(): void;
}

export async function startEnrollmentServer(
  socketPath: string,
  pods: PodRegistry,
  hooks: EnrollmentHooks = { handOver: () => {} },
  /** The node's interception mode, told to `nodemesh init --mode node` (agent --interception). */
  interception: InterceptionReply = { mode: "iptables" },
): Promise<Server> {
  // Root in this namespace is privileged (docs/security.md), and it is never a pod's.
  const agentNetns = ownNetnsInode();
  // Identified once the connection is accepted, while the caller is surely still there.
  const callers = new WeakMap<Socket, Caller>();
  const callerOf = (socket: Socket): Caller => {
    let caller = callers.get(socket);
    if (!caller) {
      caller = identifyCaller(socket, agentNetns);
      callers.set(socket, caller);
    }
    return caller;
  };

  const enroll = async (caller: Caller, body: unknown): Promise<EnrolledPod> => {
    const checked = validateEnrollment(body);
    if (!checked.ok) throw new HttpError(422, "INVALID", checked.message, checked.field);
    const { value } = checked;
    if (!caller.netns) throw forbidden("the calling process could not be identified (SO_PEERCRED)");
    const ns = openPodNetns(value.netnsPath ?? caller.netns.path);
    let inode: number;
    try {
      inode = ns.inode;
      if (inode === agentNetns) {
        throw new HttpError(422, "INVALID", "the namespace is the agent's own: run the init in the pod", "netnsPath");
      }
      if (!caller.privileged && inode !== caller.netns.inode) {
        throw forbidden("a pod may enroll only its own network namespace", "netnsPath");
      }
      const addressProblem = podAddressProblem(ns, value.ip);
      if (addressProblem) throw new HttpError(422, "INVALID", addressProblem, "ip");
    } finally {
      ns.close();
    }
    // A pod's namespace is reopened (by the workers, after a restart) through the agent's own
    // path for it, never a path the pod gave, which it could repoint once checked.
    const netnsPath = caller.privileged ? (value.netnsPath ?? caller.netns.path) : caller.netns.path;
    const pod: EnrolledPod = { ...value, netnsPath, enrolledAt: new Date().toISOString() };
    try {
      await pods.enroll(pod, inode, { replaceLive: caller.privileged });
    } catch (err) {
      if (err instanceof EnrollmentConflict) throw new HttpError(409, "CONFLICT", err.message);
      throw new HttpError(500, "LISTEN_FAILED", `could not open the pod's listeners: ${(err as Error).message}`);
    }
    return pod;
  };

  const remove = async (caller: Caller, namespace: string, name: string): Promise<void> => {
    const notEnrolled = new HttpError(404, "NOT_FOUND", `pod ${namespace}/${name} is not enrolled`);
    const pod = pods.get(namespace, name);
    if (!pod) throw notEnrolled;
    if (!caller.privileged && pod.netnsInode !== caller.netns?.inode) {
      throw forbidden(`pod ${namespace}/${name} is not the pod of the caller's network namespace`);
    }
    if (!(await pods.remove(namespace, name))) throw notEnrolled;
  };

  const server = http.createServer(
    {
      requestTimeout: ENROLLMENT_LIMITS.requestTimeoutMs,
      headersTimeout: ENROLLMENT_LIMITS.requestTimeoutMs,
      connectionsCheckingInterval: 1000,
    },
    async (req, res) => {
      try {
        const caller = callerOf(req.socket);
        if (req.url === "/v1/pods" && req.method === "GET") {
          if (!caller.privileged) throw forbidden("only a privileged caller may list the pods");
          return sendJson(res, 200, { pods: pods.list() });
        }
        if (req.url === "/v1/pods" && req.method === "POST") {
          const pod = await enroll(caller, await readJson(req, ENROLLMENT_LIMITS.bodyBytes));
          return sendJson(res, 200, { status: "enrolled", pod });
        }
        if (req.url === "/v1/interception" && req.method === "GET") return sendJson(res, 200, interception);
        if (req.url === HANDOVER_PATH && req.method === "POST") {
          if (!caller.privileged) throw forbidden("only a privileged caller (a new agent of this node) may take over");
          // No enrollment from now on: the successor reads the pods' state once we answered.
          gate.close();
          hooks.handOver();
          // The connection ends with the answer: a successor's kept-alive connection would hold
          // our stop (which waits for the gate's connections) until its keep-alive timeout.
          res.shouldKeepAlive = false;
          return sendJson(res, 200, { status: "handed over", pid: process.pid });
        }
        const m = POD_PATH.exec(req.url ?? "");
        if (m && req.method === "DELETE") {
          await remove(caller, m[1], m[2]);
          return sendJson(res, 200, { status: "removed" });
        }
        throw new HttpError(404, "NOT_FOUND", `no route for ${req.method} ${req.url}`);
      } catch (err) {
        sendError(res, err);
      }
    },
  );
  // The socket is the gate's: a caller over its limit is turned away before any HTTP machinery
  // exists for its connection, and held a while first, so that a flooding pod waits instead of
  // reconnecting as fast as the agent can refuse (100,000 refusals in 6 s grew the agent by 100 MB).
  const openPerCaller = new Map<number, number>(); // netns inode (0: unidentified) → connections
  const heldPerCaller = new Map<number, number>();
  const bump = (map: Map<number, number>, key: number, by: number) => {
    const n = (map.get(key) ?? 0) + by;
    if (n === 0) map.delete(key);
    else map.set(key, n);
  };
  const gate = createNetServer({ pauseOnConnect: true }, (socket) => {
    socket.on("error", () => {});
    const caller = callerOf(socket);
    const key = caller.netns?.inode ?? 0;
    if (!caller.privileged && (openPerCaller.get(key) ?? 0) >= ENROLLMENT_LIMITS.connectionsPerCaller) {
      if ((heldPerCaller.get(key) ?? 0) >= ENROLLMENT_LIMITS.heldPerCaller) {
        socket.destroy();
        return;
      }
      bump(heldPerCaller, key, 1);
      socket.once("close", () => bump(heldPerCaller, key, -1));
      setTimeout(() => socket.destroy(), ENROLLMENT_LIMITS.refusalDelayMs).unref();
      return;
    }
    if (!caller.privileged) {
      bump(openPerCaller, key, 1);
      socket.once("close", () => bump(openPerCaller, key, -1));
    }
    server.emit("connection", socket);
    socket.resume();
  });
  gate.once("close", () => server.close(() => {})); // stops the HTTP server's timeout sweep
  mkdirSync(dirname(socketPath), { recursive: true });
  rmSync(socketPath, { force: true }); // a stale socket from a previous run
  await new Promise<void>((resolve, reject) => {
    gate.once("error", reject);
    gate.listen(socketPath, () => resolve());
  });
  server.emit("listening"); // the HTTP server never listens itself; its request-timeout sweep starts on this
  chmodSync(socketPath, 0o660);
  return gate;
}
