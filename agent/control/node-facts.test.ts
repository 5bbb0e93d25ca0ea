import { describe, expect, it } from "vitest";
import { gatherRawFacts, pickUnderlayIp, toNodeFacts } from "./node-facts.ts";

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
});
