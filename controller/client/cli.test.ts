// `nodemesh apply | get | delete` against a REST server in this process, output captured.

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Registry } from "prom-client";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { agentsView } from "../agents-view.ts";
import { TokenAuth } from "../auth.ts";
import { AgentRegistry } from "../config/agent-registry.ts";
import { ObjectStatuses } from "../config/object-status.ts";
import { SIM_NODE_FACTS } from "../config/testing/fixtures.ts";
import { GraphQueries } from "../graph/service-graph.ts";
import { edgeSample } from "../graph/testing/edge-sample.ts";
import { TrafficWindow } from "../graph/traffic-window.ts";
import { type RestServer, startRestServer } from "../rest/server.ts";
import { startTestServer, type TestServer } from "../rest/test-server.fixture.ts";
import { MemoryStore } from "../store/memory-store.ts";
import { type ClientCommand, HELP, OPTIONS, runClient } from "./cli.ts";

const MESH = `
apiVersion: nodemesh.io/v1alpha1
kind: Service
metadata: { name: web }
spec:
  vip: 10.96.0.10
  ports: [{ name: http, port: 80, targetPort: 8080 }]
  selector: { app: web }
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: web-split }
spec:
  parentRefs: [{ name: web, port: 80 }]
  rules:
    - matches: [{ path: { type: PathPrefix, value: /v2 } }]
      backendRefs: [{ name: web-v2, weight: 90 }, { name: web-v1, weight: 10 }]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: { name: greeter }
spec:
  parentRefs: [{ name: greeter }]
  rules: [{ backendRefs: [{ name: greeter-v2 }] }]
---
apiVersion: nodemesh.io/v1alpha1
kind: TrafficPolicy
metadata: { name: web }
spec:
  targetRefs: [{ name: web }]
  timeouts: { request: 2s }
  retries: { attempts: 3 }
`;

let t: TestServer;
let dir: string;
let out: string[];
let err: string[];

beforeEach(async () => {
  t = await startTestServer();
  dir = mkdtempSync(join(tmpdir(), "nodemesh-cli-"));
  // Hermetic: no context file of the machine's user, no address or token from the environment.
  vi.stubEnv("NODEMESH_CONFIG", join(dir, "config"));
  vi.stubEnv("NODEMESH_SERVER", undefined);
  vi.stubEnv("NODEMESH_TOKEN", undefined);
  out = [];
  err = [];
  vi.spyOn(console, "log").mockImplementation((line: string) => void out.push(line));
  vi.spyOn(process.stdout, "write").mockImplementation((text) => out.push(String(text)) > 0);
  vi.spyOn(process.stderr, "write").mockImplementation((text) => err.push(String(text)) > 0);
});

afterEach(async () => {
  vi.restoreAllMocks();
  vi.unstubAllEnvs();
  await t.rest.close();
  rmSync(dir, { recursive: true, force: true });
});

function cli(command: ClientCommand, ...args: string[]): Promise<number> {
  out = [];
  err = [];
  return runClient(command, [...args, "--server", t.rest.url]);
}

/** What was printed, line by line. */
function lines(): string[] {
  return out.join("\n").split("\n");
}

