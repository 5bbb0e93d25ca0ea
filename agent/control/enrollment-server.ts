// The enrollment endpoint on the agent's unix socket (contract: api/enrollment.ts).

import { chmodSync, mkdirSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { dirname } from "node:path";
import { type EnrolledPod, validateEnrollment } from "../../api/enrollment.ts";
import { peerCredentials, socketFd } from "../sys/linux.ts";
import { identifyNetnsOfPid, netnsInode, ownNetnsInode } from "../sys/netns-path.ts";
import { HttpError, readJson, sendError, sendJson } from "./http.ts";
import type { PodRegistry } from "./pods.ts";

const MAX_BODY = 64 * 1024;
const POD_PATH = /^\/v1\/pods\/([a-z0-9-]+)\/([a-z0-9-]+)$/;

export async function startEnrollmentServer(socketPath: string, pods: PodRegistry): Promise<Server> {
  const agentNetns = ownNetnsInode();
  const server = createServer(async (req, res) => {
    try {
      if (req.url === "/v1/pods" && req.method === "GET") return sendJson(res, 200, { pods: pods.list() });
      if (req.url === "/v1/pods" && req.method === "POST") {
        const checked = validateEnrollment(await readJson(req, MAX_BODY));
        if (!checked.ok) throw new HttpError(422, "INVALID", checked.message, checked.field);
        const { value } = checked;
        // Without an explicit path, the pod's namespace is the caller's own.
        let netnsPath = value.netnsPath;
        if (!netnsPath) netnsPath = identifyNetnsOfPid(peerCredentials(socketFd(req.socket)).pid).path;
        let inode: number;
        try {
          inode = netnsInode(netnsPath);
        } catch {
          throw new HttpError(422, "INVALID", `cannot open network namespace ${netnsPath}`, "netnsPath");
        }
        if (inode === agentNetns) {
          throw new HttpError(422, "INVALID", "the namespace is the agent's own: run the init in the pod", "netnsPath");
        }
        const pod: EnrolledPod = { ...value, netnsPath, enrolledAt: new Date().toISOString() };
        try {
          await pods.enroll(pod);
        } catch (err) {
          throw new HttpError(500, "LISTEN_FAILED", `could not open the pod's listeners: ${(err as Error).message}`);
        }
        return sendJson(res, 200, { status: "enrolled", pod });
      }
      const m = POD_PATH.exec(req.url ?? "");
      if (m && req.method === "DELETE") {
        if (!(await pods.remove(m[1], m[2])))
          throw new HttpError(404, "NOT_FOUND", `pod ${m[1]}/${m[2]} is not enrolled`);
        return sendJson(res, 200, { status: "removed" });
      }
      throw new HttpError(404, "NOT_FOUND", `no route for ${req.method} ${req.url}`);
    } catch (err) {
      sendError(res, err);
    }
  });
  mkdirSync(dirname(socketPath), { recursive: true });
  rmSync(socketPath, { force: true }); // a stale socket from a previous run
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(socketPath, () => resolve());
  });
  chmodSync(socketPath, 0o660);
  return server;
}
