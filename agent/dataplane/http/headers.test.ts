import type { IncomingHttpHeaders, OutgoingHttpHeaders } from "node:http";
import { describe, expect, it } from "vitest";
import {
  applyHeaderOps,
  endToEnd,
  ensureRequestId,
  forwardFor,
  headerValue,
  IDEMPOTENT_METHODS,
  isHopByHop,
} from "./headers.ts";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe("endToEnd", () => {
  const incoming: IncomingHttpHeaders = {
    host: "reviews:9080",
    connection: "keep-alive, X-Debug-Hop , Upgrade",
    "keep-alive": "timeout=5",
    "proxy-connection": "keep-alive",
    "proxy-authorization": "Basic eA==",
    "proxy-authenticate": "Basic",
    te: "trailers",
    trailer: "x-checksum",
    "transfer-encoding": "chunked",
    upgrade: "websocket",
    "http2-settings": "AAMAAABkAAQAAP__",
    "x-debug-hop": "1",
    "content-type": "application/json",
    "content-length": "12",
    "x-nodemesh-error": "NM_FORGED",
    "x-nodemesh-source": "default/attacker",
    "x-request-id": "abc",
    traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    tracestate: "congo=t61rcWkgMzE",
    b3: "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1",
    "x-b3-traceid": "80f198ee56343ba864fe8b2a57d3eff7",
    "x-b3-spanid": "e457b5a2e4d86bd1",
    "x-b3-sampled": "1",
    "set-cookie": ["a=1", "b=2"],
  };

  it("drops hop-by-hop headers and the headers Connection names, internal ones when asked", () => {
    const out = endToEnd(incoming, true);
    expect(Object.keys(out).sort()).toEqual(
      [
        "host",
        "content-type",
        "content-length",
        "x-request-id",
        "traceparent",
        "tracestate",
        "b3",
        "x-b3-traceid",
        "x-b3-spanid",
        "x-b3-sampled",
        "set-cookie",
      ].sort(),
    );
  });

  it("keeps trace headers and multi-valued headers untouched", () => {
    const out = endToEnd(incoming, true);
    for (const name of ["traceparent", "tracestate", "b3", "x-b3-traceid", "x-b3-spanid", "x-b3-sampled"]) {
      expect(out[name], name).toBe(incoming[name]);
    }
    expect(out["set-cookie"]).toEqual(["a=1", "b=2"]);
  });

  it("keeps x-nodemesh-* headers when not asked to strip them (responses from a peer agent)", () => {
    const out = endToEnd(incoming, false);
    expect(out["x-nodemesh-error"]).toBe("NM_FORGED");
    expect(out["x-nodemesh-source"]).toBe("default/attacker");
    expect(out.connection).toBeUndefined();
    expect(out["x-debug-hop"]).toBeUndefined();
  });

  it("drops HTTP/2 pseudo-headers", () => {
    const out = endToEnd(
      { ":method": "GET", ":path": "/", ":authority": "reviews", ":scheme": "http", "x-a": "1" } as IncomingHttpHeaders,
      true,
    );
    expect(out).toEqual({ "x-a": "1" });
  });

  it("does not modify its input and works without a Connection header", () => {
    const input: IncomingHttpHeaders = { "x-a": "1", te: "trailers" };
    expect(endToEnd(input, true)).toEqual({ "x-a": "1" });
    expect(input).toEqual({ "x-a": "1", te: "trailers" });
  });

  it("isHopByHop knows the RFC 9110 list", () => {
    for (const h of ["connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade", "proxy-connection"]) {
      expect(isHopByHop(h), h).toBe(true);
    }
    for (const h of ["content-length", "traceparent", "host", "x-request-id"]) expect(isHopByHop(h), h).toBe(false);
  });
});

