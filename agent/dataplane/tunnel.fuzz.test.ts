// Fuzzing the tunnel handshake (tunnel.ts): the CONNECT head a peer sends on the tunnel port, the
// answer the source agent reads back, the handshake's fields in either framing and their signature.

import type { Socket } from "node:net";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { chunked, fakeSocket, fuzzParams, headBytes, readAll } from "../../test/fuzz/fuzz.ts";
import { AgentError, AgentErrors } from "../errors.ts";
import {
  acceptTunnel,
  handshakeHeaders,
  MAX_HEAD_BYTES,
  openTunnel,
  type TunnelRequest,
  tunnelAuthRefusal,
  tunnelRequestOf,
} from "./tunnel.ts";

const FIELD_NAMES = [
  "x-nodemesh-source",
  "x-nodemesh-source-workload",
  "x-nodemesh-source-ip",
  "x-nodemesh-protocol",
  "x-nodemesh-tunnel-auth",
];
const octet = fc.integer({ min: 0, max: 255 });
const ipv4 = fc.tuple(octet, octet, octet, octet).map((o) => o.join("."));
const label = fc.stringMatching(/^[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?$/);
/** What a pod's `app` label may be: enrollment takes any string. */
const appLabel = fc.oneof(label, fc.string({ maxLength: 40 }), fc.string({ unit: "binary", maxLength: 20 }));
const hex64 = fc.string({ unit: fc.constantFrom(..."0123456789abcdef"), minLength: 64, maxLength: 64 });
const key = fc.option(
  fc.uint8Array({ minLength: 32, maxLength: 32 }).map((k) => Buffer.from(k).toString("hex")),
  {
    nil: undefined,
  },
);

/** A request as an agent makes one (connect.ts). */
const request: fc.Arbitrary<TunnelRequest> = fc
  .record({
    ip: ipv4,
    port: fc.integer({ min: 1, max: 65535 }),
    ns: label,
    pod: label,
    app: appLabel,
    sourceIp: ipv4,
    protocol: fc.constantFrom(undefined, "http1" as const, "h2" as const),
  })
  .map(({ ns, pod, app, ...r }) => ({ ...r, source: `${ns}/${pod}`, workload: `${ns}/${app}` }));

/** Heads shaped like a CONNECT request, with the usual ways to get one wrong. */
const connectHead = fc
  .record({
    method: fc.constantFrom("CONNECT", "connect", "GET", "CONNECT ", ""),
    target: fc.oneof(
      fc.tuple(ipv4, fc.integer({ min: -1, max: 70000 })).map(([ip, port]) => `${ip}:${port}`),
      fc.string({ maxLength: 40 }),
    ),
    version: fc.constantFrom("HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "", "HTTP/1.1 "),
    headers: fc.array(
      fc.tuple(fc.oneof(fc.constantFrom(...FIELD_NAMES), fc.string({ maxLength: 12 })), fc.string({ maxLength: 60 })),
      { maxLength: 8 },
    ),
    separator: fc.constantFrom(": ", ":", " : ", "\t:"),
    lineEnd: fc.constantFrom("\r\n", "\r\n", "\n"),
  })
  .map(({ method, target, version, headers, separator, lineEnd }) =>
    Buffer.from(
      `${method} ${target} ${version}${lineEnd}${headers.map(([n, v]) => `${n}${separator}${v}${lineEnd}`).join("")}\r\n`,
      "latin1",
    ),
  );

function isProtocolError(err: unknown): boolean {
  return err instanceof AgentError && err.code === AgentErrors.TUNNEL_PROTOCOL.code;
}

/** What a parsed request must satisfy, whatever the peer sent. */
function checkParsed(req: TunnelRequest): void {
  expect(req.ip).toMatch(/^\d{1,3}(\.\d{1,3}){3}$/);
  expect(Number.isInteger(req.port) && req.port >= 1 && req.port <= 65535).toBe(true);
  expect(req.source).not.toMatch(/[\r\n]/);
  expect(req.source.length).toBeLessThanOrEqual(256);
  if (req.workload !== undefined) expect(req.workload).toMatch(/^[^\r\n]{1,256}$/);
  if (req.sourceIp !== undefined) expect(req.sourceIp).toMatch(/^\d{1,3}(\.\d{1,3}){3}$/);
  expect([undefined, "http1", "h2"]).toContain(req.protocol);
}

describe("tunnel handshake (fuzz)", () => {
  it("tunnelRequestOf: a request that satisfies its invariants, or a protocol error", () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string({ maxLength: 40 }),
          fc.tuple(ipv4, fc.integer({ min: -5, max: 70000 })).map(([i, p]) => `${i}:${p}`),
        ),
        fc.dictionary(fc.constantFrom(...FIELD_NAMES), fc.string({ maxLength: 300 })),
        (target, headers) => {
          let req: TunnelRequest;
          try {
            req = tunnelRequestOf(target, (name) => headers[name]);
          } catch (err) {
            expect(isProtocolError(err)).toBe(true);
            return;
          }
          checkParsed(req);
          expect(`${req.ip}:${req.port}`).toBe(target.replace(/:0+(?=\d)/, ":"));
        },
      ),
      fuzzParams(2000),
    );
  });

  it("acceptTunnel: any bytes give a request or a protocol error, and what follows the head stays unread", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(connectHead, headBytes),
        fc.uint8Array({ maxLength: 32 }),
        fc.array(fc.nat(), { maxLength: 5 }),
        async (head, payload, cuts) => {
          const bytes = Buffer.concat([head, Buffer.from(payload)]);
          const socket = fakeSocket(chunked(bytes, cuts));
          let req: TunnelRequest;
          try {
            req = await acceptTunnel(socket as unknown as Socket, 5000);
          } catch (err) {
            expect(isProtocolError(err)).toBe(true);
            return;
          }
          checkParsed(req);
          const end = bytes.indexOf("\r\n\r\n");
          expect(end).toBeGreaterThanOrEqual(0);
          expect((await readAll(socket)).equals(bytes.subarray(end + 4))).toBe(true);
        },
      ),
      fuzzParams(500, 0.2),
    );
  });

  it("acceptTunnel refuses a head that never ends, once it outgrows the limit", async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: MAX_HEAD_BYTES + 1, max: 3 * MAX_HEAD_BYTES }), async (size) => {
        const socket = fakeSocket([Buffer.alloc(size, "a")], false);
        await expect(acceptTunnel(socket as unknown as Socket, 5000)).rejects.toThrow(/head too large/);
      }),
      fuzzParams(20, 0.001),
    );
  });

  it("round trip over HTTP/1.1: what openTunnel sends, acceptTunnel reads back, signature and all", async () => {
    await fc.assert(
      fc.asyncProperty(request, key, async (req, k) => {
        const source = fakeSocket([Buffer.from("HTTP/1.1 200 OK\r\n\r\n")], false);
        await openTunnel(source as unknown as Socket, req, 5000, k);
        const parsed = await acceptTunnel(fakeSocket(source.written) as unknown as Socket, 5000);
        checkParsed(parsed);
        const { auth, ...fields } = parsed;
        expect(fields).toEqual(onTheWire(req));
        expect(tunnelAuthRefusal(parsed, k, Date.now())).toBeUndefined();
      }),
      fuzzParams(300, 0.2),
    );
  });

  it("round trip over HTTP/2 headers: handshakeHeaders, then tunnelRequestOf, signature and all", () => {
    fc.assert(
      fc.property(request, key, (req, k) => {
        const headers = handshakeHeaders(req, k);
        const parsed = tunnelRequestOf(`${req.ip}:${req.port}`, (name) => headers[name]);
        const { auth, ...fields } = parsed;
        expect(fields).toEqual(onTheWire(req));
        expect(tunnelAuthRefusal(parsed, k, Date.now())).toBeUndefined();
      }),
      fuzzParams(1000),
    );
  });

  it("a signed handshake with any one field changed is refused", () => {
    fc.assert(
      fc.property(
        request.filter((r) => /^[\x21-\x7e]{1,256}$/.test(r.workload ?? "")),
        hex64,
        fc.constantFrom("source", "workload", "sourceIp", "port", "protocol"),
        (req, k, field) => {
          const headers = handshakeHeaders(req, k);
          const parsed = tunnelRequestOf(`${req.ip}:${req.port}`, (name) => headers[name]);
          const changed = { ...parsed } as Record<string, unknown>;
          changed[field] =
            field === "port" ? (req.port % 65535) + 1 : field === "protocol" ? "tcp" : `${parsed[field as "source"]}x`;
          expect(tunnelAuthRefusal(changed as unknown as TunnelRequest, k, Date.now())).toBeInstanceOf(AgentError);
        },
      ),
      fuzzParams(300),
    );
  });

  it("tunnelAuthRefusal: any signature is refused cleanly, never thrown", () => {
    fc.assert(
      fc.property(
        request,
        hex64,
        fc.oneof(
          fc.string({ maxLength: 130 }),
          fc
            .tuple(fc.nat(), fc.string({ unit: fc.constantFrom(..."0123456789abcdef"), minLength: 60, maxLength: 66 }))
            .map(([ms, h]) => `${ms}.${h}`),
        ),
        (req, k, auth) => {
          expect(tunnelAuthRefusal({ ...req, auth }, k, Date.now())).toBeInstanceOf(AgentError);
          expect(tunnelAuthRefusal({ ...req, auth }, undefined, Date.now())).toBeUndefined();
        },
      ),
      fuzzParams(1000),
    );
  });

  it("openTunnel: any answer resolves only on a 200, else a refusal", async () => {
    await fc.assert(
      fc.asyncProperty(
        request,
        fc.oneof(
          fc
            .tuple(
              fc.constantFrom("HTTP/1.1 ", "HTTP/1.0 ", "http/1.1 ", ""),
              fc.integer({ min: 0, max: 999 }),
              headBytes,
            )
            .map(([v, s, rest]) => Buffer.concat([Buffer.from(`${v}${s}`), rest, Buffer.from("\r\n\r\n")])),
          headBytes,
        ),
        async (req, answer) => {
          const socket = fakeSocket([answer]);
          try {
            await openTunnel(socket as unknown as Socket, req, 5000);
            expect(answer.toString("latin1")).toMatch(/^HTTP\/1\.1 200/);
          } catch (err) {
            expect(err).toBeInstanceOf(AgentError);
            expect((err as AgentError).code).toBe(AgentErrors.TUNNEL_REFUSED.code);
          }
        },
      ),
      fuzzParams(500, 0.2),
    );
  });
});

