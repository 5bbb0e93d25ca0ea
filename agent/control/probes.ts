// Node-to-node RTT and loss: a few ICMP echo requests (net-ping) to each peer's underlay address.
//
// net-ping opens its raw socket when the session is created, and a socket stays in the network
// namespace it was created in: to probe from another namespace, open the prober inside
// `withNetns`. Raw sockets need CAP_NET_RAW; without it every peer reports the error instead.
// A round probes at most MAX_PEERS_PER_ROUND peers (ProbeRounds); a larger mesh in turns.

import { randomInt } from "node:crypto";
import { createRequire } from "node:module";
import type { Peer, PeerProbe, Report } from "../../api/agent-service.ts";
import type { ReportStream } from "./controller-client.ts";

interface PingSession {
  pingHost(target: string, callback: (error: Error | null, target: string) => void): void;
  close(): void;
  on(event: "error", listener: (error: Error) => void): void;
}
/** net-ping, loaded at the first prober (its native raw-socket addon): importing ProbeRounds needs none. */
const ping = () => createRequire(import.meta.url)("net-ping") as { createSession(options: object): PingSession };

export interface ProbeOptions {
  /** Echo requests per peer per round (one at a time, so a round lasts up to count × timeout). */
  probesPerPeer: number;
  timeoutMs: number;
}

export const DEFAULT_PROBE_OPTIONS: ProbeOptions = { probesPerPeer: 3, timeoutMs: 1000 };

/**
 * Peers probed per round at most. A mesh of more nodes is probed in turns, the peers probed longest
 * ago (never, first) each round: every peer again every ceil(nodes / this) rounds (1000 nodes: 16
 * rounds, 80 s at the default report interval), and a node sends at most this many peers' echoes
 * per round however large the mesh (1000 nodes probed at once: 3000 echoes every 5 s per node).
 */
export const MAX_PEERS_PER_ROUND = 64;

/** One round of probes of a peer → its report: mean RTT of the answers, share of unanswered probes. */
export function summarizeProbes(nodeName: string, rttsMs: readonly (number | undefined)[]): PeerProbe {
  const answered = rttsMs.filter((rtt): rtt is number => rtt !== undefined);
  const rttMs = answered.length > 0 ? answered.reduce((a, b) => a + b, 0) / answered.length : 0;
  const lossRatio = rttsMs.length > 0 ? 1 - answered.length / rttsMs.length : 0;
  return { nodeName, rttMs, lossRatio, error: "" };
}

/**
 * Rounds of probes with a budget (MAX_PEERS_PER_ROUND): each round gives every listed peer's latest
 * probe; a report is given those, or only those taken since the previous report (forReport).
 */
export class ProbeRounds {
  readonly #prober: Pick<PeerProber, "probe">;
  readonly #maxPerRound: number;
  /** The latest probe of each peer, and the round that took it. */
  readonly #latest = new Map<string, { probe: PeerProbe; round: number }>();
  #round = 0;
  /** The last round whose probes have landed (a round in progress has not). */
  #completed = 0;
  /** What the last round returned. */
  #listed: PeerProbe[] = [];
  /** What the last report was given: its stream, the last round it saw, the peers it listed. */
  #reported: { streamId: number; round: number; peers: string } | undefined;

  constructor(prober: Pick<PeerProber, "probe">, maxPerRound = MAX_PEERS_PER_ROUND) {
    this.#prober = prober;
    this.#maxPerRound = maxPerRound;
  }

