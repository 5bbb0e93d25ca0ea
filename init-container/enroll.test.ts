// The enrollment client against a fake agent: a node:http server on a temporary unix socket.
import { mkdtempSync, rmSync, unlinkSync, writeFileSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { PodEnrollment } from "../api/enrollment.ts";
import { askInterception, enroll, unenroll } from "./enroll.ts";

const POD: PodEnrollment = {
  name: "web",
  namespace: "shop",
  ip: "10.244.1.7",
  labels: { app: "web" },
  serviceAccount: "default",
};

interface Seen {
  method: string;
  url: string;
  body: string;
}

/** Answers requests with the given (status, body) replies in turn; the last one repeats. */
function fakeAgent(socketPath: string, replies: [number, unknown][]) {
  const seen: Seen[] = [];
  const server = http.createServer((req, res) => {
    let body = "";
    req.setEncoding("utf8").on("data", (chunk: string) => (body += chunk));
    req.on("end", () => {
      seen.push({ method: req.method ?? "", url: req.url ?? "", body });
      const [status, reply] = replies[Math.min(seen.length, replies.length) - 1];
      if (status === 0) return; // never answer
      res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(reply));
    });
  });
  return {
    seen,
    listen: () => new Promise<void>((resolve) => server.listen(socketPath, resolve)),
    close: () => {
      server.closeAllConnections();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

const enrolled = (pod: PodEnrollment) => ({
  status: "enrolled",
  pod: { ...pod, netnsPath: "/proc/1/ns/net", enrolledAt: "2026-11-22T05:00:00Z" },
});

describe("enrollment client", () => {
  let dir: string;
  let socketPath: string;
  let agent: ReturnType<typeof fakeAgent> | undefined;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "nodemesh-enroll-"));
    socketPath = join(dir, "agent.sock");
  });
  afterEach(async () => {
    await agent?.close();
    agent = undefined;
    rmSync(dir, { recursive: true, force: true });
  });

  it("retries while the agent refuses connections, then enrolls", async () => {
    // A regular file where the socket should be: connect() fails with ECONNREFUSED.
    writeFileSync(socketPath, "");
    agent = fakeAgent(socketPath, [[200, enrolled(POD)]]);
    const started = Date.now();
    const pending = enroll(POD, { socketPath, timeoutMs: 5_000 });
    await sleep(300);
    unlinkSync(socketPath);
    await agent.listen();

    const reply = await pending;
    expect(Date.now() - started).toBeGreaterThanOrEqual(300);
    expect(reply).toEqual(enrolled(POD));
    expect(agent.seen).toEqual([{ method: "POST", url: "/v1/pods", body: JSON.stringify(POD) }]);
  });

  it("retries while the socket does not exist yet", async () => {
    agent = fakeAgent(socketPath, [[200, enrolled(POD)]]);
    const pending = enroll(POD, { socketPath, timeoutMs: 5_000 });
    await sleep(250);
    await agent.listen();
    expect((await pending).status).toBe("enrolled");
  });

  it("retries a 503 from an agent that is still starting", async () => {
    const starting = { error: { code: "not_ready", message: "agent is starting" } };
    agent = fakeAgent(socketPath, [
      [503, starting],
      [503, starting],
      [200, enrolled(POD)],
    ]);
    await agent.listen();
    expect((await enroll(POD, { socketPath, timeoutMs: 5_000 })).status).toBe("enrolled");
    expect(agent.seen).toHaveLength(3);
  });

  it("treats a 422 as final and shows the agent's message", async () => {
    const invalid = { error: { code: "invalid", message: "name must be a DNS label", field: "name" } };
    agent = fakeAgent(socketPath, [[422, invalid]]);
    await agent.listen();
    const started = Date.now();
    await expect(enroll(POD, { socketPath, timeoutMs: 5_000 })).rejects.toMatchObject({
      code: "agent_rejected",
      message: `the node agent at ${socketPath} refused to enroll pod shop/web: HTTP 422 invalid: name must be a DNS label (field name)`,
    });
    expect(agent.seen).toHaveLength(1);
    expect(Date.now() - started).toBeLessThan(1_000);
  });

  it("gives up at the deadline, naming the socket and the last failure", async () => {
    const started = Date.now();
    await expect(enroll(POD, { socketPath, timeoutMs: 400 })).rejects.toMatchObject({
      code: "agent_unreachable",
      message: expect.stringMatching(
        new RegExp(
          `^could not enroll pod shop/web: no successful answer from the node agent at ${socketPath} ` +
            "within 0.4 s \\(\\d+ attempts\\); last failure: connect ENOENT",
        ),
      ),
    });
    const elapsed = Date.now() - started;
    expect(elapsed).toBeGreaterThanOrEqual(400);
    expect(elapsed).toBeLessThan(1_500);
  });

  it("does not wait past the deadline for an agent that never answers", async () => {
    agent = fakeAgent(socketPath, [[0, null]]);
    await agent.listen();
    const started = Date.now();
    await expect(enroll(POD, { socketPath, timeoutMs: 500 })).rejects.toMatchObject({
      code: "agent_unreachable",
      message: expect.stringContaining("last failure: no answer within"),
    });
    expect(Date.now() - started).toBeLessThan(1_500);
  });

  it("unenrolls with DELETE, and a pod the agent does not know is fine", async () => {
    const unknown = { error: { code: "not_found", message: "no such pod" } };
    agent = fakeAgent(socketPath, [
      [200, {}],
      [404, unknown],
    ]);
    await agent.listen();
    await unenroll("shop", "web", { socketPath });
    await unenroll("shop", "web", { socketPath });
    expect(agent.seen.map((s) => `${s.method} ${s.url}`)).toEqual([
      "DELETE /v1/pods/shop/web",
      "DELETE /v1/pods/shop/web",
    ]);
  });

  it("asks the node's interception mode; an agent from before the question means iptables, nonsense is refused", async () => {
    agent = fakeAgent(socketPath, [
      [200, { mode: "ebpf" }],
      [404, { error: { code: "NOT_FOUND", message: "no route" } }],
      [200, { mode: "nftables" }],
    ]);
    await agent.listen();
    expect(await askInterception({ socketPath })).toBe("ebpf");
    expect(await askInterception({ socketPath })).toBe("iptables");
    await expect(askInterception({ socketPath })).rejects.toThrow(/not a mode: \{"mode":"nftables"\}/);
    expect(agent.seen.map((s) => `${s.method} ${s.url}`)).toEqual(Array(3).fill("GET /v1/interception"));
  });
});
