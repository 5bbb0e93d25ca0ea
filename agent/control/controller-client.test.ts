// The agent's controller client against a real controller AgentService in this process (a test
// may cross the agent/controller line; production code never does). The data plane is replaced
// by a fake `apply` that records tables.

import { X509Certificate } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { Registry } from "prom-client";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { type Report, reportPods, type WirePod } from "../../api/agent-service.ts";
import { podKey } from "../../api/enrollment.ts";
import { AgentServer, type AgentServerOptions } from "../../controller/config/agent-server.ts";
import { serverNames } from "../../controller/config/agent-tls.ts";
import {
  asNewObject,
  emptyReport,
  httpRouteResource,
  newServiceObject,
  trafficPolicyResource,
} from "../../controller/config/testing/fixtures.ts";
import { WorkloadCa } from "../../controller/identity/workload-ca.ts";
import { MemoryStore } from "../../controller/store/memory-store.ts";
import {
  ControllerClient,
  type ControllerClientOptions,
  POD_CHANGES_COALESCE_MS,
  type ReportStream,
} from "./controller-client.ts";
import { NODE_CERT_FILE, NODE_KEY_FILE, NodeCertificate } from "./node-certificate.ts";
import type { VersionedTable } from "./service-source.ts";

const log = pino({ level: process.env.TEST_LOG ?? "silent" });
const FACTS = { cpuModel: "test", cpuCores: 2, memoryBytes: 1 << 30, os: "test", kernel: "6", interfaces: [] };
const webPod: WirePod = { name: "web-1", namespace: "default", ip: "10.1.0.11", labels: { app: "web" } };

let dir: string;
let store: MemoryStore;
let servers: AgentServer[] = [];
let clients: ControllerClient[] = [];

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), "nodemesh-client-"));
  store = new MemoryStore();
  await store.open();
  await store.create(newServiceObject("web", "10.96.0.10", { app: "web" }));
});

afterEach(async () => {
  for (const c of clients) await c.stop();
  for (const s of servers) await s.stop();
  clients = [];
  servers = [];
  rmSync(dir, { recursive: true, force: true });
});

async function startServer(
  port = 0,
  token?: string,
  tls?: AgentServerOptions["tls"],
  more: Partial<AgentServerOptions> = {},
): Promise<AgentServer> {
  const server = await AgentServer.start({
    store,
    metrics: new Registry(),
    host: "127.0.0.1",
    port,
    token,
    ...(tls ? { tls } : {}),
    ...more,
    debounceMs: 5,
    startupGraceMs: 0,
    log,
  });
  servers.push(server);
  return server;
}

interface FakeAgent {
  client: ControllerClient;
  applied: VersionedTable[];
  pods: WirePod[];
  /** Set to make the next apply throw. */
  failApply?: string;
}

function startClient(port: number, overrides: Partial<ControllerClientOptions> = {}): FakeAgent {
  const agent: FakeAgent = { applied: [], pods: [] } as unknown as FakeAgent;
  const report = async (): Promise<Report> => ({
    health: { ready: true, detail: "" },
    pods: agent.pods,
    traffic: { connectionsOpened: 3, connectionsClosed: 2, bytesReceived: 100, bytesSent: 200 },
    peers: [{ nodeName: "node-b", rttMs: 0.2, lossRatio: 0, error: "" }],
    edges: [],
    intervalSeconds: 1,
  });
  agent.client = new ControllerClient({
    address: `127.0.0.1:${port}`,
    security: { tls: false },
    nodeName: "node-a",
    nodeSecret: "node-a-secret-for-controller-client-tests",
    agentVersion: "test",
    node: { underlayIp: "10.0.0.1", facts: FACTS },
    cacheFile: join(dir, "config-cache.json"),
    apply: (table) => {
      if (agent.failApply) throw new Error(agent.failApply);
      agent.applied.push(table);
    },
    pods: () => agent.pods,
    pod: (key) => agent.pods.find((p) => podKey(p) === key),
    report,
    reportIntervalMs: 50,
    backoff: { initialMs: 20, maxMs: 200 },
    log,
    ...overrides,
  });
  agent.client.start();
  clients.push(agent.client);
  return agent;
}