describe("ensureRequestId", () => {
  it("keeps the client's id", () => {
    const headers: OutgoingHttpHeaders = { "x-request-id": "client-chosen-1" };
    expect(ensureRequestId(headers)).toBe("client-chosen-1");
    expect(headers["x-request-id"]).toBe("client-chosen-1");
  });

  it("adds a fresh UUID when there is none, an empty one or an absurdly long one", () => {
    for (const bad of [undefined, "", "x".repeat(257)]) {
      const headers: OutgoingHttpHeaders = bad === undefined ? {} : { "x-request-id": bad };
      const id = ensureRequestId(headers);
      expect(id).toMatch(UUID);
      expect(headers["x-request-id"]).toBe(id);
    }
    const a: OutgoingHttpHeaders = {};
    const b: OutgoingHttpHeaders = {};
    expect(ensureRequestId(a)).not.toBe(ensureRequestId(b));
    expect(ensureRequestId({ "x-request-id": "x".repeat(256) })).toBe("x".repeat(256));
  });
});

describe("applyHeaderOps", () => {
  it("sets, adds and removes", () => {
    const headers: OutgoingHttpHeaders = { "x-env": "prod", "x-tag": "a", "x-drop": "1", "x-keep": "1" };
    applyHeaderOps(headers, {
      set: [
        ["x-env", "canary"],
        ["x-new", "1"],
      ],
      add: [
        ["x-tag", "b"],
        ["x-fresh", "c"],
      ],
      remove: ["x-drop", "x-absent"],
    });
    expect(headers).toEqual({ "x-env": "canary", "x-new": "1", "x-tag": ["a", "b"], "x-fresh": "c", "x-keep": "1" });
  });

  it("appends to a header that already has several values, and adds twice", () => {
    const headers: OutgoingHttpHeaders = { "x-tag": ["a", "b"], "x-n": 5 };
    applyHeaderOps(headers, {
      set: [],
      add: [
        ["x-tag", "c"],
        ["x-n", "6"],
        ["x-two", "1"],
        ["x-two", "2"],
      ],
      remove: [],
    });
    expect(headers).toEqual({ "x-tag": ["a", "b", "c"], "x-n": ["5", "6"], "x-two": ["1", "2"] });
  });

  it("removes after setting and adding, and does nothing without ops", () => {
    const headers: OutgoingHttpHeaders = { "x-a": "1" };
    applyHeaderOps(headers, { set: [["x-b", "2"]], add: [["x-c", "3"]], remove: ["x-b", "x-c"] });
    expect(headers).toEqual({ "x-a": "1" });
    applyHeaderOps(headers, undefined);
    expect(headers).toEqual({ "x-a": "1" });
  });
});

describe("headerValue and idempotent methods", () => {
  it("joins several values", () => {
    expect(headerValue({ "x-a": "1" }, "x-a")).toBe("1");
    expect(headerValue({ "set-cookie": ["a", "b"] }, "set-cookie")).toBe("a, b");
    expect(headerValue({}, "x-a")).toBeUndefined();
  });

  it("lists the idempotent methods (RFC 9110 §9.2.2)", () => {
    expect([...IDEMPOTENT_METHODS].sort()).toEqual(["DELETE", "GET", "HEAD", "OPTIONS", "PUT", "TRACE"]);
    expect(IDEMPOTENT_METHODS.has("POST")).toBe(false);
    expect(IDEMPOTENT_METHODS.has("PATCH")).toBe(false);
  });
});

describe("forwardFor", () => {
  it("appends to what the client sent, or replaces it", () => {
    const h = (xff?: string | string[]): OutgoingHttpHeaders => (xff === undefined ? {} : { "x-forwarded-for": xff });
    const run = (headers: OutgoingHttpHeaders, mode: "Append" | "Sanitize") => {
      forwardFor(headers, "10.0.0.5", mode);
      return headers["x-forwarded-for"];
    };
    expect(run(h(), "Append")).toBe("10.0.0.5");
    expect(run(h("1.1.1.1"), "Append")).toBe("1.1.1.1, 10.0.0.5");
    expect(run(h(["1.1.1.1", "2.2.2.2"]), "Append")).toBe("1.1.1.1, 2.2.2.2, 10.0.0.5");
    expect(run(h("  "), "Append")).toBe("10.0.0.5");
    expect(run(h("1.1.1.1"), "Sanitize")).toBe("10.0.0.5");
  });

  it("is never taken from a client: endToEnd drops X-Forwarded-Client-Cert with the internal headers", () => {
    const out = endToEnd({ "x-forwarded-client-cert": "forged", "x-nodemesh-service": "x", accept: "*/*" }, true);
    expect(out).toEqual({ accept: "*/*" });
  });
});