function file(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

describe("nodemesh apply, get, delete", () => {
  it("applies every kind from one YAML file, then reports them unchanged or configured", async () => {
    const path = file("mesh.yaml", MESH);
    expect(await cli("apply", "-f", path)).toBe(0);
    expect(out).toEqual([
      "service/web created",
      "httproute/web-split created",
      "grpcroute/greeter created",
      "trafficpolicy/web created",
    ]);
    expect(t.store.get({ plural: "httproutes", namespace: "default", name: "web-split" })?.apiVersion).toBe(
      "gateway.networking.k8s.io/v1",
    );

    // Stored specs carry defaults; the file's do not: still the same.
    expect(await cli("apply", "-f", path)).toBe(0);
    expect(out).toEqual([
      "service/web unchanged",
      "httproute/web-split unchanged",
      "grpcroute/greeter unchanged",
      "trafficpolicy/web unchanged",
    ]);

    expect(await cli("apply", "-f", file("changed.yaml", MESH.replace("attempts: 3", "attempts: 4")))).toBe(0);
    expect(out).toContain("trafficpolicy/web configured");
  });

  it("lists each kind with its own columns, and deletes", async () => {
    await cli("apply", "-f", file("mesh.yaml", MESH));
    expect(await cli("get", "services")).toBe(0);
    expect(lines()).toEqual([
      expect.stringMatching(/^NAMESPACE\s+NAME\s+VIP\s+PORTS\s+APPLIED\s+AGE$/),
      expect.stringMatching(/^default\s+web\s+10\.96\.0\.10\s+80\/auto\s/), // no protocol: detected
    ]);

    expect(await cli("get", "httproutes")).toBe(0);
    expect(lines()).toEqual([
      expect.stringMatching(/^NAMESPACE\s+NAME\s+PARENTS\s+RULES\s+APPLIED\s+AGE$/),
      expect.stringMatching(/^default\s+web-split\s+web:80\s+1\s/),
    ]);

    expect(await cli("get", "trafficpolicy", "web", "-o", "json")).toBe(0);
    expect(JSON.parse(out[0]!)).toMatchObject({ kind: "TrafficPolicy", spec: { targetRefs: [{ name: "web" }] } });

    expect(await cli("get", "grpcroutes", "-A")).toBe(0);
    expect(out[0]).toMatch(/greeter\s+greeter\s+1/);

    expect(await cli("delete", "httproute", "web-split")).toBe(0);
    expect(out).toEqual(["httproute/web-split deleted"]);
    expect(await cli("get", "httproutes")).toBe(0);
    expect(out).toEqual(["No httproutes found."]);
  });

  it("prints every bad field of a refused object", async () => {
    const bad = MESH.replace(
      "{ type: PathPrefix, value: /v2 }",
      "{ type: RegularExpression, value: '/(v)\\1' }",
    ).replace("weight: 10", "weight: -1");
    expect(await cli("apply", "-f", file("bad.yaml", bad))).toBe(1);
    expect(err.join("")).toContain("422: HTTPRoute");
    expect(err.join("")).toContain("spec.rules[0].matches[0].path.value: backreferences are not supported");
    expect(err.join("")).toContain("spec.rules[0].backendRefs[1].weight");
    expect(t.store.list("httproutes")).toEqual([]);
  });
});

describe("the first hour: messages a new user meets", () => {
  it("prints each bad field once, with the nearest known field", async () => {
    const typo = MESH.split("---")[3]!.replace("retries: { attempts: 3 }", "faults: { abort: { percent: 10 } }");
    expect(await cli("apply", "-f", file("typo.yaml", typo))).toBe(1);
    expect(err.join("")).toBe(
      'nodemesh apply: 422: TrafficPolicy "web" is invalid:\n  spec.faults: unknown field; did you mean "faultInjection"?\n',
    );
    expect(t.store.list("trafficpolicies")).toEqual([]);
  });

  it("checks every document before sending any", async () => {
    const broken = `${MESH}\n---\nkind: Service\nspec: {}\n`;
    expect(await cli("apply", "-f", file("broken.yaml", broken))).toBe(1);
    expect(err.join("")).toMatch(/document 5: every document needs kind and metadata\.name/);
    expect(t.store.list("services")).toEqual([]);
  });

  it("get -o wide shows a TrafficPolicy's effective retries, defaults filled in", async () => {
    const policies = `${MESH.split("---")[3]}---
apiVersion: nodemesh.io/v1alpha1
kind: TrafficPolicy
metadata: { name: wide }
spec:
  targetRefs: [{ name: api }]
  retries: { attempts: 6, budget: { percent: 60 } }
---
apiVersion: nodemesh.io/v1alpha1
kind: TrafficPolicy
metadata: { name: plain }
spec:
  targetRefs: [{ name: db }]
`;
    expect(await cli("apply", "-f", file("policies.yaml", policies))).toBe(0);
    expect(await cli("get", "trafficpolicies", "-o", "wide")).toBe(0);
    expect(lines()).toEqual([
      expect.stringMatching(/^NAMESPACE\s+NAME\s+TARGETS\s+ATTEMPTS\s+RETRY ON\s+BACKOFF\s+BUDGET\s+APPLIED\s+AGE$/),
      expect.stringMatching(/^default\s+plain\s+db\s+none\s+-\s+-\s+-\s/),
      expect.stringMatching(
        /^default\s+web\s+web\s+3\s+connect-failure,reset,gateway-error,unavailable\s+25ms\.\.250ms\s+20% \(min 3\)\s/,
      ),
      expect.stringMatching(
        /^default\s+wide\s+api\s+6\s+connect-failure,reset,gateway-error,unavailable\s+25ms\.\.250ms\s+60% \(min 3\)\s/,
      ),
    ]);
    // The plain table keeps its columns.
    expect(await cli("get", "trafficpolicies")).toBe(0);
    expect(lines()[0]).toMatch(/^NAMESPACE\s+NAME\s+TARGETS\s+APPLIED\s+AGE$/);
  });

  it("refuses an output format the command does not have, and flags that would do nothing", async () => {
    expect(await cli("get", "services", "-o", "xml")).toBe(2);
    expect(err.join("")).toBe("nodemesh get: -o xml: the output format is one of table, wide, yaml, json\n");
    expect(await cli("nodes", "-n", "shop")).toBe(2);
    expect(err.join("")).toBe("nodemesh nodes: nodes has no option -n (see nodemesh nodes --help)\n");
    expect(await cli("status", "--namespace", "shop")).toBe(2);
    expect(err.join("")).toBe("nodemesh status: status has no option --namespace (see nodemesh status --help)\n");
    expect(await cli("status", "-o", "wide")).toBe(2);
    expect(out).toEqual([]);
  });

  it("apply --dry-run: refused, sending nothing, while the controller has no server-side dry run", async () => {
    expect(await cli("apply", "--dry-run", "-f", file("mesh.yaml", MESH))).toBe(1);
    expect(err.join("")).toBe(
      `nodemesh apply: --dry-run: server-side dry run is not available yet (the controller at ${t.rest.url} ` +
        "offers no dryRun parameter for services); nothing was applied\n",
    );
    expect(out).toEqual([]);
    expect(t.store.list("services")).toEqual([]);
  });

  it("apply --dry-run: sends ?dryRun=All to a controller whose API declares it", async () => {
    // A stand-in for the controller once it has the server-side dry run: it declares the
    // parameter in its OpenAPI document and records what it is sent.
    const seen: string[] = [];
    const collection = "/apis/nodemesh.io/v1alpha1/namespaces/{namespace}/services";
    const dryRun = [{ name: "dryRun", in: "query", schema: { type: "string" } }];
    const openapi = {
      paths: {
        [collection]: { post: { parameters: dryRun } },
        [`${collection}/{name}`]: { put: { parameters: dryRun } },
      },
    };
    const stub = createServer((req, res) => {
      seen.push(`${req.method} ${req.url}`);
      req.resume();
      const json = (status: number, body: unknown) =>
        res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
      if (req.url === "/openapi/v3") return json(200, openapi);
      if (req.method === "GET") return json(404, { kind: "Status", message: "not found" });
      return json(201, {});
    });
    await new Promise<void>((resolve) => stub.listen(0, "127.0.0.1", resolve));
    try {
      const server = `http://127.0.0.1:${(stub.address() as AddressInfo).port}`;
      const service = MESH.split("---")[0]!;
      out = [];
      const code = await runClient("apply", ["--dry-run", "-f", file("svc.yaml", service), "--server", server]);
      expect(code, err.join("")).toBe(0);
      expect(out).toEqual(["service/web created (server dry run)"]);
      expect(seen).toEqual([
        "GET /openapi/v3",
        "GET /apis/nodemesh.io/v1alpha1/namespaces/default/services/web",
        "POST /apis/nodemesh.io/v1alpha1/namespaces/default/services?dryRun=All",
      ]);
    } finally {
      await new Promise((resolve) => stub.close(resolve));
    }
  });

  it("says why the controller cannot be reached and what to do", async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    expect(await runClient("get", ["services", "--server", `http://127.0.0.1:${port}`])).toBe(1);
    expect(err.join("")).toBe(
      `nodemesh get: cannot reach the controller at http://127.0.0.1:${port} (--server): connect ECONNREFUSED 127.0.0.1:${port}\n` +
        "  Without --tokens the controller's REST API listens on 127.0.0.1 only, so only its own host reaches it.\n" +
        "  From elsewhere, start it with --address 0.0.0.0 --tokens FILE, then give the CLI its address and a token:\n" +
        `  --server URL --token TOKEN, or $NODEMESH_SERVER and $NODEMESH_TOKEN, or a context in ${join(dir, "config")}.\n`,
    );
    err = [];
    vi.stubEnv("NODEMESH_SERVER", `http://127.0.0.1:${port}`);
    expect(await runClient("status", [])).toBe(1);
    expect(err.join("")).toContain(`cannot reach the controller at http://127.0.0.1:${port} ($NODEMESH_SERVER)`);
  });

  it("refuses a server that is not a URL", async () => {
    for (const server of ["10.0.0.2:8080", "http://127.0.0.1:99999", "ftp://10.0.0.2"]) {
      err = [];
      expect(await runClient("get", ["services", "--server", server])).toBe(1);
      expect(err.join("")).toBe(`nodemesh get: the server "${server}" (--server) is not an http:// or https:// URL\n`);
    }
  });

  it("documents every flag of each command in its --help, and only those", async () => {
    for (const [command, options] of Object.entries(OPTIONS)) {
      for (const [name, option] of Object.entries(options)) {
        expect(HELP[command as ClientCommand]).toContain(`--${name}`);
        if ("short" in option) expect(HELP[command as ClientCommand]).toContain(`-${option.short}, --${name}`);
      }
    }
    for (const command of ["nodes", "status", "top", "edges"] as const)
      expect(HELP[command]).not.toContain("--namespace");
    expect(HELP.apply).toContain("--dry-run");
    expect(HELP.get).toContain("table (default), wide, yaml or json");
  });
});