  /**
   * Probes the `maxPerRound` peers of `peers` probed longest ago, then returns the latest probe of
   * each listed peer probed so far, in `peers`' order. A peer no longer listed is forgotten.
   */
  async round(peers: readonly Peer[]): Promise<PeerProbe[]> {
    const round = ++this.#round;
    const lastRound = (p: Peer) => this.#latest.get(p.name)?.round ?? 0;
    // A stable sort: peers last probed in the same round keep the list's order.
    const due = [...peers].sort((a, b) => lastRound(a) - lastRound(b)).slice(0, this.#maxPerRound);
    for (const probe of await this.#prober.probe(due)) this.#latest.set(probe.nodeName, { probe, round });
    this.#completed = round;
    const listed = new Set(peers.map((p) => p.name));
    for (const name of this.#latest.keys()) if (!listed.has(name)) this.#latest.delete(name);
    this.#listed = peers.flatMap((p) => this.#latest.get(p.name)?.probe ?? []);
    return this.#listed;
  }

  /**
   * The probes a report carries: on a stream whose controller takes partial reports
   * (Report.peersChangedOnly), and whose previous report listed the same peers, only those
   * taken since that report; otherwise every listed peer's latest (the first report on a
   * stream, or after nodes joined or left).
   */
  forReport(stream: Pick<ReportStream, "id" | "peersChangedOnly">): Pick<Report, "peers" | "peersChangedOnly"> {
    const all = this.#listed;
    const peers = all.map((p) => p.nodeName).join("\n");
    const before = this.#reported;
    this.#reported = { streamId: stream.id, round: this.#completed, peers };
    if (!stream.peersChangedOnly || before?.streamId !== stream.id || before.peers !== peers) return { peers: all };
    const changed = all.filter((p) => this.#latest.get(p.nodeName)!.round > before.round);
    return { peers: changed, peersChangedOnly: true };
  }
}

export class PeerProber {
  private readonly opts: ProbeOptions;
  private session: PingSession | undefined;
  /** Why probing is impossible (raw socket refused or failed); reported for every peer. */
  private failure: string | undefined;

  private constructor(opts: ProbeOptions) {
    this.opts = opts;
  }

  /** Opens the raw socket now, in the calling thread's network namespace. Never throws. */
  static open(opts: ProbeOptions = DEFAULT_PROBE_OPTIONS): PeerProber {
    const prober = new PeerProber(opts);
    try {
      // Our own session id keeps replies to several probers in one process apart.
      const session = ping().createSession({ retries: 0, timeout: opts.timeoutMs, sessionId: randomInt(1, 65535) });
      session.on("error", (err) => {
        prober.failure = `ICMP socket failed: ${err.message}`;
        prober.close();
      });
      prober.session = session;
    } catch (err) {
      prober.failure = `cannot open an ICMP raw socket: ${(err as Error).message}`;
    }
    return prober;
  }

  /** Probes every peer (in parallel; each peer's probes one after another). */
  probe(peers: readonly Peer[]): Promise<PeerProbe[]> {
    return Promise.all(peers.map((peer) => this.probePeer(peer)));
  }

  private async probePeer(peer: Peer): Promise<PeerProbe> {
    const failed = (error: string): PeerProbe => ({ nodeName: peer.name, rttMs: 0, lossRatio: 1, error });
    if (this.failure) return failed(this.failure);
    if (!peer.underlayIp) return failed("the peer has no underlay address");
    const rtts: (number | undefined)[] = [];
    for (let i = 0; i < this.opts.probesPerPeer; i++) {
      const outcome = await this.echo(peer.underlayIp);
      if (typeof outcome === "string") return failed(outcome);
      rtts.push(outcome.rttMs);
    }
    return summarizeProbes(peer.name, rtts);
  }

  /** One echo request: its RTT, undefined RTT when unanswered, or a string when it could not be sent. */
  private echo(target: string): Promise<{ rttMs: number | undefined } | string> {
    const session = this.session;
    if (!session) return Promise.resolve(this.failure ?? "prober closed");
    return new Promise((resolve) => {
      // net-ping's Date stamps have millisecond resolution; a same-host RTT is well below that.
      const start = performance.now();
      session.pingHost(target, (error) => {
        if (!error) return resolve({ rttMs: performance.now() - start });
        // net-ping names its ICMP outcomes (RequestTimedOutError, DestinationUnreachableError, …):
        // the probe was lost. A plain Error is local (send failed, socket closed): report it.
        if (error.name !== "Error") return resolve({ rttMs: undefined });
        resolve(error.message);
      });
    });
  }

  close(): void {
    const session = this.session;
    this.session = undefined;
    this.failure ??= "prober closed";
    session?.close();
  }
}
