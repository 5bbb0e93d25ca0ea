// Everything the agent needs to take its configuration from the controller, assembled in one
// place: node facts for the Hello, the stream client, the peer probe loop and the periodic report.

import { join } from "node:path";
import type { Logger } from "pino";
import { type PeerProbe, type Report, reportPods, type WirePod } from "../../api/agent-service.ts";
import type { EnrolledPod } from "../../api/enrollment.ts";
import type { EdgeSample } from "../../api/service-graph.ts";
import { trafficKey } from "../../api/traffic.ts";
import packageJson from "../../package.json" with { type: "json" };
import { compileProblem } from "../dataplane/snapshot.ts";
import type { TrafficCheck } from "./config-assembly.ts";
import type { ChannelSecurity } from "./controller-channel.ts";
import { ControllerClient, type ControllerStatus } from "./controller-client.ts";
import { WorkloadIdentities } from "./identities.ts";
import { NodeCertificate } from "./node-certificate.ts";
import { factsOfThisBoot, pickUnderlayIp, toNodeFacts } from "./node-facts.ts";
import { loadOrCreateNodeSecret } from "./node-secret.ts";
import { PeerProber, ProbeRounds } from "./probes.ts";
import type { VersionedTable } from "./service-source.ts";
import { trafficTotals } from "./traffic-totals.ts";

const AGENT_VERSION: string = packageJson.version;

export interface ControllerLinkOptions {
  /** host:port of the controller's AgentService. */
  address: string;
  security: ChannelSecurity;
  token?: string;
  nodeName: string;
  /** Defaults to the node's first non-loopback IPv4 address. */
  underlayIp?: string;
  stateDir: string;
  reportIntervalMs: number;
  log: Logger;
}

/** What the link needs from the agent. */
export interface AgentSide {
  apply(table: VersionedTable): void;
  pods(): EnrolledPod[];
  /** The enrolled pod of that "namespace/name". */
  pod(key: string): EnrolledPod | undefined;
  ready(): boolean;
  workerMetrics(): Promise<unknown[]>;
  /** Edge samples since the last call (the service graph). */
  edges(): Promise<EdgeSample[]>;
}

/**
 * What a traffic object must pass beyond its schema: the data plane's compilers. The objects named
 * in $NODEMESH_TEST_REFUSE_OBJECTS (trafficKeys, comma-separated) are refused too: a fault the
 * tests inject to stand for an agent that cannot apply what the controller accepted (an older
 * agent during an upgrade). Never set it in production.
 */
function trafficCheck(): TrafficCheck {
  const refused = new Set((process.env.NODEMESH_TEST_REFUSE_OBJECTS ?? "").split(",").filter(Boolean));
  return (object) =>
    refused.has(trafficKey(object)) ? "refused by NODEMESH_TEST_REFUSE_OBJECTS (a test fault)" : compileProblem(object);
}

function toWirePod(pod: EnrolledPod): WirePod {
  return {
    name: pod.name,
    namespace: pod.namespace,
    ip: pod.ip,
    labels: pod.labels,
    serviceAccount: pod.serviceAccount,
  };
}

export class ControllerLink {
  private readonly client: ControllerClient;
  private readonly prober: PeerProber;
  private readonly probeRounds: ProbeRounds;
  /** Certificates for the identities of this node's pods, from the controller. */
  readonly identities: WorkloadIdentities;
  private probeTimer: NodeJS.Timeout | undefined;
  private latestProbes: PeerProbe[] = [];
  /** Called after each probe round (the agent refreshes locality). */
  onProbes: (() => void) | undefined;
  private stopped = false;

  private constructor(client: ControllerClient, prober: PeerProber, identities: WorkloadIdentities) {
    this.client = client;
    this.prober = prober;
    this.probeRounds = new ProbeRounds(prober);
    this.identities = identities;
  }