/** Retries `check` until it stops throwing (vitest's waitFor), for at most `timeoutMs`. */
function eventually(check: () => void, timeoutMs = 5000): Promise<void> {
  return vi.waitFor(check, { timeout: timeoutMs, interval: 10 });
}

/** The agent has ACKed the controller's current table. */
async function synced(server: AgentServer): Promise<void> {
  await eventually(() => {
    expect(server.configVersion()).toBeDefined();
    expect(server.agents()[0]?.appliedVersion).toBe(server.configVersion());
  });
}

function serviceNames(table: VersionedTable | undefined): string[] {
  return (table?.table.services ?? []).map((s) => s.name).sort();
}

describe("ControllerClient", () => {
  it("applies the controller's table, ACKs it, and reports pods, counters and peers", async () => {
    const server = await startServer();
    const agent = startClient(server.port);
    await eventually(() => expect(agent.client.status()).toMatchObject({ connected: true }));
    await eventually(() => expect(agent.applied.at(-1)?.source).toBe("controller"));
    await synced(server);
    expect(agent.client.status().appliedVersion).toBe(server.configVersion());
    expect(serviceNames(agent.applied.at(-1))).toEqual(["web"]);
    expect(server.agents()[0]).toMatchObject({ node: "node-a", underlayIp: "10.0.0.1", facts: { cpuModel: "test" } });

    await store.create(newServiceObject("api", "10.96.0.11", { app: "api" }));
    await eventually(() => expect(serviceNames(agent.applied.at(-1))).toEqual(["api", "web"]));

    // An enrollment reaches the controller at once and comes back as an endpoint.
    agent.pods = [webPod];
    agent.client.podsChanged(podKey(webPod));
    await eventually(() => {
      const web = agent.applied.at(-1)!.table.services.find((s) => s.name === "web")!;
      expect(web.endpoints).toEqual([
        {
          ip: "10.1.0.11",
          node: "node-a",
          pod: "default/web-1",
          meshed: true,
          workload: "web",
          serviceAccount: "default",
        },
      ]);
    });
    await eventually(() =>
      expect(server.agents()[0]).toMatchObject({
        lastReport: { traffic: { connectionsOpened: 3, bytesSent: 200 } },
        peers: [{ nodeName: "node-b", rttMs: 0.2 }],
      }),
    );
  });

  it("sends a burst of enrollment changes as one PodsDelta with those pods as they are then", async () => {
    const server = await startServer();
    let listed = 0;
    const lookedUp: string[] = [];
    const agent = startClient(server.port, {
      reportIntervalMs: 60_000, // reports carry the whole list: only the deltas may bring these
      pods: () => {
        listed++;
        return agent.pods;
      },
      pod: (key) => {
        lookedUp.push(key);
        return agent.pods.find((p) => podKey(p) === key);
      },
    });
    await synced(server);
    expect(listed).toBe(1); // the whole list, once, as the stream came up
    listed = 0;
    const pod = (i: number): WirePod => ({ ...webPod, name: `web-${i}`, ip: `10.1.0.${i}` });
    for (let i = 1; i <= 100; i++) {
      agent.pods.push(pod(i));
      agent.client.podsChanged(podKey(pod(i)));
    }
    agent.pods = agent.pods.filter((p) => p.name !== "web-7");
    agent.client.podsChanged("default/web-7");
    const webEndpoints = () =>
      agent.applied
        .at(-1)!
        .table.services.find((s) => s.name === "web")!
        .endpoints.map((e) => e.pod)
        .sort();
    const expected = agent.pods.map((p) => `default/${p.name}`).sort();
    await eventually(() => expect(webEndpoints()).toEqual(expected));
    await new Promise((resolve) => setTimeout(resolve, 3 * POD_CHANGES_COALESCE_MS));
    // Each changed pod read once, for one delta; the whole list never built again.
    expect(lookedUp.sort()).toEqual([...Array.from({ length: 100 }, (_, i) => `default/web-${i + 1}`)].sort());
    expect(listed).toBe(0);
  });

  it("sends the whole list again on a new stream, and when told that any pod may have changed", async () => {
    const server = await startServer();
    let listed = 0;
    const agent = startClient(server.port, {
      reportIntervalMs: 60_000, // reports carry the whole list too: not these
      pods: () => {
        listed++;
        return agent.pods;
      },
    });
    await synced(server);
    // Pods the controller did not hear of one by one (restored at start): the whole list.
    agent.pods = [webPod];
    listed = 0;
    agent.client.podsChanged();
    await eventually(() => expect(server.agents()[0].pods!.map((p) => p.name)).toEqual(["web-1"]));
    expect(listed).toBe(1);

    // A change while the stream is down reaches the next stream in its whole list.
    await server.stop();
    await eventually(() => expect(agent.client.status().connected).toBe(false));
    agent.pods = [webPod, { ...webPod, name: "web-2", ip: "10.1.0.12" }];
    agent.client.podsChanged("default/web-2");
    const again = await startServer(server.port);
    await eventually(() => expect(again.agents()[0]?.pods?.map((p) => p.name)).toEqual(["web-1", "web-2"]));
  });

  it("leaves the pods out of its reports to a controller that keeps them from PodsChanged and PodsDelta", async () => {
    const server = await startServer();
    const sent: Report[] = [];
    const agent = startClient(server.port, {
      report: async (stream) => {
        const report = emptyReport({ ...reportPods(stream.podsOmitted, () => agent.pods), intervalSeconds: 0.05 });
        sent.push(report);
        return report;
      },
    });
    const web2 = { ...webPod, name: "web-2", ip: "10.1.0.12" };
    agent.pods = [webPod, web2]; // in the whole list the stream starts with
    const podNames = () => server.agents()[0]?.pods?.map((p) => p.name);
    await eventually(() => expect(podNames()).toEqual(["web-1", "web-2"]));
    // Reports without a list leave the controller's as it is (an empty list would have emptied it).
    const before = sent.length;
    await eventually(() => expect(sent.length).toBeGreaterThanOrEqual(before + 3));
    expect(sent.every((r) => r.podsOmitted === true && r.pods.length === 0)).toBe(true);
    expect(podNames()).toEqual(["web-1", "web-2"]);
    // A change still arrives, as a PodsDelta.
    agent.pods = [webPod];
    agent.client.podsChanged(podKey(web2));
    await eventually(() => expect(podNames()).toEqual(["web-1"]));
  });

  it("NACKs a table it cannot apply and keeps the previous one", async () => {
    const server = await startServer();
    const agent = startClient(server.port);
    await synced(server);
    const good = agent.client.status().appliedVersion;
    const appliedBefore = agent.applied.length;

    agent.failApply = "no balancer slot left";
    await store.create(newServiceObject("api", "10.96.0.11", { app: "api" }));
    await eventually(() => expect(server.agents()[0].lastNack?.error).toBe("apply failed: no balancer slot left"));
    expect(agent.client.status()).toMatchObject({ appliedVersion: good, lastNack: { error: expect.any(String) } });
    expect(server.agents()[0].appliedVersion).toBe(good);
    expect(agent.applied.length).toBe(appliedBefore);

    // Fixed: the next change arrives in full (the controller knows we kept the old table).
    agent.failApply = undefined;
    await store.create(newServiceObject("db", "10.96.0.12", { app: "db" }));
    await eventually(() => expect(serviceNames(agent.applied.at(-1))).toEqual(["api", "db", "web"]));
    await eventually(() => expect(server.agents()[0].lastNack).toBeUndefined());
  });

  it("takes a large table compressed (zstd, api/config-compression.ts) and applies it as a plain one", async () => {
    for (let i = 0; i < 3000; i++) {
      await store.create(newServiceObject(`svc-${i}`, `10.97.${i >> 8}.${i & 255}`, { app: `svc-${i}` }));
    }
    const metrics = new Registry();
    const server = await startServer(0, undefined, undefined, { metrics });
    const agent = startClient(server.port);
    await synced(server);
    expect(agent.applied.at(-1)?.table.services).toHaveLength(3001);
    const sent = await metrics.getSingleMetric("nodemesh_controller_config_bytes_sent_total")!.get();
    const bytes = (encoding: string) => sent.values.find((v) => v.labels.encoding === encoding)?.value ?? 0;
    // The full table went compressed: its plain form is over 120 KB.
    expect(bytes("zstd")).toBeGreaterThan(0);
    expect(bytes("zstd")).toBeLessThan(60_000);
  });

  it("names each report's stream, so a report can carry only the probes taken since the last on it", async () => {
    const first = await startServer();
    const streams: ReportStream[] = [];
    const probe = (nodeName: string, rttMs: number) => ({ nodeName, rttMs, lossRatio: 0, error: "" });
    const agent = startClient(first.port, {
      report: async (stream) => {
        const firstOnStream = !streams.some((s) => s.id === stream.id);
        streams.push(stream);
        return {
          health: { ready: true, detail: "" },
          pods: [],
          traffic: { connectionsOpened: 0, connectionsClosed: 0, bytesReceived: 0, bytesSent: 0 },
          // Both peers on a stream's first report; then node-c alone, probed again (RTT = reports so far).
          ...(firstOnStream
            ? { peers: [probe("node-b", 0.5), probe("node-c", 0.5)] }
            : { peers: [probe("node-c", streams.length)], peersChangedOnly: stream.peersChangedOnly }),
          edges: [],
          intervalSeconds: 0.05,
        };
      },
    });
    // This controller merges such reports (its Hello answer says so): node-b's probe stays.
    await eventually(() => expect(streams.length).toBeGreaterThanOrEqual(3));
    expect(streams[0]).toEqual({ id: 1, peersChangedOnly: true, podsOmitted: true });
    await eventually(() => {
      const peers = first.agents()[0]!.peers!;
      expect(peers.map((p) => p.nodeName)).toEqual(["node-b", "node-c"]);
      expect(peers[0]!.rttMs).toBe(0.5);
      expect(peers[1]!.rttMs).toBeGreaterThan(1);
    });
    // A new stream (the controller restarted, its registry empty) is told apart.
    await first.stop();
    servers = [];
    await eventually(() => expect(agent.client.status().connected).toBe(false));
    const second = await startServer(first.port);
    await eventually(() => expect(streams.at(-1)?.id).toBe(2));
    await eventually(() => expect(second.agents()[0]?.peers?.map((p) => p.nodeName)).toEqual(["node-b", "node-c"]));
  });

  it("reconnects with backoff after the controller restarts, and resyncs", async () => {
    const first = await startServer();
    const port = first.port;
    const agent = startClient(port);
    await eventually(() => expect(agent.client.status().connected).toBe(true));

    await first.stop();
    servers = [];
    await eventually(() => expect(agent.client.status().connected).toBe(false));
    // Forwarding state is untouched while the controller is away.
    expect(serviceNames(agent.applied.at(-1))).toEqual(["web"]);

    await store.create(newServiceObject("api", "10.96.0.11", { app: "api" }));
    const second = await startServer(port);
    await eventually(() => expect(agent.client.status().connected).toBe(true));
    await eventually(() => expect(serviceNames(agent.applied.at(-1))).toEqual(["api", "web"]));
    await synced(second);
  });

  it("serves the cached table when the controller is down at start-up", async () => {
    const server = await startServer();
    const port = server.port;
    const before = startClient(port);
    await synced(server);
    const cachedVersion = before.client.status().appliedVersion;
    await before.client.stop();
    await server.stop();
    servers = [];

    // A new agent process: the controller is unreachable, the cache is there.
    const restarted = startClient(port);
    expect(restarted.applied).toHaveLength(1);
    expect(serviceNames(restarted.applied[0])).toEqual(["web"]);
    expect(restarted.applied[0]?.source).toBe("cache");
    expect(restarted.client.status()).toMatchObject({ connected: false, appliedVersion: cachedVersion });

    await startServer(port);
    await eventually(() => expect(restarted.client.status()).toMatchObject({ connected: true }));
    await eventually(() => expect(restarted.applied.at(-1)?.source).toBe("controller"));
  });

  it("receives routes and policies as ServiceTable.traffic, and serves them from its cache", async () => {
    const server = await startServer();
    const agent = startClient(server.port);
    await synced(server);
    await store.create(asNewObject(httpRouteResource("web-split", { backends: ["web-v1", "web-v2"] })));
    await store.create(asNewObject(trafficPolicyResource("web-retries")));
    const trafficOf = (t: VersionedTable | undefined) => (t?.table.traffic ?? []).map((o) => `${o.kind}/${o.name}`);
    await eventually(() =>
      expect(trafficOf(agent.applied.at(-1))).toEqual(["HTTPRoute/web-split", "TrafficPolicy/web-retries"]),
    );
    // Specs arrive with the schema's defaults filled in.
    expect(agent.applied.at(-1)!.table.traffic![1]).toMatchObject({
      spec: { retries: { attempts: 2, retryOn: expect.any(Array), backoff: { baseInterval: "25ms" } } },
    });
    await synced(server);
    await agent.client.stop();
    await server.stop();
    servers = [];

    const restarted = startClient(server.port);
    expect(trafficOf(restarted.applied[0])).toEqual(["HTTPRoute/web-split", "TrafficPolicy/web-retries"]);
  });

  it("presents the bootstrap token, and stays disconnected when it is refused", async () => {
    const server = await startServer(0, "s3cret");
    const refused = startClient(server.port, { token: "wrong", nodeName: "node-x" });
    const admitted = startClient(server.port, { token: "s3cret" });
    await synced(server);
    expect(server.agents().map((a) => a.node)).toEqual(["node-a"]);
    expect(admitted.client.status().connected).toBe(true);
    await new Promise((r) => setTimeout(r, 100)); // a few refused attempts
    expect(refused.client.status()).toMatchObject({ connected: false, appliedVersion: undefined });
  });

  describe("over TLS", () => {
    const names = (extra: string[] = []) =>
      serverNames({ listenHost: "127.0.0.1", extra, interfaceAddresses: [], hostname: "ignored" });
    async function tlsServer(lifetimeMs?: number): Promise<{ server: AgentServer; caFile: string }> {
      const ca = await WorkloadCa.open("cluster.local", dir); // writes dir/ca.pem, as the controller does
      const server = await startServer(0, undefined, { ca, names: names(), ...(lifetimeMs ? { lifetimeMs } : {}) });
      return { server, caFile: join(dir, "ca.pem") };
    }

    it("connects with the controller's CA root and gets its table", async () => {
      const { server, caFile } = await tlsServer();
      const agent = startClient(server.port, { security: { tls: true, caFile } });
      await synced(server);
      expect(serviceNames(agent.applied.at(-1))).toEqual(["web"]);
      expect(agent.client.status()).toMatchObject({ connected: true, tls: true, lastError: undefined });
    });

    it("refuses a controller whose certificate another CA issued, and says why", async () => {
      const { server } = await tlsServer();
      const otherDir = mkdtempSync(join(dir, "other-"));
      await WorkloadCa.open("cluster.local", otherDir);
      const agent = startClient(server.port, { security: { tls: true, caFile: join(otherDir, "ca.pem") } });
      await eventually(() => expect(agent.client.status().lastError?.hint).toMatch(/--controller-ca-file/));
      expect(agent.client.status().lastError?.error).toMatch(/certificate/i);
      expect(agent.client.status().connected).toBe(false);
      expect(server.agents()).toEqual([]);
      expect(agent.applied).toEqual([]);
    });

    it("refuses a certificate that does not name the address dialled", async () => {
      const ca = await WorkloadCa.open("cluster.local", dir);
      const named = { dnsNames: ["controller.example"], ipAddresses: ["10.9.9.9"] };
      const server = await startServer(0, undefined, { ca, names: named });
      const agent = startClient(server.port, { security: { tls: true, caFile: join(dir, "ca.pem") } });
      await eventually(() =>
        expect(agent.client.status().lastError?.error).toMatch(/IP: 127\.0\.0\.1 is not in the cert's list/),
      );
      expect(agent.client.status().lastError?.hint).toMatch(/--tls-san/);
      expect(server.agents()).toEqual([]);
    });

    it("gets nothing in plaintext from a TLS port", async () => {
      const { server } = await tlsServer();
      const agent = startClient(server.port, { security: { tls: false } });
      await eventually(() => expect(agent.client.status().lastError).toBeDefined());
      await new Promise((r) => setTimeout(r, 200)); // a few attempts
      expect(agent.client.status().connected).toBe(false);
      expect(server.agents()).toEqual([]);
      expect(agent.applied).toEqual([]);
    });

    it("says so when the CA file cannot be read, and connects once it is there", async () => {
      const { server } = await tlsServer();
      const caFile = join(dir, "later.pem");
      const agent = startClient(server.port, { security: { tls: true, caFile } });
      await eventually(() => expect(agent.client.status().lastError?.error).toMatch(/cannot read.*later\.pem/));
      writeFileSync(caFile, (await WorkloadCa.open("cluster.local", dir)).trustBundlePem);
      await synced(server);
      expect(agent.client.status().connected).toBe(true);
    });

    describe("node certificates", () => {
      /** A controller with a token and a CA of its own (dir/<name>/ca.pem) that issues node certificates. */
      async function certifyingServer(name: string, lifetimeMs = 60_000) {
        mkdirSync(join(dir, name), { recursive: true });
        const ca = await WorkloadCa.open("cluster.local", join(dir, name));
        const server = await startServer(0, "s3cret", { ca, names: names() }, { identities: { ca, lifetimeMs } });
        return { server, caFile: join(dir, name, "ca.pem") };
      }
      const stateDir = () => join(dir, "state");
      const withCertificate = (port: number, caFile: string, token?: string) =>
        startClient(port, {
          security: { tls: true, caFile },
          ...(token ? { token } : {}),
          nodeCertificate: new NodeCertificate(stateDir(), log),
        });

      beforeEach(() => mkdirSync(stateDir(), { recursive: true }));

      it("bootstraps with the token, then connects on its node certificate alone", async () => {
        const { server, caFile } = await certifyingServer("ca");
        const first = withCertificate(server.port, caFile, "s3cret");
        await eventually(() => expect(first.client.status().nodeCertificate).toBeDefined());
        expect(first.client.status()).toMatchObject({
          connected: true,
          credential: "token",
          nodeCertificate: { spiffeId: "spiffe://cluster.local/nodemesh/node/node-a" },
        });
        expect(statSync(join(stateDir(), NODE_KEY_FILE)).mode & 0o777).toBe(0o600);
        await first.client.stop();

        const restarted = withCertificate(server.port, caFile); // no token
        await eventually(() => expect(restarted.client.status()).toMatchObject({ connected: true }));
        expect(restarted.client.status().credential).toBe("node certificate");
        await synced(server);
        expect(serviceNames(restarted.applied.at(-1))).toEqual(["web"]);
      });

      it("sends the enrollments not yet reported before a workload certificate request", async () => {
        const { server, caFile } = await certifyingServer("workload-ca");
        const agent = withCertificate(server.port, caFile, "s3cret");
        await synced(server);
        // The controller certifies an identity only for a node it knows hosts one of its pods.
        agent.pods = [{ ...webPod, serviceAccount: "web" }];
        agent.client.podsChanged(); // coalesced: not sent yet
        const { generateKeys, KEY_ALGORITHM, x509 } = await import("../../api/x509.ts");
        const keys = await generateKeys();
        const csr = await x509.Pkcs10CertificateRequestGenerator.create({
          keys: keys as never,
          signingAlgorithm: KEY_ALGORITHM,
        });
        const reply = await agent.client.requestCertificate({
          namespace: "default",
          serviceAccount: "web",
          csrPem: csr.toString("pem"),
        });
        expect(new x509.X509Certificate(reply.certChainPem).subjectName).toBeDefined();
        expect(reply.certChainPem).toContain("BEGIN CERTIFICATE");
      });

      it("drops a certificate the controller's CA no longer verifies and gets one of the new CA", async () => {
        const old = await certifyingServer("old-ca");
        const first = withCertificate(old.server.port, old.caFile, "s3cret");
        await eventually(() => expect(first.client.status().nodeCertificate).toBeDefined());
        await first.client.stop();
        await old.server.stop();

        // A controller with another CA (its store was lost): the certificate counts for nothing.
        const fresh = await certifyingServer("new-ca");
        const issuedByNewCa = () => {
          const held = new NodeCertificate(stateDir(), log).current();
          return (
            held !== undefined &&
            new X509Certificate(held.chainPem).checkIssued(new X509Certificate(readFileSync(fresh.caFile)))
          );
        };
        expect(issuedByNewCa()).toBe(false);
        const agent = withCertificate(fresh.server.port, fresh.caFile, "s3cret");
        await eventually(() => expect(issuedByNewCa()).toBe(true));
        expect(agent.client.status().credential).toBe("token");
        await agent.client.stop();
        const restarted = withCertificate(fresh.server.port, fresh.caFile);
        await eventually(() => expect(restarted.client.status().credential).toBe("node certificate"));
      });

      it("drops its certificate once the node is released, and stays out without the token", async () => {
        const { server, caFile } = await certifyingServer("ca");
        const first = withCertificate(server.port, caFile, "s3cret");
        await eventually(() => expect(first.client.status().nodeCertificate).toBeDefined());
        await first.client.stop();
        expect(await server.releaseNode("node-a")).toBe(true);

        const released = withCertificate(server.port, caFile);
        await eventually(() => expect(existsSync(join(stateDir(), NODE_CERT_FILE))).toBe(false));
        await new Promise((r) => setTimeout(r, 100)); // a few more attempts, on nothing but the node secret
        expect(released.client.status().connected).toBe(false);
        expect(released.client.status().lastError?.error).toMatch(/bearer token/);
        expect(server.agents().filter((a) => a.connected)).toEqual([]);
      });

      it("renews its certificate at half-life", async () => {
        const { server, caFile } = await certifyingServer("ca", 4_000);
        const agent = withCertificate(server.port, caFile, "s3cret");
        await eventually(() => expect(agent.client.status().nodeCertificate).toBeDefined());
        const first = agent.client.status().nodeCertificate!.notAfter;
        await eventually(() => expect(agent.client.status().nodeCertificate!.notAfter).not.toBe(first), 4_000);
      });
    });

    it("renews the server certificate at half-life; new connections get the new one", async () => {
      const { server, caFile } = await tlsServer(2000);
      const first = server.serverCertificate!.certificatePem;
      startClient(server.port, { security: { tls: true, caFile } });
      await synced(server);
      await eventually(() => expect(server.serverCertificate!.issued).toBeGreaterThanOrEqual(2), 3000);
      expect(server.serverCertificate!.certificatePem).not.toBe(first);
      const later = startClient(server.port, { security: { tls: true, caFile }, nodeName: "node-b" });
      await eventually(() => expect(later.client.status().connected).toBe(true));
    });
  });
});
