// A stopping worker's system calls fail as ordinary errors (issue 21, item 5): once a thread has
// called refuseSystemCalls(), connectableFd throws a SyscallError (ESHUTDOWN) without entering
// koffi, and dial() rejects with NM_CONNECT_FAILED (a 503), so nothing is left half-way in native
// code when the thread is terminated. Run in a worker thread: the refusal is per thread.

import { Worker } from "node:worker_threads";
import { describe, expect, it } from "vitest";
import { closeFd, connectableFd } from "../sys/linux.ts";

const LINUX = new URL("../sys/linux.ts", import.meta.url).href;
const DIAL = new URL("./dial.ts", import.meta.url).href;

const SCRIPT = `
const { parentPort } = require("node:worker_threads");
(async () => {
  const linux = await import(${JSON.stringify(LINUX)});
  const { dial, inPodSockets } = await import(${JSON.stringify(DIAL)});
  const out = {};
  const before = linux.connectableFd(undefined, 0);
  out.before = before >= 0;
  const kept = linux.connectableFd(undefined, 0);
  linux.refuseSystemCalls();
  out.refused = linux.systemCallsRefused();
  try {
    linux.connectableFd(undefined, 0);
    out.connectable = "no error";
  } catch (err) {
    out.connectable = { name: err.constructor.name, errno: err.errno, message: err.message };
  }
  try {
    await dial(inPodSockets, { netns: undefined, ip: "127.0.0.1", port: 9, timeoutMs: 1000 });
    out.dial = "connected";
  } catch (err) {
    out.dial = { code: err.code, message: err.message };
  }
  // Closing needs no FFI: fds made before the refusal are still closed.
  try {
    linux.closeFd(before);
    linux.closeFd(kept);
    out.closed = true;
  } catch (err) {
    out.closed = err.message;
  }
  parentPort.postMessage(out);
})().catch((err) => parentPort.postMessage({ failed: String(err && err.stack || err) }));
`;

describe("system calls of a stopping worker", () => {
  it("fail as ordinary errors, and dial() answers NM_CONNECT_FAILED", async () => {
    const worker = new Worker(SCRIPT, { eval: true });
    const result = await new Promise<Record<string, unknown>>((resolve, reject) => {
      worker.once("message", resolve);
      worker.once("error", reject);
    });
    await worker.terminate();
    expect(result).toEqual({
      before: true,
      refused: true,
      connectable: { name: "SyscallError", errno: 108, message: "socket (this thread is stopping) failed: errno 108" },
      dial: {
        code: "NM_CONNECT_FAILED",
        message: "connect failed: 127.0.0.1:9: socket (this thread is stopping) failed: errno 108",
      },
      closed: true,
    });
  });

  it("are refused per thread: the other threads' calls still work", () => {
    const fd = connectableFd(undefined, 0);
    expect(fd).toBeGreaterThanOrEqual(0);
    closeFd(fd);
  });
});