describe("the context file", () => {
  let secured: TestServer;
  beforeEach(async () => {
    secured = await startTestServer({ auth: TokenAuth.parse("writer-token write alice\n") });
  });
  afterEach(async () => {
    await secured.rest.close();
  });

  function contexts(text: string): void {
    writeFileSync(join(dir, "config"), text);
  }

  it("gives the server and the token of its current context, or of --context", async () => {
    contexts(`current-context: lab
contexts:
  lab: { server: "${secured.rest.url}/", token: writer-token }
  open: { server: "${t.rest.url}" }
`);
    out = [];
    expect(await runClient("apply", ["-f", file("mesh.yaml", MESH)]), err.join("")).toBe(0);
    expect(secured.store.list("services")).toHaveLength(1);
    expect(t.store.list("services")).toHaveLength(0);
    expect(await runClient("get", ["services", "--context", "open"])).toBe(0);
    expect(out.at(-1)).toBe("No services found.");
  });

  it("sends the context's token only to the context's server", async () => {
    contexts(`current-context: lab\ncontexts:\n  lab: { server: "http://127.0.0.1:1", token: writer-token }\n`);
    expect(await runClient("get", ["services", "--server", secured.rest.url])).toBe(1);
    expect(err.join("")).toBe("nodemesh get: 401: a bearer token is required\n");
  });

  it("names what is wrong in it", async () => {
    contexts(`current_context: lab\ncontexts:\n  lab: { server: "10.0.0.2:8080" }\n`);
    expect(await runClient("get", ["services"])).toBe(1);
    expect(err.join("")).toBe(
      `nodemesh get: ${join(dir, "config")} is invalid: contexts.lab.server: must be an http:// or https:// URL; ` +
        'current_context: unknown field; did you mean "current-context"?\n',
    );
    err = [];
    contexts(`contexts:\n  lab: { server: "http://127.0.0.1:1" }\n`);
    expect(await runClient("get", ["services", "--context", "prod"])).toBe(1);
    expect(err.join("")).toBe(`nodemesh get: context "prod" is not in ${join(dir, "config")} (it has: lab)\n`);
  });
});

