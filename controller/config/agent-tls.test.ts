import { describe, expect, it } from "vitest";
import { agentTlsEnabled, parseGrpcTls, parseTlsSans, renewalDelayMs, serverNames } from "./agent-tls.ts";

describe("agentTlsEnabled", () => {
  it("auto: TLS off loopback, plaintext on loopback; on and off as told", () => {
    expect(agentTlsEnabled("auto", "0.0.0.0")).toBe(true);
    expect(agentTlsEnabled("auto", "10.250.0.2")).toBe(true);
    expect(agentTlsEnabled("auto", "::")).toBe(true);
    expect(agentTlsEnabled("auto", "127.0.0.1")).toBe(false);
    expect(agentTlsEnabled("auto", "localhost")).toBe(false);
    expect(agentTlsEnabled("auto", "::1")).toBe(false);
    expect(agentTlsEnabled("on", "127.0.0.1")).toBe(true);
    expect(agentTlsEnabled("off", "0.0.0.0")).toBe(false);
  });

  it("parses --grpc-tls", () => {
    expect(parseGrpcTls("on")).toBe("on");
    expect(() => parseGrpcTls("yes")).toThrow('--grpc-tls must be auto, on or off, got "yes"');
  });
});

describe("parseTlsSans", () => {
  it("takes comma-separated DNS names and IP addresses, repeated", () => {
    expect(parseTlsSans(["a.example,10.0.0.1", " *.ctl.example ", "fd00::1"])).toEqual([
      "a.example",
      "10.0.0.1",
      "*.ctl.example",
      "fd00::1",
    ]);
    expect(parseTlsSans([])).toEqual([]);
  });

  it("refuses what is neither", () => {
    expect(() => parseTlsSans(["ok.example,bad name"])).toThrow('got "bad name"');
    expect(() => parseTlsSans(["a..b"])).toThrow(/--tls-san/);
    expect(() => parseTlsSans(["http://x"])).toThrow(/--tls-san/);
    expect(() => parseTlsSans([""])).toThrow(/--tls-san/);
  });
});

describe("serverNames", () => {
  const interfaces = ["127.0.0.1", "10.250.0.2", "::1", "fe80::1"];

  it("names localhost, 127.0.0.1 and a specific listen address, then the extra names", () => {
    expect(
      serverNames({
        listenHost: "10.250.0.2",
        extra: ["ctl.example", "10.0.0.9"],
        interfaceAddresses: interfaces,
        hostname: "vm",
      }),
    ).toEqual({ dnsNames: ["localhost", "ctl.example"], ipAddresses: ["127.0.0.1", "10.250.0.2", "10.0.0.9"] });
  });

  it("on 0.0.0.0: the host name and every IPv4 address of the host; on ::, every address", () => {
    expect(
      serverNames({ listenHost: "0.0.0.0", extra: [], interfaceAddresses: interfaces, hostname: "Node-1" }),
    ).toEqual({
      dnsNames: ["localhost", "node-1"],
      ipAddresses: ["127.0.0.1", "10.250.0.2"],
    });
    expect(serverNames({ listenHost: "::", extra: [], interfaceAddresses: interfaces, hostname: "vm" })).toEqual({
      dnsNames: ["localhost", "vm"],
      ipAddresses: ["127.0.0.1", "10.250.0.2", "::1", "fe80::1"],
    });
  });

  it("leaves out a host name that is no DNS name", () => {
    expect(
      serverNames({ listenHost: "0.0.0.0", extra: [], interfaceAddresses: [], hostname: "my_host" }).dnsNames,
    ).toEqual(["localhost"]);
  });
});

describe("renewalDelayMs", () => {
  it("is half of the lifetime from its start, never negative, within Node's timer range", () => {
    expect(renewalDelayMs(1000, 3000, 1000)).toBe(1000);
    expect(renewalDelayMs(1000, 3000, 1500)).toBe(500);
    expect(renewalDelayMs(1000, 3000, 5000)).toBe(0);
    expect(renewalDelayMs(0, 365 * 24 * 3600_000, 0)).toBe(2 ** 31 - 1);
  });
});
