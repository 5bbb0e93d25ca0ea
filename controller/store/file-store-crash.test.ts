// The file store's crash consistency: a writer process killed with SIGKILL at random moments,
// twenty times. A system test (it kills processes and takes about 20 s), so not in the unit project.

import { type ChildProcess, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { contentOf, serviceAt } from "./store-test-objects.fixture.ts";
import { serviceKey as key, useTempStore } from "./temp-store.fixture.ts";

const WRITER = fileURLToPath(new URL("./file-store-writer.fixture.ts", import.meta.url));
const temp = useTempStore();
const openStore = temp.open;

interface Ack {
  namespace: string;
  name: string;
  seq: number;
  resourceVersion: string;
}

/** Runs the writer until `killAfterMs` after it is ready, then SIGKILLs it; returns its acknowledged writes. */
async function runWriterAndKill(round: number, killAfterMs: number): Promise<Ack[]> {
  const child: ChildProcess = spawn(process.execPath, [WRITER, temp.dir(), String(round)], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  const acks: Ack[] = [];
  let pending = "";
  let stderr = "";
  let killTimer: NodeJS.Timeout | undefined;
  child.stderr!.on("data", (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  child.stdout!.on("data", (chunk: Buffer) => {
    const lines = (pending + chunk.toString()).split("\n");
    pending = lines.pop()!; // a line cut by the kill was never fully acknowledged
    for (const line of lines) {
      const msg = JSON.parse(line) as Ack | { ready: true };
      if ("ready" in msg) killTimer = setTimeout(() => child.kill("SIGKILL"), killAfterMs);
      else acks.push(msg);
    }
  });
  // A writer that fails by itself (not our kill) must fail the test, never hang it.
  const exit = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    const deadline = setTimeout(() => child.kill("SIGKILL"), 10_000);
    child.once("exit", (code, signal) => {
      clearTimeout(deadline);
      clearTimeout(killTimer);
      resolve({ code, signal });
    });
  });
  if (exit.signal !== "SIGKILL" || killTimer === undefined) {
    throw new Error(`the writer ended on its own (${exit.code ?? exit.signal}): ${stderr}`);
  }
  return acks;
}

describe("FileStore under kill -9", () => {
  it("keeps every acknowledged write and always opens", { timeout: 120_000 }, async () => {
    const ROUNDS = 20;
    /** Per object, the last acknowledged seq: the store may hold that one or a later unacknowledged one. */
    const acked = new Map<string, Ack>();
    let highestAckedVersion = 0;
    let totalAcks = 0;

    for (let round = 0; round < ROUNDS; round++) {
      const acks = await runWriterAndKill(round, 20 + Math.floor(Math.random() * 600));
      totalAcks += acks.length;
      for (const ack of acks) {
        acked.set(`${ack.namespace}/${ack.name}`, ack);
        highestAckedVersion = Math.max(highestAckedVersion, Number(ack.resourceVersion));
      }

      const store = await openStore();
      expect(Number(store.resourceVersion())).toBeGreaterThanOrEqual(highestAckedVersion);
      for (const ack of acked.values()) {
        const obj = store.get(key(ack.name, ack.namespace));
        expect(obj, `${ack.namespace}/${ack.name} was acknowledged`).toBeDefined();
        const seq = Number(obj!.metadata.labels?.["seq"]);
        expect(seq).toBeGreaterThanOrEqual(ack.seq);
        expect(contentOf(obj!)).toEqual(contentOf(serviceAt(ack.namespace, ack.name, seq)));
      }
      await store.close();
    }
    // The loop proves something only if the writer got writes through before being killed.
    expect(totalAcks).toBeGreaterThan(ROUNDS);
  });
});