/** The fields of `req` as the destination reads them: an empty or unsendable workload is absent. */
function onTheWire(req: TunnelRequest): Omit<TunnelRequest, "auth"> {
  const sendable = (v: string | undefined) =>
    v !== undefined && /^[\x21-\x7e](?:[\x20-\x7e]{0,254}[\x21-\x7e])?$/.test(v) ? v : undefined;
  return {
    ip: req.ip,
    port: req.port,
    source: req.source,
    workload: sendable(req.workload),
    sourceIp: req.sourceIp,
    protocol: req.protocol,
  };
}

describe("tunnel handshake: inputs fuzzing found", () => {
  // A pod's `app` label (any string at enrollment) went into the head as it was: a trailing space
  // was trimmed by the destination (bad signature), non-ASCII read back as latin1 (bad signature),
  // and a CR LF started a header of its own that overrode the source's fields.
  it.each(["default/web ", "default/wéb", "default/web\r\nX-Nodemesh-Source-Ip: 10.9.9.9", "a/\u0000"])(
    "a workload of %j is left out of the head, and the handshake stays valid",
    async (workload) => {
      const k = "ab".repeat(32);
      const req = { ip: "10.244.2.11", port: 8080, source: "default/client", workload, sourceIp: "10.244.1.5" };
      const source = fakeSocket([Buffer.from("HTTP/1.1 200 OK\r\n\r\n")], false);
      await openTunnel(source as unknown as Socket, req, 1000, k);
      const parsed = await acceptTunnel(fakeSocket(source.written) as unknown as Socket, 1000);
      expect(parsed).toMatchObject({ source: "default/client", workload: undefined, sourceIp: "10.244.1.5" });
      expect(tunnelAuthRefusal(parsed, k, Date.now())).toBeUndefined();
    },
  );
});
