// What an agent tells the controller about its node (shown by `nodemesh nodes`), gathered once
// per boot with systeminformation. Gathering is best effort: a fact that cannot be read is
// left empty rather than keeping the agent from connecting.

import { readFileSync } from "node:fs";
import { join } from "node:path";
import si from "systeminformation";
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

export async function gatherRawFacts(): Promise<RawFacts> {
  const settled = <T>(p: Promise<T>) => p.catch(() => undefined);
  const [cpu, mem, os, interfaces] = await Promise.all([
    settled(si.cpu()),
    settled(si.mem()),
    settled(si.osInfo()),
    settled(si.networkInterfaces()),
  ]);
  return { cpu, mem, os, interfaces: Array.isArray(interfaces) ? interfaces : [] };
}

/**
 * The facts of this boot: gathered by the first agent since the node booted, and kept in the
 * state dir for the agents after it. Gathering blocks the thread for a quarter of a second or
 * more (systeminformation runs commands synchronously), which a restart's gap would pay.
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
