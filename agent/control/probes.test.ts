// ICMP probes between two network namespaces made here (a veth pair, 10.253.0.0/29), sent from
// inside one of them: the prober's raw socket is created while this thread is in that namespace.

import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Peer, PeerProbe } from "../../api/agent-service.ts";
import { Netns, withNetns } from "../sys/linux.ts";
import { PeerProber, ProbeRounds, summarizeProbes } from "./probes.ts";

describe("summarizeProbes", () => {
  it("averages the answered probes and counts the others as lost", () => {
    expect(summarizeProbes("b", [0.2, undefined, 0.4, undefined])).toEqual({
      nodeName: "b",
      rttMs: expect.closeTo(0.3, 6),
      lossRatio: 0.5,
      error: "",
    });
    expect(summarizeProbes("b", [undefined])).toEqual({ nodeName: "b", rttMs: 0, lossRatio: 1, error: "" });
  });
});

describe("ProbeRounds", () => {
  /** A prober that answers each peer with an RTT of the round it was probed in. */
  function counting() {
    const probed: string[][] = [];
    const prober = {
      probe: async (peers: readonly Peer[]): Promise<PeerProbe[]> => {
        probed.push(peers.map((p) => p.name));
        return peers.map((p) => ({ nodeName: p.name, rttMs: probed.length, lossRatio: 0, error: "" }));
      },
    };
    return { prober, probed };
  }
  const peersOf = (...names: string[]): Peer[] => names.map((name) => ({ name, underlayIp: "10.250.0.1" }));
  const rtts = (probes: PeerProbe[]) => Object.fromEntries(probes.map((p) => [p.nodeName, p.rttMs]));

  it("probes every peer each round while the mesh is within the budget", async () => {
    const { prober, probed } = counting();
    const rounds = new ProbeRounds(prober, 3);
    expect(rtts(await rounds.round(peersOf("a", "b", "c")))).toEqual({ a: 1, b: 1, c: 1 });
    expect(rtts(await rounds.round(peersOf("a", "b", "c")))).toEqual({ a: 2, b: 2, c: 2 });
    expect(probed).toEqual([
      ["a", "b", "c"],
      ["a", "b", "c"],
    ]);
  });

  it("beyond the budget probes the peers probed longest ago, and reports every peer's latest", async () => {
    const { prober, probed } = counting();
    const rounds = new ProbeRounds(prober, 2);
    const five = peersOf("a", "b", "c", "d", "e");
    expect(rtts(await rounds.round(five))).toEqual({ a: 1, b: 1 });
    expect(rtts(await rounds.round(five))).toEqual({ a: 1, b: 1, c: 2, d: 2 });
    // Reported in the list's order, whatever the round that probed each.
    expect((await rounds.round(five)).map((p) => p.nodeName)).toEqual(["a", "b", "c", "d", "e"]);
    expect(probed).toEqual([
      ["a", "b"],
      ["c", "d"],
      ["e", "a"],
    ]);
    // A new node is probed first; one no longer listed is forgotten.
    const changed = peersOf("a", "b", "c", "e", "f");
    expect(rtts(await rounds.round(changed))).toEqual({ a: 3, b: 4, c: 2, e: 3, f: 4 });
    expect(probed.at(-1)).toEqual(["f", "b"]);
  });

  it("gives a report only the probes taken since the previous report on the same stream", async () => {
    const { prober } = counting();
    const rounds = new ProbeRounds(prober, 2);
    const five = peersOf("a", "b", "c", "d", "e");
    const partial = { id: 1, peersChangedOnly: true };
    const names = (r: { peers: PeerProbe[] }) => r.peers.map((p) => p.nodeName);
    // While the peers probed so far grow (rounds 1 to 3: a b, c d, e a), each report lists them all.
    for (const expected of [
      ["a", "b"],
      ["a", "b", "c", "d"],
      ["a", "b", "c", "d", "e"],
    ]) {
      await rounds.round(five);
      const r = rounds.forReport(partial);
      expect([names(r), r.peersChangedOnly]).toEqual([expected, undefined]);
    }
    await rounds.round(five); // round 4: b, c
    expect(rounds.forReport(partial)).toEqual({
      peers: [
        { nodeName: "b", rttMs: 4, lossRatio: 0, error: "" },
        { nodeName: "c", rttMs: 4, lossRatio: 0, error: "" },
      ],
      peersChangedOnly: true,
    });
    expect(rounds.forReport(partial)).toEqual({ peers: [], peersChangedOnly: true }); // nothing probed since
    // A new stream (the controller may have restarted), or a controller that merges nothing: all.
    await rounds.round(five);
    expect(names(rounds.forReport({ id: 2, peersChangedOnly: true }))).toEqual(["a", "b", "c", "d", "e"]);
    expect(rounds.forReport({ id: 2, peersChangedOnly: false }).peersChangedOnly).toBeUndefined();
    // A node joined: the peers listed changed, so the next report lists them all.
    await rounds.round(peersOf("a", "b", "c", "d", "e", "f"));
    const joined = rounds.forReport({ id: 2, peersChangedOnly: true });
    expect([names(joined), joined.peersChangedOnly]).toEqual([["a", "b", "c", "d", "e", "f"], undefined]);
  });

  it("does not count a round still in progress as reported", async () => {
    let answer: (probes: PeerProbe[]) => void = () => {};
    const rounds = new ProbeRounds({ probe: () => new Promise<PeerProbe[]>((r) => (answer = r)) }, 2);
    const stream = { id: 1, peersChangedOnly: true };
    const probeOfA = (rttMs: number) => ({ nodeName: "a", rttMs, lossRatio: 0, error: "" });
    const round = async (rttMs: number) => {
      const pending = rounds.round(peersOf("a"));
      answer([probeOfA(rttMs)]);
      await pending;
    };
    await round(1);
    expect(rounds.forReport(stream)).toEqual({ peers: [probeOfA(1)] });
    const second = rounds.round(peersOf("a"));
    // A report while round 2 is under way: nothing new yet, and round 2 is not taken as reported.
    expect(rounds.forReport(stream)).toEqual({ peers: [], peersChangedOnly: true });
    answer([probeOfA(2)]);
    await second;
    expect(rounds.forReport(stream)).toEqual({ peers: [probeOfA(2)], peersChangedOnly: true });
  });
});

