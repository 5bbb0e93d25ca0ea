// Run as a process of its own (node-facts.ts gatherRawFacts): gathers the node's facts with
// systeminformation and prints them as one line of JSON. Its modules (700 kB of JavaScript) and
// what they allocate go when this process exits, instead of staying in the agent for good.

import si from "systeminformation";
import type { RawFacts } from "./node-facts.ts";

const settled = <T>(p: Promise<T>) => p.catch(() => undefined);
const [cpu, mem, os, interfaces] = await Promise.all([
  settled(si.cpu()),
  settled(si.mem()),
  settled(si.osInfo()),
  settled(si.networkInterfaces()),
]);
const raw: RawFacts = {
  cpu: cpu && { manufacturer: cpu.manufacturer, brand: cpu.brand, cores: cpu.cores },
  mem: mem && { total: mem.total },
  os: os && { distro: os.distro, release: os.release, kernel: os.kernel },
  interfaces: (Array.isArray(interfaces) ? interfaces : []).map((n) => ({
    iface: n.iface,
    ip4: n.ip4,
    mac: n.mac,
    internal: n.internal,
  })),
};
process.stdout.write(`${JSON.stringify(raw)}\n`);
