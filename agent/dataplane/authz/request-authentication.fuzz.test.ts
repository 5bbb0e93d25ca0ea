// Fuzzing request authentication (request-authentication.ts): the token a client puts in a header,
// read, decoded and verified before any policy sees the request. Whatever the header: a principal
// or a reason, never a throw.

import fc from "fast-check";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { beforeAll, describe, expect, it } from "vitest";
import { parseTrafficObject } from "../../../api/traffic.ts";
import { fuzzParams } from "../../../test/fuzz/fuzz.ts";
import {
  authenticate,
  claimValues,
  compileRequestAuthentication,
  type WorkloadAuthentication,
} from "./request-authentication.ts";

const ISSUER = "https://issuer.test";
let w: WorkloadAuthentication;
let valid: string;

beforeAll(async () => {
  const keys = await generateKeyPair("ES256");
  const jwks = JSON.stringify({ keys: [{ ...(await exportJWK(keys.publicKey)), kid: "k1", alg: "ES256" }] });
  const r = parseTrafficObject({
    kind: "RequestAuthentication",
    name: "jwt",
    namespace: "shop",
    spec: {
      targetRefs: [{ name: "web" }],
      jwtRules: [
        { issuer: ISSUER, jwks, fromHeaders: [{ name: "authorization", prefix: "Bearer " }, { name: "x-jwt" }] },
      ],
    },
  });
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  w = compileRequestAuthentication(
    [r.value],
    [{ name: "web", namespace: "shop", endpoints: [{ ip: "10.0.0.1" }] }],
  ).forPod("10.0.0.1", "shop")!;
  const now = Math.floor(Date.now() / 1000);
  valid = await new SignJWT({ iss: ISSUER, sub: "alice", iat: now, exp: now + 300 })
    .setProtectedHeader({ alg: "ES256", kid: "k1" })
    .sign(keys.privateKey);
});

const b64 = (v: unknown) => Buffer.from(typeof v === "string" ? v : (JSON.stringify(v) ?? "")).toString("base64url");

/** Tokens: the valid one changed a little, or header.payload.signature with any JSON in them. */
const token = fc.oneof(
  fc
    .tuple(fc.nat(), fc.string({ maxLength: 3 }))
    .map(([at, s]) => valid.slice(0, at % valid.length) + s + valid.slice((at % valid.length) + s.length)),
  fc
    .record({
      header: fc.oneof(fc.constant({ alg: "ES256", kid: "k1" }), fc.constant({ alg: "none" }), fc.jsonValue()),
      payload: fc.oneof(
        fc.record(
          { iss: fc.oneof(fc.constant(ISSUER), fc.jsonValue()), sub: fc.jsonValue(), exp: fc.jsonValue() },
          { requiredKeys: [] },
        ),
        fc.jsonValue(),
        fc.constantFrom({ iss: ["a", "b"] }, { iss: 1 }, { iss: null }),
      ),
      signature: fc.oneof(fc.constant(""), fc.string({ maxLength: 10 })),
    })
    .map(({ header, payload, signature }) => `${b64(header)}.${b64(payload)}.${b64(signature)}`),
  fc.string({ maxLength: 30 }),
);

/**
 * Found by fuzzing: a token whose unverified payload has an `iss` without a string form
 * (`{"iss": {"toString": 1}}`) made authenticate throw (a reset instead of a 401).
 */
const NO_STRING_ISSUER_TOKEN = "eyJhbGciOiJub25lIn0.eyJpc3MiOnsidG9TdHJpbmciOjF9fQ.";

describe("request authentication (fuzz)", () => {
  it("an issuer without a string form is a reason, not a throw (found by fuzzing)", async () => {
    const a = await authenticate(w, {
      header: (n) => (n === "authorization" ? `Bearer ${NO_STRING_ISSUER_TOKEN}` : undefined),
      count: (n) => (n === "authorization" ? 1 : 0),
    });
    expect(a.ok).toBe(false);
  });

  it("any token in any of the headers: a principal or a reason, never a throw", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.dictionary(
          fc.constantFrom("authorization", "x-jwt"),
          fc.array(
            fc.oneof(
              token.map((t) => `Bearer ${t}`),
              token,
            ),
            { minLength: 1, maxLength: 2 },
          ),
        ),
        async (headers) => {
          const a = await authenticate(w, {
            header: (name) => headers[name]?.[0],
            count: (name) => headers[name]?.length ?? 0,
          });
          if (!a.ok) {
            expect(typeof a.reason).toBe("string");
            return;
          }
          if (a.principal !== undefined) expect(a.principal.startsWith(`${ISSUER}/`)).toBe(true);
          for (const name of ["iss", "sub", "groups", "aud"]) {
            const v = claimValues(a.claims, name);
            if (v !== undefined) for (const s of v) expect(typeof s).toBe("string");
          }
        },
      ),
      fuzzParams(300, 0.05),
    );
  });
});
