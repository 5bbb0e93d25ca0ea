// What an agent tells the controller about its node (shown by `nodemesh nodes`), gathered once
// per boot with systeminformation, in a process of its own (node-facts-gather.ts). Gathering is
// best effort: a fact that cannot be read is left empty rather than keeping the agent from connecting.

import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { extname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type si from "systeminformation";
import type { NodeFacts } from "../../api/agent-service.ts";
import { writeFileAtomic } from "../sys/files.ts";

const FACTS_FILE = "node-facts.json";

export interface RawFacts {
  cpu?: Pick<si.Systeminformation.CpuData, "manufacturer" | "brand" | "cores">;
  mem?: Pick<si.Systeminformation.MemData, "total">;
  os?: Pick<si.Systeminformation.OsData, "distro" | "release" | "kernel">;
  interfaces?: Pick<si.Systeminformation.NetworkInterfacesData, "iface" | "ip4" | "mac" | "internal">[];
}

export function toNodeFacts(raw: RawFacts): NodeFacts {
  return {
    cpuModel: [raw.cpu?.manufacturer, raw.cpu?.brand].filter(Boolean).join(" "),
    cpuCores: raw.cpu?.cores ?? 0,
    memoryBytes: raw.mem?.total ?? 0,
    os: [raw.os?.distro, raw.os?.release].filter(Boolean).join(" "),
    kernel: raw.os?.kernel ?? "",
    interfaces: (raw.interfaces ?? []).map((n) => ({ name: n.iface, ipv4: n.ip4 ?? "", mac: n.mac ?? "" })),
  };
}

/** The address other nodes reach this one on: the first non-loopback interface with IPv4. */
export function pickUnderlayIp(raw: RawFacts): string {
  return raw.interfaces?.find((n) => !n.internal && n.ip4)?.ip4 ?? "";
}

/** node-facts-gather.ts from source, .js when built (dist/). */
const GATHER_SCRIPT = fileURLToPath(new URL(`./node-facts-gather${extname(import.meta.url)}`, import.meta.url));
/** systeminformation runs shell commands per interface; a node that hangs one is not waited on for ever. */
const GATHER_TIMEOUT_MS = 30_000;

/**
 * The facts, from a short-lived process: loaded in the agent, systeminformation's modules and
 * what they allocate stayed for the agent's life (11 MB of RSS in a bare process), for facts
 * read once per boot. Its synchronous commands no longer block the agent's thread either.
 */
export function gatherRawFacts(): Promise<RawFacts> {
  return new Promise((resolve) => {
    execFile(process.execPath, [GATHER_SCRIPT], { timeout: GATHER_TIMEOUT_MS, encoding: "utf8" }, (err, stdout) => {
      try {
        resolve(err ? {} : (JSON.parse(stdout) as RawFacts));
      } catch {
        resolve({});
      }
    });
  });
}

/**
 * The facts of this boot: gathered by the first agent since the node booted, and kept in the
 * state dir for the agents after it: gathering takes a quarter of a second or more
 * (systeminformation runs commands one after another), which a restart's gap would pay.
 */
export async function factsOfThisBoot(stateDir: string, gather = gatherRawFacts): Promise<RawFacts> {
  const file = join(stateDir, FACTS_FILE);
  const bootId = readBootId();
  if (bootId) {
    try {
      const kept = JSON.parse(readFileSync(file, "utf8")) as { bootId?: unknown; raw?: RawFacts };
      if (kept.bootId === bootId && kept.raw && typeof kept.raw === "object") return kept.raw;
    } catch {
      // None kept, or unreadable: gathered again below.
    }
  }
  const raw = await gather();
  if (bootId) {
    try {
      writeFileAtomic(file, `${JSON.stringify({ bootId, raw })}\n`);
    } catch {
      // Best effort: the next agent gathers them again.
    }
  }
  return raw;
}

function readBootId(): string | undefined {
  try {
    return readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim() || undefined;
  } catch {
    return undefined;
  }
}
