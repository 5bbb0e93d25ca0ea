import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { channelSecurity, controllerHost, readCaFile, tlsFailureHint } from "./controller-channel.ts";

// A certificate's PEM frame around bytes that are no certificate.
const BROKEN = `-----BEGIN CERTIFICATE-----\nMIIBnTCCAUSgAwIBAgIQaRvEPnmn1xHBjx2ot9OjRTAKBggqhkjOPQQDAjA+\n-----END CERTIFICATE-----`;

const dir = mkdtempSync(join(tmpdir(), "nodemesh-channel-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("channelSecurity", () => {
  it("is TLS with a CA file, whatever the address", () => {
    expect(channelSecurity("10.250.0.2:15012", "/ca.pem", false)).toEqual({ tls: true, caFile: "/ca.pem" });
    expect(channelSecurity("127.0.0.1:15012", "/ca.pem", false)).toEqual({ tls: true, caFile: "/ca.pem" });
  });

  it("keeps plaintext on loopback only, unless --insecure-controller", () => {
    expect(channelSecurity("127.0.0.1:15012", undefined, false)).toEqual({ tls: false });
    expect(channelSecurity("127.3.4.5:1", undefined, false)).toEqual({ tls: false });
    expect(channelSecurity("localhost:15012", undefined, false)).toEqual({ tls: false });
    for (const address of ["10.250.0.2:15012", "nodemesh-controller.nodemesh-system.svc:15012", "128.0.0.1:1"]) {
      expect(() => channelSecurity(address, undefined, false)).toThrow(
        `refusing to connect to the controller at ${address} in plaintext`,
      );
    }
    expect(() => channelSecurity("10.250.0.2:15012", undefined, false)).toThrow(
      /--controller-ca-file FILE.*--insecure-controller/,
    );
    expect(channelSecurity("10.250.0.2:15012", undefined, true)).toEqual({ tls: false });
  });

  it("refuses both a CA file and --insecure-controller", () => {
    expect(() => channelSecurity("10.250.0.2:15012", "/ca.pem", true)).toThrow(/exclude each other/);
  });

  it("takes the host of HOST:PORT", () => {
    expect(controllerHost("ctl.example:15012")).toBe("ctl.example");
    expect(controllerHost("[::1]:15012")).toBe("[::1]");
  });
});

describe("readCaFile", () => {
  it("names the file when it is missing or holds no certificate", () => {
    expect(() => readCaFile(join(dir, "missing.pem"))).toThrow(/cannot read the controller's CA file .*missing\.pem/);
    const junk = join(dir, "junk.pem");
    writeFileSync(junk, "not a certificate\n");
    expect(() => readCaFile(junk)).toThrow(/junk\.pem is not a PEM certificate: no PEM certificate/);
    const broken = join(dir, "broken.pem");
    writeFileSync(broken, BROKEN);
    expect(() => readCaFile(broken)).toThrow(/broken\.pem is not a PEM certificate/);
  });
});

describe("tlsFailureHint", () => {
  it("points at the CA file and the names for certificate failures", () => {
    const unknownRoot =
      "14 UNAVAILABLE: No connection established. Last error: Error: unable to verify the first certificate";
    expect(tlsFailureHint(unknownRoot, true)).toMatch(/--controller-ca-file/);
    const wrongName =
      "14 UNAVAILABLE: No connection established. Last error: Error [ERR_TLS_CERT_ALTNAME_INVALID]: Hostname/IP does not match certificate's altnames";
    expect(tlsFailureHint(wrongName, true)).toMatch(/--tls-san/);
  });

  it("says nothing for a controller that is down or a refusal", () => {
    expect(
      tlsFailureHint("14 UNAVAILABLE: No connection established. Last error: Error: connect ECONNREFUSED", true),
    ).toBe(undefined);
    expect(tlsFailureHint("16 UNAUTHENTICATED: missing or invalid bearer token", true)).toBeUndefined();
  });
});