// ---------------------------------------------------------------- top, edges

const GRAPH_T0 = Date.UTC(2025, 0, 1, 12, 0, 0);

const graphEdge = edgeSample;

describe("nodemesh top and edges", () => {
  let traffic: TrafficWindow;
  let graphServer: RestServer;

  async function startGraphServer(auth?: TokenAuth): Promise<void> {
    graphServer = await startRestServer({
      store: new MemoryStore(),
      registry: new Registry(),
      host: "127.0.0.1",
      port: 0,
      ...(auth ? { auth } : {}),
      serviceGraph: new GraphQueries({
        traffic,
        store: new MemoryStore(),
        service: () => undefined,
        propagation: () => undefined,
        now: () => GRAPH_T0,
      }),
    });
  }

  /** Fills the last minute: web (HTTP, 2 rps, 5 % errors), cart (gRPC, 0.5 rps), passthrough (TCP). */
  function fillTraffic(): void {
    traffic.add("node-1", GRAPH_T0, 60, [
      graphEdge({ requests: 120, errors: 6, bucket: 4 }), // (5, 10] ms
      graphEdge({
        destinationService: "cart.shop",
        destinationWorkload: "cart",
        destinationNamespace: "shop",
        protocol: "grpc",
        requests: 30,
        bucket: 6, // (25, 50] ms
      }),
    ]);
    traffic.add("node-2", GRAPH_T0, 60, [
      graphEdge({
        sourceWorkload: "api",
        sourceNamespace: "edge",
        destinationService: "passthrough",
        destinationWorkload: "unknown",
        destinationNamespace: "unknown",
        protocol: "tcp",
        requests: 6,
        errors: 3,
        latencyBuckets: [],
      }),
    ]);
    // Older than a minute: only a longer window sees it.
    traffic.add("node-1", GRAPH_T0 - 200_000, 10, [graphEdge({ requests: 100 })]);
  }

  beforeEach(async () => {
    traffic = new TrafficWindow();
    await startGraphServer();
  });

  afterEach(async () => {
    await graphServer.close();
  });

  function graphCli(command: ClientCommand, ...args: string[]): Promise<number> {
    out = [];
    err = [];
    return runClient(command, [...args, "--server", graphServer.url]);
  }

  it("top: one row per service over the last minute", async () => {
    fillTraffic();
    expect(await graphCli("top")).toBe(0);
    const printed = lines();
    expect(printed).toEqual([
      expect.stringMatching(/^SERVICE\s+NAMESPACE\s+PROTOCOL\s+SUCCESS\s+RPS\s+P50\s+P99$/),
      expect.stringMatching(/^cart\s+shop\s+grpc\s+100\.00%\s+0\.5\s+38ms\s+50ms$/),
      expect.stringMatching(/^passthrough\s+tcp\s+50\.00%\s+0\.1\s+-\s+-$/), // no namespace, no latency
      expect.stringMatching(/^web\s+default\s+http\s+95\.00%\s+2\.0\s+7\.50ms\s+9\.95ms$/),
    ]);
    // Aligned columns: the passthrough row's empty namespace keeps PROTOCOL in place.
    expect(printed[2]!.indexOf("tcp")).toBe(printed[0]!.indexOf("PROTOCOL"));
    expect(printed[3]!.indexOf("7.50ms")).toBe(printed[0]!.indexOf("P50"));
  });

  it("top --window: a longer window takes older reports in", async () => {
    fillTraffic();
    expect(await graphCli("top", "--window", "300")).toBe(0);
    // web: 220 requests over the 210 s the reports cover.
    expect(lines()[3]).toMatch(/^web\s+default\s+http\s+97\.27%\s+1\.0\s/);
  });

  it("top -o json: the services as served", async () => {
    fillTraffic();
    expect(await graphCli("top", "-o", "json", "--window", "60")).toBe(0);
    const services = JSON.parse(out.join(""));
    expect(services).toEqual(traffic.graph(GRAPH_T0, 60).services);
    expect(services.map((s: { id: string }) => s.id)).toEqual(["svc:cart.shop", "svc:passthrough", "svc:web.default"]);
  });

  it("top: says so when there is no traffic", async () => {
    expect(await graphCli("top")).toBe(0);
    expect(out).toEqual(["No traffic in the last 60 s."]);
    expect(await graphCli("top", "--window", "900")).toBe(0);
    expect(out).toEqual(["No traffic in the last 900 s."]);
  });

  it("top and edges: a window out of range is the server's 400", async () => {
    expect(await graphCli("top", "--window", "5")).toBe(1);
    expect(err.join("")).toBe("nodemesh top: 400: window must be an integer number of seconds from 10 to 900\n");
    expect(await graphCli("edges", "--window", "ten")).toBe(1);
    expect(err.join("")).toContain("nodemesh edges: 400: window must be");
    expect(out).toEqual([]);
  });

  it("edges: every hop, workload → service → workload, with mTLS", async () => {
    fillTraffic();
    expect(await graphCli("edges")).toBe(0);
    const printed = lines();
    expect(printed).toEqual([
      expect.stringMatching(/^SOURCE\s+DESTINATION\s+PROTOCOL\s+SUCCESS\s+RPS\s+P50\s+P99\s+MTLS$/),
      expect.stringMatching(/^service\/cart\.shop\s+workload\/cart\.shop\s+grpc\s+100\.00%\s+0\.5\s+38ms\s+50ms\s+no$/),
      expect.stringMatching(
        /^service\/web\.default\s+workload\/web\.default\s+http\s+95\.00%\s+2\.0\s+7\.50ms\s+9\.95ms\s+no$/,
      ),
      // The unknown workload behind passthrough has no hop of its own.
      expect.stringMatching(/^workload\/api\.edge\s+service\/passthrough\s+tcp\s+50\.00%\s+0\.1\s+-\s+-\s+no$/),
      expect.stringMatching(/^workload\/frontend\.default\s+service\/cart\.shop\s+grpc\s+100\.00%\s+0\.5\s/),
      expect.stringMatching(/^workload\/frontend\.default\s+service\/web\.default\s+http\s+95\.00%\s+2\.0\s/),
    ]);
    expect(printed[1]!.indexOf("workload/")).toBe(printed[0]!.indexOf("DESTINATION"));
  });

  it("edges -o json, and the empty case", async () => {
    expect(await graphCli("edges")).toBe(0);
    expect(out).toEqual(["No traffic in the last 60 s."]);
    fillTraffic();
    expect(await graphCli("edges", "-o", "json")).toBe(0);
    const edges = JSON.parse(out.join(""));
    expect(edges).toEqual(traffic.graph(GRAPH_T0, 60).edges);
    expect(edges).toHaveLength(5);
  });

  it("shows a dash for success and latency on an edge without requests", async () => {
    traffic.add("node-1", GRAPH_T0, 60, [graphEdge({ requests: 0 })]);
    expect(await graphCli("top")).toBe(0);
    expect(lines()[1]).toMatch(/^web\s+default\s+http\s+-\s+0\.0\s+-\s+-$/);
  });

  it("sends the token, and prints the server's refusal without one", async () => {
    await graphServer.close();
    await startGraphServer(TokenAuth.parse("reader-token read alice\n"));
    fillTraffic();
    expect(await graphCli("edges")).toBe(1);
    expect(err.join("")).toBe("nodemesh edges: 401: a bearer token is required\n");
    expect(await graphCli("top", "--token", "reader-token")).toBe(0);
    expect(lines()).toHaveLength(4);
  });

  it("top --help and edges --help describe the columns' source", async () => {
    expect(await graphCli("top", "--help")).toBe(0);
    expect(out.join("")).toContain("Usage: nodemesh top");
    expect(out.join("")).toContain("--window SECONDS");
    expect(await graphCli("edges", "-h")).toBe(0);
    expect(out.join("")).toContain("Usage: nodemesh edges");
  });
});

