import { describe, expect, it } from "vitest";
import { notAPodAddress } from "./enrollment.ts";
import { validateEnrollment } from "./enrollment-schema.ts";

const base = { name: "web", namespace: "default", ip: "10.244.1.12" };
const field = (body: unknown) => {
  const r = validateEnrollment(body);
  return r.ok ? undefined : r.field;
};

describe("enrollment validation", () => {
  it.each([
    ["0.0.0.0", "unspecified"],
    ["127.0.0.1", "loopback"],
    ["127.10.0.5", "loopback"],
    ["169.254.169.254", "link-local"],
    ["224.0.0.1", "multicast"],
    ["255.255.255.255", "broadcast"],
  ])("refuses %s as a pod address (%s)", (ip, kind) => {
    expect(notAPodAddress(ip)).toContain(kind);
    const r = validateEnrollment({ ...base, ip });
    expect(r).toMatchObject({ ok: false, field: "ip" });
  });

  it.each(["10.244.1.12", "192.168.0.1", "169.253.1.1", "126.255.255.255", "223.255.255.254"])(
    "takes %s as a pod address",
    (ip) => {
      expect(notAPodAddress(ip)).toBeUndefined();
      expect(validateEnrollment({ ...base, ip }).ok).toBe(true);
    },
  );

  it("carries the excluded inbound ports, checked range by range", () => {
    const ok = validateEnrollment({ ...base, excludeInboundPorts: [{ first: 9090, last: 9090 }] });
    expect(ok).toMatchObject({ ok: true, value: { excludeInboundPorts: [{ first: 9090, last: 9090 }] } });
    expect(field({ ...base, excludeInboundPorts: "9090" })).toBe("excludeInboundPorts");
    expect(field({ ...base, excludeInboundPorts: [{ first: 9, last: 8 }] })).toBe("excludeInboundPorts[0]");
    expect(field({ ...base, excludeInboundPorts: [{ first: 1 }, { first: 0, last: 2 }] })).toBe(
      "excludeInboundPorts[0]",
    );
    expect(field({ ...base, excludeInboundPorts: [null] })).toBe("excludeInboundPorts[0]");
    const many = Array.from({ length: 257 }, () => ({ first: 1, last: 1 }));
    expect(field({ ...base, excludeInboundPorts: many })).toBe("excludeInboundPorts");
  });

  it("names the first bad field, with the messages the init container shows", () => {
    expect(validateEnrollment({ ...base, extra: 1 })).toEqual({
      ok: false,
      field: "extra",
      message: 'unknown field "extra"',
    });
    expect(validateEnrollment({ ...base, name: "Web" })).toEqual({
      ok: false,
      field: "name",
      message: "name must be a DNS label (lowercase letters, digits, '-')",
    });
    expect(validateEnrollment({ ...base, labels: { app: 1 } })).toMatchObject({ ok: false, field: "labels.app" });
    // Kubernetes' label rules: what the tunnel handshake and the metrics carry stays printable.
    expect(validateEnrollment({ ...base, labels: { app: "web\r\nX-Evil: 1" } })).toMatchObject({
      ok: false,
      field: "labels.app",
    });
    expect(validateEnrollment({ ...base, labels: { "bad key": "x" } })).toMatchObject({
      ok: false,
      field: "labels.bad key",
      message: expect.stringMatching(/^label keys follow Kubernetes' rules/),
    });
    expect(validateEnrollment({ ...base, labels: { app: "x".repeat(64) } })).toMatchObject({
      ok: false,
      field: "labels.app",
    });
    expect(validateEnrollment({ ...base, labels: { "app.kubernetes.io/name": "web", version: "v1.2_3" } }).ok).toBe(
      true,
    );
    expect(validateEnrollment({ ...base, netnsPath: "netns" })).toMatchObject({ ok: false, field: "netnsPath" });
    expect(validateEnrollment([])).toEqual({ ok: false, field: "", message: "body must be a JSON object" });
    expect(validateEnrollment(base)).toEqual({
      ok: true,
      value: { ...base, labels: {}, serviceAccount: "default" },
    });
  });
});
