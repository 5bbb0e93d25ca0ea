// The values of the eBPF programs' config maps, byte for byte as bpf/nodemesh.h declares them
// (x86-64 and arm64 are little-endian: host-order fields are written LE; "net" fields big-endian).
// Pure: the loader (ebpf.ts) hands these to `bpftool map update ... value hex ...`.
import { AGENT_SOCKET_MARK, OUTBOUND_PORT } from "../api/dataplane.ts";
import { INIT_ERROR_CODES, InitError } from "./errors.ts";
import { AGENT_MARK_MASK, type Cidr, type RedirectConfig } from "./rules.ts";

/** NM_MAX_PORT_RANGES and NM_MAX_CIDRS in bpf/nodemesh.h. */
export const MAX_PORT_RANGES = 32;
export const MAX_CIDRS = 32;
/** sizeof(struct nm_pod_config) and sizeof(struct nm_node_config). */
export const POD_CONFIG_SIZE = 24 + 4 * MAX_PORT_RANGES + 8 * MAX_CIDRS;
export const NODE_CONFIG_SIZE = 8;
/** Where nm_connect4 sends a pod's connections: the agent's outbound listener binds 0.0.0.0:15001 in the pod. */
export const REDIRECT_IP = "127.0.0.1";

/**
 * struct nm_pod_config for a pod: its exclusions, plus its own addresses as /32 exclusions (the
 * pod talking to itself stays local, as `-o lo` does in the iptables rules).
 */
export function podConfigValue(config: RedirectConfig, localAddresses: readonly string[]): Buffer {
  const cidrs: Cidr[] = [
    ...config.excludeOutboundCidrs,
    ...localAddresses.map((address) => ({ address, prefixLength: 32 })),
  ];
  if (config.excludeOutboundPorts.length > MAX_PORT_RANGES) {
    throw tooMany(`${config.excludeOutboundPorts.length} excluded outbound port ranges`, MAX_PORT_RANGES);
  }
  if (cidrs.length > MAX_CIDRS) {
    throw tooMany(
      `${config.excludeOutboundCidrs.length} excluded outbound CIDRs and ${localAddresses.length} pod addresses`,
      MAX_CIDRS,
    );
  }
  const b = Buffer.alloc(POD_CONFIG_SIZE);
  b.writeUInt32LE(1, 0); // enabled
  b.writeUInt32LE(AGENT_SOCKET_MARK, 4);
  b.writeUInt32LE(AGENT_MARK_MASK, 8);
  b.writeUInt32BE(ipv4(REDIRECT_IP), 12);
  b.writeUInt16LE(OUTBOUND_PORT, 16);
  b.writeUInt16LE(config.excludeOutboundPorts.length, 18);
  b.writeUInt16LE(cidrs.length, 20);
  config.excludeOutboundPorts.forEach(({ first, last }, i) => {
    b.writeUInt16LE(first, 24 + 4 * i);
    b.writeUInt16LE(last, 26 + 4 * i);
  });
  const cidrBase = 24 + 4 * MAX_PORT_RANGES;
  cidrs.forEach(({ address, prefixLength }, i) => {
    const mask = prefixLength === 0 ? 0 : (0xffffffff << (32 - prefixLength)) >>> 0;
    b.writeUInt32BE((ipv4(address) & mask) >>> 0, cidrBase + 8 * i);
    b.writeUInt32BE(mask, cidrBase + 8 * i + 4);
  });
  return b;
}

/** struct nm_node_config: answer SO_ORIGINAL_DST for sockets accepted on the outbound port. */
export function nodeConfigValue(): Buffer {
  const b = Buffer.alloc(NODE_CONFIG_SIZE);
  b.writeUInt32LE(1, 0);
  b.writeUInt16LE(OUTBOUND_PORT, 4);
  return b;
}

/** The key of a one-entry array map (index 0), as bpftool's `key hex` words. */
export const ZERO_KEY = ["00", "00", "00", "00"];

/** Bytes as bpftool's `hex` words: "0a", "ff", … */
export function hexWords(bytes: Buffer): string[] {
  return [...bytes].map((byte) => byte.toString(16).padStart(2, "0"));
}

function ipv4(address: string): number {
  return address.split(".").reduce((acc, octet) => acc * 256 + Number(octet), 0) >>> 0;
}

function tooMany(what: string, limit: number): InitError {
  return new InitError(
    INIT_ERROR_CODES.INVALID_ARGUMENT,
    `${what}: the eBPF mode holds at most ${limit}; merge ranges, or use --mode iptables`,
  );
}