describe("nodemesh nodes", () => {
  /** A controller's agents view over `nodes` nodes, each having probed every other; the paths asked. */
  async function serveNodes(nodes: number): Promise<string[]> {
    await t.rest.close();
    const registry = new AgentRegistry({ forgetAfterMs: 60_000, onTopologyChange: () => {} });
    const names = Array.from({ length: nodes }, (_, i) => `node-${i}`);
    for (const node of names) {
      registry.connected(
        { nodeName: node, agentVersion: "t", underlayIp: "10.250.0.1", facts: SIM_NODE_FACTS },
        {},
        new Date(),
      );
      const peers = names
        .filter((peer) => peer !== node)
        .map((peer, j) => ({ nodeName: peer, rttMs: 0.25 + j / 1000, lossRatio: 0, error: "" }));
      const traffic = { connectionsOpened: 0, connectionsClosed: 0, bytesReceived: 0, bytesSent: 0 };
      const health = { ready: true, detail: "" };
      registry.reported(node, { health, pods: [], traffic, peers, edges: [], intervalSeconds: 5 }, new Date());
    }
    const asked: string[] = [];
    const view = agentsView({ agents: (detail) => registry.list(detail), configVersion: () => "1" });
    t = await startTestServer({
      views: {
        agents: {
          ...view,
          items: (query) => {
            asked.push(query.toString());
            return view.items(query);
          },
        },
      },
    });
    return asked;
  }

  it("draws the RTT matrix of a small mesh", async () => {
    const asked = await serveNodes(3);
    expect(await cli("nodes")).toBe(0);
    expect(out.join("\n")).toMatch(/^node-0\s+-\s+0\.250\s+0\.251$/m);
    expect(asked).toEqual(["peers=matrix&pods=count"]);
  });

  it("sums each node's probes up for a mesh of more than 40 nodes, and never asks for them", async () => {
    const asked = await serveNodes(41);
    expect(await cli("nodes")).toBe(0);
    const text = out.join("\n");
    expect(text).not.toContain("RTT ms (from \\ to)");
    expect(text).toMatch(
      /^RTT FROM\s+PEERS PROBED\s+UNREACHABLE\s+WITH LOSS\s+MEDIAN MS\s+SLOWEST MS\s+SLOWEST PEER$/m,
    );
    // 40 peers at 0.250 … 0.289 ms: the lower median is the 20th.
    expect(text).toMatch(/^node-0\s+40\s+0\s+0\s+0\.269\s+0\.289\s+node-40$/m);
    expect(asked).toEqual(["peers=matrix&pods=count"]);
    out = [];
    asked.length = 0;
    expect(await cli("nodes", "-o", "json")).toBe(0);
    expect(JSON.parse(out.join(""))[0].peers).toHaveLength(40);
    expect(asked).toEqual(["peers=all&pods=all"]);
  });
});

