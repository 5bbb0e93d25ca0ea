// The corpus's data and its small language, without a world (the live run is
// test/e2e/corpus.test.ts): every file loads, every case encodes, the expansions and the outcome
// patterns mean what test/corpus/README.md says.

import { describe, expect, it } from "vitest";
import {
  encodeConnection,
  encodeFrame,
  expand,
  expandDeep,
  FAMILIES,
  type FrameSpec,
  grpcMessages,
  loadCorpus,
  outcomeMatches,
} from "./corpus.ts";

const VARS: Record<string, string> = {
  vip: "10.96.0.10",
  "client.ip": "10.244.1.11",
  "server.ip": "10.244.2.11",
  "stranger.ip": "10.244.1.13",
  "bystander.ip": "10.244.1.12",
  "client.netns": "/run/netns/c",
  "stranger.netns": "/run/netns/s",
  "n1.netns": "/run/netns/n1",
  "ctl.ip": "10.250.0.2",
  "n1.ip": "10.250.0.11",
  fresh: "corpus-1",
  auth: "1.ab",
  "auth.upper": "1.AB",
};

describe("the bad-input corpus's data", () => {
  const corpus = loadCorpus();

  it("holds at least 200 cases, spread over every family", () => {
    const counts = FAMILIES.map((f) => corpus[f].cases.length);
    expect(counts.reduce((a, b) => a + b, 0)).toBeGreaterThanOrEqual(200);
    for (const [i, family] of FAMILIES.entries()) expect(counts[i], family).toBeGreaterThanOrEqual(20);
  });

  it("has only cases whose bytes can be made", () => {
    const frames = (fs: FrameSpec[] | undefined, preface?: string) => encodeConnection(preface, fs ?? [], VARS);
    for (const c of [...corpus.h2.cases, ...corpus.grpc.cases])
      expect(frames(c.frames, c.preface).length).toBeGreaterThan(0);
    for (const c of corpus["controller-grpc"].cases) if (c.frames) frames(c.frames, c.preface);
    for (const c of corpus.http1.cases) expect(expand(c.send, VARS).length).toBeGreaterThan(0);
    for (const c of corpus.tunnel.cases) expand(c.send ?? "", VARS);
    for (const c of [...corpus.enrollment.cases, ...corpus.rest.cases]) {
      if (typeof c.body === "string") expand(c.body, VARS);
      else if (c.body !== undefined) expandDeep(c.body, VARS);
    }
  });
});

describe("the corpus's language", () => {
  it("repeats with <<N*text>> and fills {{placeholders}}", () => {
    expect(expand("a<<3*bc>>d{{vip}}", VARS)).toBe("abcbcbcd10.96.0.10");
    expect(expand("<<2*\r\n>>")).toBe("\r\n\r\n");
    expect(() => expand("{{nope}}", VARS)).toThrow(/unknown placeholder/);
  });

  it("makes arrays and objects with $repeat", () => {
    expect(expandDeep({ a: { $repeat: 3, item: "x{{i}}" } }, {})).toEqual({ a: ["x0", "x1", "x2"] });
    expect(expandDeep({ $repeat: 2, entry: ["k{{i}}", "{{vip}}"] }, VARS)).toEqual({
      k0: "10.96.0.10",
      k1: "10.96.0.10",
    });
  });

  it("encodes frames as described, lies included", () => {
    const f = encodeFrame({ type: "WINDOW_UPDATE", stream: 3, payloadHex: "00000000", length: 7 });
    expect(f.toString("hex")).toBe(`000007080000000003${"00000000"}`);
    const flood = encodeFrame({
      group: [{ type: "HEADERS", flags: ["END_HEADERS"], headers: "get" }],
      repeat: 3,
      streamStep: 2,
    });
    const streams: number[] = [];
    for (let at = 0; at < flood.length; at += 9 + flood.readUIntBE(at, 3)) streams.push(flood.readUInt32BE(at + 5));
    expect(streams).toEqual([1, 3, 5]);
    expect(grpcMessages([{ hex: "0a00", compressed: 1, length: 100 }]).toString("hex")).toBe("01000000640a00");
  });

  it("matches outcome patterns: every token, x for a digit, * for a rest, alternatives", () => {
    const actual = ["closed", "status:400", "error:NM_BAD_REQUEST", "rst:PROTOCOL_ERROR"];
    expect(outcomeMatches("status:4xx closed", actual)).toBe(true);
    expect(outcomeMatches("status:400 error:NM_BAD_REQUEST", actual)).toBe(true);
    expect(outcomeMatches("rst:*", actual)).toBe(true);
    expect(outcomeMatches("status:431", actual)).toBe(false);
    expect(outcomeMatches(["status:431", "closed"], actual)).toBe(true);
    expect(outcomeMatches("status:400 open", actual)).toBe(false);
  });
});
