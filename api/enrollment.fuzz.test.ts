// Fuzzing enrollment messages: the JSON body a pod's init container sends on the agent's socket
// (agent/control/http.ts readJson, then validateEnrollment).

import type { IncomingMessage } from "node:http";
import { Readable } from "node:stream";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { HttpError, readJson } from "../agent/control/http.ts";
import { fuzzParams } from "../test/fuzz/fuzz.ts";
import { inPortRanges, isIPv4, notAPodAddress, workloadName } from "./enrollment.ts";
import { validateEnrollment } from "./enrollment-schema.ts";

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const FIELDS = ["name", "namespace", "ip", "netnsPath", "labels", "serviceAccount", "excludeInboundPorts"];

const octet = fc.integer({ min: 0, max: 255 });
const label = fc.stringMatching(/^[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?$/);
const port = fc.oneof(fc.integer({ min: -2, max: 65537 }), fc.double(), fc.constantFrom("80", null, true));
/** Bodies near a valid enrollment: each field valid, wrong in type or value, or absent. */
const nearValid = fc.record(
  {
    name: fc.oneof(label, fc.string({ maxLength: 70 }), fc.jsonValue()),
    namespace: fc.oneof(label, fc.string({ maxLength: 10 }), fc.jsonValue()),
    ip: fc.oneof(
      fc.tuple(octet, octet, octet, octet).map((o) => o.join(".")),
      fc.tuple(fc.integer({ min: -1, max: 999 }), octet, octet, octet).map((o) => o.join(".")),
      fc.string({ maxLength: 20 }),
      fc.jsonValue(),
    ),
    netnsPath: fc.oneof(
      fc.string({ maxLength: 20 }).map((s) => `/${s}`),
      fc.string({ maxLength: 10 }),
      fc.jsonValue(),
    ),
    labels: fc.oneof(
      fc.dictionary(fc.string(), fc.string()),
      fc.dictionary(fc.string(), fc.jsonValue()),
      fc.jsonValue(),
    ),
    serviceAccount: fc.oneof(label, fc.string({ maxLength: 10 }), fc.jsonValue()),
    excludeInboundPorts: fc.oneof(
      fc.array(fc.oneof(fc.record({ first: port, last: port }), fc.jsonValue()), { maxLength: 4 }),
      fc.array(fc.constant({ first: 1, last: 2 }), { minLength: 250, maxLength: 260 }),
      fc.jsonValue(),
    ),
    extra: fc.jsonValue(),
  },
  { requiredKeys: [] },
);
const anyBody = fc.oneof(nearValid, fc.jsonValue(), fc.anything());

describe("enrollment messages (fuzz)", () => {
  it("validateEnrollment never throws; an accepted enrollment satisfies every rule", () => {
    fc.assert(
      fc.property(anyBody, (body) => {
        const r = validateEnrollment(body);
        if (!r.ok) {
          expect(typeof r.field).toBe("string");
          expect(r.message.length).toBeGreaterThan(0);
          return;
        }
        const v = r.value;
        for (const key of Object.keys(v)) expect(FIELDS).toContain(key);
        expect(v.name).toMatch(DNS_LABEL);
        expect(v.namespace).toMatch(DNS_LABEL);
        expect(isIPv4(v.ip)).toBe(true);
        expect(notAPodAddress(v.ip)).toBeUndefined();
        if (v.netnsPath !== undefined) expect(v.netnsPath.startsWith("/")).toBe(true);
        for (const value of Object.values(v.labels)) expect(typeof value).toBe("string");
        expect(v.serviceAccount).toMatch(DNS_LABEL);
        for (const { first, last } of v.excludeInboundPorts ?? []) {
          expect(
            Number.isInteger(first) && Number.isInteger(last) && first >= 1 && first <= last && last <= 65535,
          ).toBe(true);
          expect(inPortRanges(first, v.excludeInboundPorts)).toBe(true);
        }
        expect(typeof workloadName(v)).toBe("string");
      }),
      fuzzParams(2000),
    );
  });

  it("an accepted enrollment, sent again as JSON, is accepted as the same", () => {
    fc.assert(
      fc.property(nearValid, (body) => {
        const r = validateEnrollment(body);
        if (!r.ok) return;
        const again = validateEnrollment(JSON.parse(JSON.stringify(r.value)));
        expect(again).toEqual({ ok: true, value: r.value });
      }),
      fuzzParams(2000),
    );
  });

  it("notAPodAddress and isIPv4 take any string", () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string(),
          fc.tuple(octet, octet, octet, octet).map((o) => o.join(".")),
        ),
        (s) => {
          const special = notAPodAddress(s);
          expect(special === undefined || typeof special === "string").toBe(true);
          expect(typeof isIPv4(s)).toBe("boolean");
        },
      ),
      fuzzParams(2000),
    );
  });

  it("readJson: any bytes, any content type: JSON or an HttpError (400, 413, 415), nothing else", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.jsonValue().map((v) => Buffer.from(JSON.stringify(v) ?? "")),
          fc.string().map((s) => Buffer.from(s)),
          fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a)),
          fc.integer({ min: 1, max: 5000 }).map((n) => Buffer.from("[".repeat(n))),
        ),
        fc.constantFrom(
          "application/json",
          "application/json; charset=utf-8",
          "text/plain",
          undefined,
          "application/jsonx",
        ),
        fc.option(fc.oneof(fc.nat().map(String), fc.string({ maxLength: 5 })), { nil: undefined }),
        async (bytes, contentType, contentLength) => {
          const req = Readable.from([bytes]) as unknown as IncomingMessage;
          req.headers = {
            ...(contentType ? { "content-type": contentType } : {}),
            ...(contentLength !== undefined ? { "content-length": contentLength } : {}),
          };
          try {
            const value = await readJson(req, 1024);
            expect(value).toEqual(JSON.parse(bytes.toString("utf8")));
            validateEnrollment(value);
          } catch (err) {
            expect(err).toBeInstanceOf(HttpError);
            expect([400, 413, 415]).toContain((err as HttpError).status);
          }
        },
      ),
      fuzzParams(500, 0.2),
    );
  });
});