  /** Serves the cached configuration at once, then connects in the background. */
  static start(opts: ControllerLinkOptions, agent: AgentSide): ControllerLink {
    // Not awaited: the cached configuration is served and the pods restored meanwhile.
    const node = factsOfThisBoot(opts.stateDir).then((raw) => ({
      underlayIp: opts.underlayIp ?? pickUnderlayIp(raw),
      facts: toNodeFacts(raw),
    }));
    let link: ControllerLink | undefined;
    // The first report's interval starts now: edge samples count from the agent's start.
    let lastReportAt = Date.now();
    const client = new ControllerClient({
      address: opts.address,
      security: opts.security,
      token: opts.token,
      nodeName: opts.nodeName,
      nodeSecret: loadOrCreateNodeSecret(opts.stateDir),
      nodeCertificate: new NodeCertificate(opts.stateDir, opts.log.child({ component: "node-certificate" })),
      agentVersion: AGENT_VERSION,
      node,
      cacheFile: join(opts.stateDir, "config-cache.json"),
      apply: (table) => agent.apply(table),
      pods: () => agent.pods().map(toWirePod),
      pod: (key) => {
        const pod = agent.pod(key);
        return pod && toWirePod(pod);
      },
      report: async (stream): Promise<Report> => {
        const now = Date.now();
        const intervalSeconds = (now - lastReportAt) / 1000;
        lastReportAt = now;
        const traffic = trafficTotals(await agent.workerMetrics());
        const edges = await agent.edges();
        return {
          health: { ready: agent.ready(), detail: agent.ready() ? "" : "starting" },
          // Read after the waits, as the report goes out: a PodsDelta sent meanwhile is not undone.
          ...reportPods(stream.podsOmitted, () => agent.pods().map(toWirePod)),
          traffic,
          ...(link?.probeRounds.forReport(stream) ?? { peers: [] }),
          edges,
          intervalSeconds,
        };
      },
      reportIntervalMs: opts.reportIntervalMs,
      // First certificates waiting for the stream are asked for the moment it is up.
      onConnected: () => void link?.identities.refresh(),
      log: opts.log,
      checkTraffic: trafficCheck(),
    });
    const identities = new WorkloadIdentities({
      request: (req) => client.requestCertificate(req),
      connected: () => client.isConnected,
      stateDir: opts.stateDir,
      wanted: () => agent.pods().map((p) => ({ namespace: p.namespace, serviceAccount: p.serviceAccount })),
      log: opts.log,
    });
    link = new ControllerLink(client, PeerProber.open(), identities);
    client.start();
    identities.start();
    link.probeLoop(opts.reportIntervalMs);
    void node.then(({ underlayIp }) =>
      opts.log.info(
        { controller: opts.address, tls: opts.security.tls, underlayIp },
        "taking configuration from the controller",
      ),
    );
    return link;
  }

  /** Measured RTT to each peer that answered its last probes (ms), for locality. */
  peerRtts(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const p of this.latestProbes) if (p.lossRatio < 1) out[p.nodeName] = p.rttMs;
    return out;
  }

  status(): ControllerStatus {
    const certificates = this.identities.list().map((c) => ({
      spiffeId: c.spiffeId,
      notAfter: new Date(c.notAfter).toISOString(),
      renewals: c.renewals,
    }));
    return { ...this.client.status(), certificates };
  }

  /** Call on every enrollment change: `key` the pod's "namespace/name" (none: any may have changed). */
  podsChanged(key?: string): void {
    this.client.podsChanged(key);
    void this.identities.refresh();
  }

  async stop(): Promise<void> {
    if (this.stopped) return; // a handover stopped it already
    this.stopped = true;
    this.identities.stop();
    clearTimeout(this.probeTimer);
    this.prober.close();
    await this.client.stop();
  }

  /** One round at a time: the next starts an interval after the previous one finished. */
  private probeLoop(intervalMs: number): void {
    this.probeTimer = setTimeout(async () => {
      this.latestProbes = await this.probeRounds.round(this.client.peers());
      this.onProbes?.();
      if (!this.stopped) this.probeLoop(intervalMs);
    }, intervalMs);
    this.probeTimer.unref();
  }
}