describe("nodemesh nodes release", () => {
  it("deletes the node's binding (write role); an unknown node is the server's 404", async () => {
    await t.rest.close();
    const bound = new Set(["node-1", "node-2"]);
    t = await startTestServer({
      auth: TokenAuth.parse("w write ops\nr read viewer\n"),
      views: {
        nodebindings: {
          kind: "NodeBinding",
          items: () => [...bound].map((node) => ({ node })),
          remove: async (node) => bound.delete(node),
        },
      },
    });
    expect(await cli("nodes", "release", "node-2", "--token", "r")).toBe(1);
    expect(err.join("")).toContain("403");
    expect(await cli("nodes", "release", "node-2", "--token", "w")).toBe(0);
    expect(out.join("")).toContain("node node-2 released");
    expect([...bound]).toEqual(["node-1"]);
    expect(await cli("nodes", "release", "node-2", "--token", "w")).toBe(1);
    expect(err.join("")).toMatch(/404: nodebindings "node-2" not found/);
    expect(await cli("nodes", "release")).toBe(1);
    expect(err.join("")).toContain("nodes release needs a NODE");
    // The list is served; other methods on an item are refused.
    const list = await t.call("GET", "/apis/nodemesh.io/v1alpha1/nodebindings", { token: "r" });
    expect(list.body).toMatchObject({ kind: "NodeBindingList", items: [{ node: "node-1" }] });
    expect((await t.call("GET", "/apis/nodemesh.io/v1alpha1/nodebindings/node-1", { token: "r" })).status).toBe(405);
  });
});

