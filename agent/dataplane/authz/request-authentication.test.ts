import { exportJWK, generateKeyPair, type JWTPayload, SignJWT } from "jose";
import { beforeAll, describe, expect, it } from "vitest";
import { parseTrafficObject, type TrafficObject } from "../../../api/traffic.ts";
import {
  type Authentication,
  authenticate,
  claimValues,
  compileRequestAuthentication,
  type WorkloadAuthentication,
} from "./request-authentication.ts";

const ISSUER = "https://issuer.test";
const SERVICES = [{ name: "web", namespace: "shop", endpoints: [{ ip: "10.0.0.1" }] }];

type Keys = Awaited<ReturnType<typeof generateKeyPair>>;
let keys: Keys;
let stranger: Keys;
let jwks: string;

function requestAuthentication(spec: unknown, namespace = "shop"): TrafficObject {
  const r = parseTrafficObject({ kind: "RequestAuthentication", name: "jwt", namespace, spec });
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.value;
}

function workload(rule: Record<string, unknown> = {}): WorkloadAuthentication {
  const w = compileRequestAuthentication(
    [requestAuthentication({ targetRefs: [{ name: "web" }], jwtRules: [{ issuer: ISSUER, jwks, ...rule }] })],
    SERVICES,
  ).forPod("10.0.0.1", "shop");
  if (!w) throw new Error("not selected");
  return w;
}

async function token(claims: JWTPayload = {}, opts: { key?: Keys } = {}) {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ iss: ISSUER, sub: "alice", aud: "web", iat: now, exp: now + 300, ...claims })
    .setProtectedHeader({ alg: "ES256", kid: "k1" })
    .sign((opts.key ?? keys).privateKey);
}

function carrier(headers: Record<string, string | string[]>) {
  return {
    header: (name: string) => {
      const v = headers[name];
      return Array.isArray(v) ? v[0] : v;
    },
    count: (name: string) => {
      const v = headers[name];
      return v === undefined ? 0 : Array.isArray(v) ? v.length : 1;
    },
  };
}

const failure = (a: Authentication) => (a.ok ? "ok" : a.reason);

beforeAll(async () => {
  keys = await generateKeyPair("ES256");
  stranger = await generateKeyPair("ES256");
  jwks = JSON.stringify({ keys: [{ ...(await exportJWK(keys.publicKey)), kid: "k1", alg: "ES256" }] });
});

describe("authenticate", () => {
  it("lets a request without a token through with no principal", async () => {
    expect(await authenticate(workload(), carrier({}))).toEqual({ ok: true, consumed: [] });
  });

  it("gives a valid token's principal and claims, and consumes its header", async () => {
    const a = await authenticate(
      workload(),
      carrier({ authorization: `Bearer ${await token({ groups: ["admins"] })}` }),
    );
    expect(a).toMatchObject({ ok: true, principal: `${ISSUER}/alice`, consumed: ["authorization"] });
    expect(a.ok && claimValues(a.claims, "groups")).toEqual(["admins"]);
  });

  it("keeps the header when the rule forwards the token", async () => {
    const a = await authenticate(
      workload({ forwardOriginalToken: true }),
      carrier({ authorization: `Bearer ${await token()}` }),
    );
    expect(a).toMatchObject({ ok: true, consumed: [] });
  });

  it("reads a token from another header, with its prefix", async () => {
    const w = workload({ fromHeaders: [{ name: "X-Jwt", prefix: "Token " }] });
    expect(await authenticate(w, carrier({ "x-jwt": `Token ${await token()}` }))).toMatchObject({
      principal: `${ISSUER}/alice`,
    });
    // The default place is not looked at any more.
    expect(await authenticate(w, carrier({ authorization: `Bearer ${await token()}` }))).toEqual({
      ok: true,
      consumed: [],
    });
  });

  it.each<[string, () => Promise<Record<string, string | string[]>>, RegExp]>([
    [
      "a token signed by another key",
      async () => ({ authorization: `Bearer ${await token({}, { key: stranger })}` }),
      /signature/,
    ],
    [
      "an expired token",
      async () => ({ authorization: `Bearer ${await token({ exp: Math.floor(Date.now() / 1000) - 3600 })}` }),
      /exp/,
    ],
    ["a token for another audience", async () => ({ authorization: `Bearer ${await token({ aud: "other" })}` }), /aud/],
    [
      "a token of an unknown issuer",
      async () => ({ authorization: `Bearer ${await token({ iss: "https://evil.test" })}` }),
      /issuer https:\/\/evil\.test/,
    ],
    [
      "an unsigned token (alg none)",
      async () => {
        const body = Buffer.from(JSON.stringify({ iss: ISSUER, sub: "alice", aud: "web" })).toString("base64url");
        return { authorization: `Bearer ${Buffer.from('{"alg":"none"}').toString("base64url")}.${body}.` };
      },
      /alg|JWS|Unsupported|not allowed/i,
    ],
    ["something that is not a JWT", async () => ({ authorization: "Bearer not-a-jwt" }), /not a JWT/],
    [
      "two Authorization headers",
      async () => ({ authorization: [`Bearer ${await token()}`, `Bearer ${await token({ sub: "bob" })}`] }),
      /more than one/,
    ],
  ])("refuses %s", async (_name, headers, reason) => {
    expect(failure(await authenticate(workload({ audiences: ["web"] }), carrier(await headers())))).toMatch(reason);
  });

  it("selects pods as AuthorizationPolicy does", () => {
    const index = compileRequestAuthentication(
      [requestAuthentication({ jwtRules: [{ issuer: ISSUER, jwks }] })],
      SERVICES,
    );
    expect(index.forPod("10.0.0.1", "shop")).toBeDefined();
    expect(index.forPod("10.0.0.9", "elsewhere")).toBeUndefined();
  });

  it("refuses a rule with both or neither of jwks and jwksUri", () => {
    for (const rule of [
      { issuer: ISSUER },
      { issuer: ISSUER, jwks: '{"keys":[]}', jwksUri: "https://issuer.test/jwks" },
    ]) {
      const r = parseTrafficObject({
        kind: "RequestAuthentication",
        name: "x",
        namespace: "shop",
        spec: { jwtRules: [rule] },
      });
      expect(r.ok).toBe(false);
      if (!r.ok) expect(r.errors[0]!.field).toBe("spec.jwtRules[0]");
    }
  });
});
