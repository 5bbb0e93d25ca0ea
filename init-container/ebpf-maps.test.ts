// The config maps' bytes, as bpf/nodemesh.h lays them out (ebpf.test.ts checks the sizes against
// the loaded maps, and the programs' behaviour end to end).
import { describe, expect, it } from "vitest";
import {
  hexWords,
  MAX_CIDRS,
  MAX_PORT_RANGES,
  NODE_CONFIG_SIZE,
  nodeConfigValue,
  POD_CONFIG_SIZE,
  podConfigValue,
} from "./ebpf-maps.ts";
import { parseExclusions } from "./rules.ts";

describe("eBPF config map values", () => {
  it("lay out struct nm_pod_config: mark, redirect target, port ranges, CIDRs and the pod's own addresses", () => {
    const config = parseExclusions({ outboundPorts: "22,8000:8100", outboundCidrs: "10.0.0.0/8,192.168.7.9" });
    const b = podConfigValue(config, ["10.244.1.11"]);
    expect(POD_CONFIG_SIZE).toBe(408);
    expect(b.length).toBe(POD_CONFIG_SIZE);
    expect(b.readUInt32LE(0)).toBe(1); // enabled
    expect(b.readUInt32LE(4)).toBe(0x539); // agent mark
    expect(b.readUInt32LE(8)).toBe(0xfff); // its mask
    expect([...b.subarray(12, 16)]).toEqual([127, 0, 0, 1]); // network order
    expect(b.readUInt16LE(16)).toBe(15001);
    expect(b.readUInt16LE(18)).toBe(2); // port ranges
    expect(b.readUInt16LE(20)).toBe(3); // CIDRs: 2 excluded + the pod's address
    expect([b.readUInt16LE(24), b.readUInt16LE(26), b.readUInt16LE(28), b.readUInt16LE(30)]).toEqual([
      22, 22, 8000, 8100,
    ]);
    const cidr = (i: number) => hexWords(b.subarray(152 + 8 * i, 160 + 8 * i)).join(" ");
    expect(cidr(0)).toBe("0a 00 00 00 ff 00 00 00");
    expect(cidr(1)).toBe("c0 a8 07 09 ff ff ff ff");
    expect(cidr(2)).toBe("0a f4 01 0b ff ff ff ff");
    expect(cidr(3)).toBe("00 00 00 00 00 00 00 00");
  });

  it("lay out struct nm_node_config: answer for sockets accepted on 15001", () => {
    const b = nodeConfigValue();
    expect(b.length).toBe(NODE_CONFIG_SIZE);
    expect(b.readUInt32LE(0)).toBe(1);
    expect(b.readUInt16LE(4)).toBe(15001);
  });

  it("refuse more exclusions than the maps hold, pointing at the iptables mode", () => {
    const ports = Array.from({ length: MAX_PORT_RANGES + 1 }, (_, i) => `${1000 + i}`).join(",");
    expect(() => podConfigValue(parseExclusions({ outboundPorts: ports }), [])).toThrow(
      expect.objectContaining({ code: "invalid_argument", message: expect.stringContaining("--mode iptables") }),
    );
    const cidrs = Array.from({ length: MAX_CIDRS }, (_, i) => `10.0.${i}.0/24`).join(",");
    expect(() => podConfigValue(parseExclusions({ outboundCidrs: cidrs }), [])).not.toThrow();
    // The pod's own address takes a slot too.
    expect(() => podConfigValue(parseExclusions({ outboundCidrs: cidrs }), ["10.244.1.11"])).toThrow("at most 32");
  });
});