describe("nodemesh check and explain without their agent", () => {
  const NO_AGENT = "http://127.0.0.1:1";
  const findings = () =>
    JSON.parse(out.join("\n")) as { verdict: string; check: string; subject: string; message: string; fix?: string }[];

  it("check --all: the controller's verdicts on objects, and an agent that does not answer, as findings (exit 1)", async () => {
    // A server whose objects carry the cross-object checks' conditions, as the controller's do.
    await t.rest.close();
    const store = new MemoryStore();
    const statuses = new ObjectStatuses(store, () => undefined);
    t = await startTestServer({ store, statusFor: (r) => statuses.status(r) });
    expect(await cli("apply", "-f", file("mesh.yaml", MESH))).toBe(0);
    expect(await cli("check", "--all", "--agent", NO_AGENT, "-o", "json")).toBe(1);
    const f = findings();
    expect(f.find((x) => x.check === "controller")).toMatchObject({ verdict: "ok", message: "healthy and ready" });
    expect(f.find((x) => x.subject === `agent ${NO_AGENT}`)).toMatchObject({ verdict: "error", check: "agent" });
    const split = f.filter((x) => x.subject === "HTTPRoute default/web-split");
    expect(split).toEqual([
      {
        verdict: "error",
        check: "objects",
        subject: "HTTPRoute default/web-split",
        message:
          "ResolvedRefs False (BackendNotFound): no such Service: default/web-v2, default/web-v1 (its share of requests gets a 500)",
        fix: "spec.rules[].backendRefs (or a RequestMirror's backendRef): name an existing Service, or create it",
      },
    ]);
    expect(f.find((x) => x.subject === "GRPCRoute default/greeter")).toMatchObject({
      verdict: "error",
      message: "Accepted False (NoMatchingParent): no such Service: default/greeter",
    });
  });

  it("check with the controller down too: both are findings, not a crash", async () => {
    const code = await runClient("check", ["web", "--server", NO_AGENT, "--agent", NO_AGENT, "-o", "json"]);
    expect(code).toBe(1);
    expect(findings().map((x) => `${x.verdict} ${x.check} ${x.subject}`)).toEqual([
      `error controller controller ${NO_AGENT}`,
      `error agent agent ${NO_AGENT}`,
      "error rules pod default/web",
    ]);
    // The table form ends with the tally.
    expect(await runClient("check", ["web", "--server", NO_AGENT, "--agent", NO_AGENT])).toBe(1);
    expect(lines().at(-1)).toBe("3 error(s), 0 warning(s), 0 ok");
  });

  it("explain without its agent says how to reach one; bad arguments are exit 2", async () => {
    expect(await runClient("explain", ["--from", "client", "GET", "http://10.96.0.10/", "--agent", NO_AGENT])).toBe(1);
    expect(err.join("")).toContain(`nodemesh explain: cannot reach the agent at ${NO_AGENT}`);
    expect(err.join("")).toContain("ip netns exec <node> nodemesh");
    expect(await runClient("explain", ["GET", "http://10.96.0.10/"])).toBe(2);
    expect(await runClient("explain", ["--from", "c", "GET", "http://10.96.0.10/", "-H", "no-colon"])).toBe(2);
    expect(await runClient("explain", ["--from", "ns/c", "-n", "ns", "GET", "http://10.96.0.10/"])).toBe(2);
    expect(await runClient("check", ["web", "--all"])).toBe(2);
    expect(await runClient("check", ["web", "--agent", "ftp://x"])).toBe(2);
  });
});
