import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { factsOfThisBoot, gatherRawFacts, pickUnderlayIp, toNodeFacts } from "./node-facts.ts";

describe("node facts", () => {
  const raw = {
    cpu: { manufacturer: "Intel", brand: "Xeon", cores: 2 },
    mem: { total: 4 << 30 },
    os: { distro: "Debian GNU/Linux", release: "12", kernel: "6.1.0" },
    interfaces: [
      { iface: "lo", ip4: "127.0.0.1", mac: "00:00:00:00:00:00", internal: true },
      { iface: "eth0", ip4: "10.0.0.1", mac: "02:00:00:00:00:01", internal: false },
    ],
  };

  it("maps systeminformation's data to the Hello facts", () => {
    expect(toNodeFacts(raw)).toEqual({
      cpuModel: "Intel Xeon",
      cpuCores: 2,
      memoryBytes: 4 << 30,
      os: "Debian GNU/Linux 12",
      kernel: "6.1.0",
      interfaces: [
        { name: "lo", ipv4: "127.0.0.1", mac: "00:00:00:00:00:00" },
        { name: "eth0", ipv4: "10.0.0.1", mac: "02:00:00:00:00:01" },
      ],
    });
    expect(toNodeFacts({})).toMatchObject({ cpuModel: "", cpuCores: 0, interfaces: [] });
  });

  it("takes the first non-loopback IPv4 address as the underlay address", () => {
    expect(pickUnderlayIp(raw)).toBe("10.0.0.1");
    expect(pickUnderlayIp({ interfaces: [raw.interfaces[0]] })).toBe("");
  });

  it("reads this machine's facts", async () => {
    const facts = toNodeFacts(await gatherRawFacts());
    expect(facts.cpuCores).toBeGreaterThan(0);
    expect(facts.memoryBytes).toBeGreaterThan(0);
    expect(facts.kernel).not.toBe("");
    expect(facts.interfaces.map((i) => i.name)).toContain("lo");
  });

  it("gathers once per boot: a restarted agent takes the facts its predecessor kept", async () => {
    const dir = mkdtempSync(join(tmpdir(), "nodemesh-facts-"));
    try {
      let gathered = 0;
      const gather = async () => {
        gathered++;
        return raw;
      };
      expect(await factsOfThisBoot(dir, gather)).toEqual(raw);
      expect(await factsOfThisBoot(dir, gather)).toEqual(raw);
      expect(gathered).toBe(1);
      // Kept by another boot (or unreadable): gathered again.
      const file = join(dir, "node-facts.json");
      const kept = JSON.parse(readFileSync(file, "utf8"));
      writeFileSync(file, JSON.stringify({ ...kept, bootId: "another boot" }));
      await factsOfThisBoot(dir, gather);
      writeFileSync(file, "{");
      await factsOfThisBoot(dir, gather);
      expect(gathered).toBe(3);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