describe("PeerProber in a namespace pair", () => {
  const id = randomBytes(3).toString("hex");
  const left = `nmp-${id}-a`;
  const right = `nmp-${id}-b`;
  const created: string[] = [];
  let leftNs: Netns | undefined;

  const ip = (...args: string[]) => execFileSync("ip", args, { stdio: "pipe", timeout: 10_000 });

  beforeAll(() => {
    for (const name of [left, right]) {
      ip("netns", "add", name);
      created.push(name);
    }
    ip("-n", left, "link", "add", "probe0", "type", "veth", "peer", "name", "probe1", "netns", right);
    ip("-n", left, "addr", "add", "10.253.0.1/29", "dev", "probe0");
    ip("-n", right, "addr", "add", "10.253.0.2/29", "dev", "probe1");
    for (const [ns, dev] of [
      [left, "probe0"],
      [right, "probe1"],
    ]) {
      ip("-n", ns, "link", "set", dev, "up");
      ip("-n", ns, "link", "set", "lo", "up");
    }
    leftNs = Netns.open(`/run/netns/${left}`);
  });

  afterAll(() => {
    leftNs?.close();
    for (const name of created) {
      try {
        ip("netns", "del", name); // takes the veth pair with it
      } catch (err) {
        console.error(`could not delete namespace ${name}: ${(err as Error).message}`);
      }
    }
  });

  it("measures RTT with no loss to a reachable peer, and loss to a silent one", async () => {
    const prober = withNetns(leftNs!, () => PeerProber.open({ probesPerPeer: 3, timeoutMs: 300 }));
    try {
      const [reachable, silent, unaddressed] = await prober.probe([
        { name: "right", underlayIp: "10.253.0.2" },
        { name: "ghost", underlayIp: "10.253.0.3" }, // in the subnet, nobody home
        { name: "nameless", underlayIp: "" },
      ]);
      expect(reachable).toMatchObject({ nodeName: "right", lossRatio: 0, error: "" });
      expect(reachable.rttMs).toBeGreaterThan(0);
      expect(reachable.rttMs).toBeLessThan(300);
      expect(silent).toMatchObject({ nodeName: "ghost", rttMs: 0, lossRatio: 1, error: "" });
      expect(unaddressed).toMatchObject({ lossRatio: 1, error: "the peer has no underlay address" });
    } finally {
      prober.close();
    }
    // A closed prober reports instead of reopening a socket in whatever namespace it is in now.
    expect((await prober.probe([{ name: "right", underlayIp: "10.253.0.2" }]))[0].error).toBe("prober closed");
  });
});
