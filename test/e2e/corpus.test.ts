// The bad-input corpus (issue 14 item 3), run against one live two-node world: a controller, an
// agent per node sharing a tunnel key, a meshed client and a meshed bystander on node-1, an unmeshed
// stranger on node-1, and the meshed sample app on node-2. Every case of test/corpus/*.json is one
// test, named by its family and name. For each case: what came back matches the case's expectation;
// no process of the mesh died, was replaced (same pids) or logged an error; the app served exactly
// as many requests as the case allows (none, unless it says otherwise) and never one whose path or
// headers say "smuggled"; the bystander's connections opened before the first case (HTTP/1.1
// keep-alive, HTTP/2) and a new request of its, through the mesh across the nodes, are served; per
// family, the agents' controller streams and node-1's enrolled pods are unchanged. Cases that show a
// known bug (`knownBug`) run as it.fails, so they start failing once the bug is fixed. At the end
// every case's outcome is printed, by family.

import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import type http2 from "node:http2";
import type net from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TUNNEL_PORT } from "../../api/dataplane.ts";
import {
  type ControllerGrpcCase,
  type EnrollmentCase,
  type Expect,
  expand,
  loadCorpus,
  outcomeMatches,
  type RestCase,
} from "../corpus/corpus.ts";
import { type Node, type Pod, type Proc, World } from "../world/world.ts";
import {
  controllerBody,
  controllerCall,
  controllerFrames,
  enrollmentBytes,
  exchange,
  flood,
  http1Tokens,
  jsonAnswerTokens,
  type Outcome,
  restBytes,
  sendH2,
  sendHttp1,
  sendTunnel,
} from "./clients/corpus-drivers.ts";
import type { UnixRawArgs, UnixRawReply } from "./clients/unix-raw.ts";
import { eventually } from "./eventually.ts";
import { Mesh } from "./mesh.ts";
import { connectFrom, http2Get, http2SessionFrom, httpFrom } from "./netns-client.ts";

const corpus = loadCorpus();
const VIP = "10.96.0.10";
const REST_PORT = 8080;
const GRPC_PORT = 15012;
const UNIX_RAW = new URL("./clients/unix-raw.ts", import.meta.url).pathname;

/** One GET on an open HTTP/1.1 keep-alive connection: the status, once the whole answer came (5 s at most). */
function keepAliveGet(socket: net.Socket): Promise<number> {
  return new Promise((resolve, reject) => {
    let text = "";
    const done = (err?: Error) => {
      clearTimeout(timer);
      socket.off("data", onData);
      socket.off("close", onClose);
      if (err) reject(err);
      else resolve(Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1]));
    };
    const onData = (c: Buffer) => {
      text += c.toString("latin1");
      const end = text.indexOf("\r\n\r\n");
      const length = Number(/\r\ncontent-length: *(\d+)/i.exec(text)?.[1] ?? Number.NaN);
      if (end >= 0 && text.length >= end + 4 + length) done();
    };
    const onClose = () => done(new Error(`the connection closed; got ${JSON.stringify(text.slice(0, 200))}`));
    const timer = setTimeout(() => done(new Error("no answer within 5 s")), 5000);
    socket.on("data", onData);
    socket.once("close", onClose);
    socket.write("GET /steady-h1 HTTP/1.1\r\nHost: server\r\n\r\n");
  });
}

interface Served {
  http: number;
  grpc: number;
  recent: { path: string; headers: Record<string, unknown> }[];
}

interface Result {
  family: string;
  name: string;
  tokens: string[];
  ms: number;
  passed: boolean;
  knownBug?: string;
  /** The first check that failed. */
  failure?: string;
  /** The start of the answer's body or the status details (shown with CORPUS_VERBOSE=1). */
  text?: string;
}

describe("the bad-input corpus against a live two-node mesh", () => {
  let world: World;
  let mesh: Mesh;
  let n1: Node;
  let client: Pod;
  let bystander: Pod;
  let stranger: Pod;
  let server: Pod;
  let procs: { name: string; proc: Proc; pid: number | undefined }[];
  let token: string;
  let ca: Buffer;
  let connectedAt: Record<string, string | undefined>;
  let enrolledOnNode1: string;
  const keys = { mesh: "", other: randomBytes(32).toString("hex") };
  let selfSigned: { key: string; cert: string };
  /** The bystander's connections opened before the first case: each must keep being served. */
  let steadyH2: http2.ClientHttp2Session;
  let steadyH1: net.Socket;
  const results: Result[] = [];
  let fresh = 0;

  const vars = (): Record<string, string> => ({
    vip: VIP,
    "client.ip": client.ip,
    "server.ip": server.ip,
    "stranger.ip": stranger.ip,
    "bystander.ip": bystander.ip,
    "client.netns": client.netnsPath,
    "stranger.netns": stranger.netnsPath,
    "n1.netns": n1.netnsPath,
    "ctl.ip": mesh.controller!.place.ip,
    "n1.ip": n1.underlayIp,
    fresh: `corpus-${process.pid}-${++fresh}`,
  });

  const served = async (): Promise<Served> => {
    const reply = await httpFrom(server.netnsPath, `http://${server.ip}:8080/_control`);
    return JSON.parse(reply.body).served as Served;
  };

  const rest = async (path: string): Promise<string> => {
    const reply = await httpFrom(mesh.controller!.place.netnsPath, `http://127.0.0.1:${REST_PORT}${path}`);
    if (reply.status !== 200) throw new Error(`GET ${path}: ${reply.status} ${reply.body}`);
    return reply.body;
  };

  const agentsConnectedAt = async (): Promise<Record<string, string | undefined>> => {
    const items = JSON.parse(await rest("/apis/nodemesh.io/v1alpha1/agents")).items as {
      node: string;
      connected: boolean;
      connectedAt?: string;
    }[];
    return Object.fromEntries(
      items.filter((a) => a.node.startsWith("node-")).map((a) => [a.node, a.connected ? a.connectedAt : undefined]),
    );
  };

  const unixRaw = async (from: Pod | Node, bytes: Buffer, waitMs: number) => {
    const args: UnixRawArgs = { socket: join(mesh.dir, n1.name, "agent.sock"), waitMs };
    const r = await world.exec(from, process.execPath, [UNIX_RAW, JSON.stringify(args)], {
      input: bytes.toString("hex"),
      timeoutMs: waitMs + 10_000,
    });
    if (r.code !== 0) throw new Error(`unix-raw failed (${r.code}): ${r.stderr}`);
    const reply = JSON.parse(r.stdout) as UnixRawReply;
    return {
      data: Buffer.from(reply.hex, "hex"),
      closed: reply.closed,
      ...(reply.error ? { error: reply.error } : {}),
    };
  };

  const enrolledPods = async (): Promise<string> => {
    const x = await unixRaw(n1, Buffer.from("GET /v1/pods HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"), 5000);
    const text = x.data.toString("utf8");
    const pods = JSON.parse(text.slice(text.indexOf("\r\n\r\n") + 4)).pods as { namespace: string; name: string }[];
    return pods
      .map((p) => `${p.namespace}/${p.name}`)
      .sort()
      .join(",");
  };

  beforeAll(async () => {
    world = await World.create({ nodes: 2 });
    mesh = new Mesh(world, {
      tunnelKey: true,
      agentArgs: ["--http-headers-timeout-ms", "1000", "--drain-timeout-s", "2"],
    });
    keys.mesh = mesh.tunnelKey!;
    const [node1, node2] = world.nodes as [Node, Node];
    n1 = node1;
    await mesh.startController();
    client = await world.addPod(node1, "client");
    bystander = await world.addPod(node1, "bystander");
    stranger = await world.addPod(node1, "stranger"); // not meshed: reaches pods' ports directly
    server = await world.addPod(node2, "server");
    const [a1, a2] = await Promise.all([mesh.startAgent(node1), mesh.startAgent(node2)]);
    const app = await mesh.startWorkload(server, [
      "--http-port",
      "8080",
      "--grpc-port",
      "9090",
      "--tcp-echo-port",
      "0",
    ]);
    await mesh.enroll(client, ["--label", "app=client"]);
    await mesh.enroll(bystander, ["--label", "app=bystander"]);
    await mesh.enroll(server, ["--label", "app=server"]);
    const service = {
      apiVersion: "nodemesh.io/v1alpha1",
      kind: "Service",
      metadata: { name: "server", namespace: "default" },
      spec: {
        vip: VIP,
        ports: [
          { name: "http", port: 80, targetPort: 8080, protocol: "http" },
          { name: "h2", port: 81, targetPort: 8080, protocol: "http2" },
          { name: "detect", port: 82, targetPort: 8080 },
          { name: "grpc", port: 9090, targetPort: 9090, protocol: "grpc" },
        ],
        selector: { app: "server" },
      },
    };
    const created = await httpFrom(
      mesh.controller!.place.netnsPath,
      `http://127.0.0.1:${REST_PORT}/apis/nodemesh.io/v1alpha1/namespaces/default/services`,
      { method: "POST", body: JSON.stringify(service) },
    );
    expect(created.status, created.body).toBe(201);
    await eventually("the Service served through the mesh", 20_000, async () => {
      const r = await httpFrom(bystander.netnsPath, `http://${VIP}/ready`).catch(() => undefined);
      return r?.status === 200 ? true : undefined;
    });
    steadyH2 = http2SessionFrom(bystander.netnsPath, VIP, 81);
    steadyH2.on("error", () => {});
    expect((await http2Get(steadyH2, "/steady")).status).toBe(200);
    steadyH1 = await connectFrom(bystander.netnsPath, VIP, 80);
    steadyH1.on("error", () => {});
    expect(await keepAliveGet(steadyH1)).toBe(200);
    procs = [
      { name: "controller", proc: mesh.controller!.proc, pid: mesh.controller!.proc.pid },
      { name: "agent node-1", proc: a1.proc, pid: a1.proc.pid },
      { name: "agent node-2", proc: a2.proc, pid: a2.proc.pid },
      { name: "app", proc: app, pid: app.pid },
    ];
    token = readFileSync(mesh.agentTokenFile, "utf8").trim();
    ca = readFileSync(mesh.controllerCaFile);
    connectedAt = await agentsConnectedAt();
    expect(Object.values(connectedAt).filter(Boolean)).toHaveLength(2);
    enrolledOnNode1 = await enrolledPods();
    const keyFile = join(mesh.dir, "self-signed.key");
    const certFile = join(mesh.dir, "self-signed.pem");
    execFileSync(
      "openssl",
      [
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-subj",
        "/CN=spiffe-impostor",
        "-addext",
        "subjectAltName=URI:spiffe://cluster.local/ns/default/sa/default",
        "-days",
        "1",
        "-keyout",
        keyFile,
        "-out",
        certFile,
      ],
      { stdio: "ignore" },
    );
    selfSigned = { key: readFileSync(keyFile, "utf8"), cert: readFileSync(certFile, "utf8") };
  }, 120_000);

  afterAll(async () => {
    if (results.length > 0) {
      const lines = results.map(
        (r) =>
          `${r.passed ? "ok  " : "FAIL"} ${r.knownBug ? "[known bug] " : ""}${r.family} / ${r.name}: ${r.tokens.join(" ")} (${r.ms.toFixed(0)} ms)${r.failure ? ` -- ${r.failure}` : ""}${process.env["CORPUS_VERBOSE"] && r.text ? ` | ${r.text}` : ""}`,
      );
      const byFamily = Object.entries(Object.groupBy(results, (r) => r.family) as Record<string, Result[]>).map(
        ([f, rs]) => `${f} ${rs.length} (${(rs.reduce((s, r) => s + r.ms, 0) / 1000).toFixed(1)} s)`,
      );
      console.log(`bad-input corpus: ${results.length} cases; ${byFamily.join(", ")}\n${lines.join("\n")}`);
    }
    steadyH2?.destroy();
    steadyH1?.destroy();
    await mesh?.destroy();
  });

  /** Lines the mesh's processes logged at error level or above (a failed worker, a handler that threw). */
  const errorLines = (): string[] =>
    procs.filter((p) => p.name !== "app").flatMap((p) => p.proc.lines.filter((l) => /"level":(50|60)/.test(l)));

  /**
   * Everyone keeps being served: same processes, nothing logged at error level, the bystander's
   * connections opened before the first case (HTTP/1.1 keep-alive, HTTP/2) and a new request of
   * its, across the nodes.
   */
  async function expectEveryoneServed(errorsBefore: ReadonlySet<string>): Promise<void> {
    for (const p of procs) {
      expect(p.proc.exit, `${p.name} exited`).toBeUndefined();
      expect(p.proc.pid, `${p.name} was replaced`).toBe(p.pid);
    }
    expect(
      errorLines().filter((l) => !errorsBefore.has(l)),
      "errors logged by the mesh",
    ).toEqual([]);
    const reply = await httpFrom(bystander.netnsPath, `http://${VIP}/legit`, { timeoutMs: 5000 });
    expect(reply.status, `the bystander's request: ${reply.body}`).toBe(200);
    expect(JSON.parse(reply.body).pod).toBe("server");
    expect((await http2Get(steadyH2, "/steady")).status, "the bystander's HTTP/2 connection").toBe(200);
    expect(await keepAliveGet(steadyH1), "the bystander's keep-alive connection").toBe(200);
  }

  /** Runs one case: its driver, then every check the corpus promises. */
  function runCase(
    family: string,
    c: { name: string; knownBug?: string; expect: Expect },
    drive: () => Promise<Outcome>,
    after?: () => Promise<void>,
  ) {
    const test = c.knownBug ? it.fails : it;
    test(c.name, async () => {
      const before = await served();
      const errorsBefore = new Set(errorLines());
      const t0 = performance.now();
      let outcome: Outcome = { tokens: ["driver-failed"], text: "" };
      const result: Result = {
        family,
        name: c.name,
        tokens: outcome.tokens,
        ms: 0,
        passed: false,
        ...(c.knownBug ? { knownBug: c.knownBug } : {}),
      };
      results.push(result);
      try {
        outcome = await drive();
      } finally {
        result.tokens = outcome.tokens;
        result.text = outcome.text.slice(0, 200).replace(/\s+/g, " ");
        result.ms = performance.now() - t0;
      }
      try {
        await check(c.expect, before, errorsBefore, outcome, after);
      } catch (err) {
        result.failure = (err as Error).message.split("\n")[0];
        throw err;
      }
      result.passed = true;
    });
  }

  async function check(
    exp: Expect,
    before: Served,
    errorsBefore: ReadonlySet<string>,
    outcome: Outcome,
    after?: () => Promise<void>,
  ): Promise<void> {
    const now = await served();
    await expectEveryoneServed(errorsBefore);
    await after?.();
    const smuggled = now.recent.filter((r) => /smuggled/i.test(`${r.path} ${JSON.stringify(r.headers)}`));
    expect(smuggled, "requests the app should never have seen").toEqual([]);
    const appServed = now.http + now.grpc - before.http - before.grpc;
    if (exp.appSeesAtMost !== undefined) {
      expect(appServed, "requests the app served").toBeLessThanOrEqual(exp.appSeesAtMost);
    } else expect(appServed, "requests the app served").toBe(exp.appSees ?? 0);
    const shown = `got: ${outcome.tokens.join(" ")} | ${outcome.text.slice(0, 300)}`;
    expect(outcomeMatches(exp.outcome, outcome.tokens), shown).toBe(true);
    if (exp.message !== undefined) expect(outcome.text, shown).toContain(exp.message);
    if (exp.appSaw) {
      const last = now.recent.at(-1);
      expect(last, "the app's last request").toBeDefined();
      if (exp.appSaw.path !== undefined) expect(last!.path, "the path the app read").toBe(exp.appSaw.path);
      for (const [name, want] of Object.entries(exp.appSaw.headers ?? {})) {
        const value = last!.headers[name];
        if (want === null) expect(value, `header ${name} at the app`).toBeUndefined();
        else expect(String(value), `header ${name} at the app`).toMatch(new RegExp(want));
      }
    }
  }

  describe(`http1: ${corpus.http1.description}`, () => {
    for (const c of corpus.http1.cases) {
      runCase("http1", c, async () => {
        const ports = {
          outbound: 80,
          "outbound-detect": 82,
          "outbound-h2port": 81,
          "outbound-grpcport": 9090,
          inbound: 8080,
        };
        const [from, ip] = c.target === "inbound" ? [stranger, server.ip] : [client, VIP];
        const port = ports[c.target];
        const x = await sendHttp1(from.netnsPath, ip, port, c, vars());
        return { tokens: http1Tokens(x), text: x.data.toString("latin1") };
      });
    }
  });

  const h2Targets = {
    "outbound-h2": () => [client, VIP, 81],
    "outbound-grpc": () => [client, VIP, 9090],
    "outbound-http": () => [client, VIP, 80],
    "outbound-detect": () => [client, VIP, 82],
    "inbound-h2": () => [stranger, server.ip, 8080],
    "inbound-grpc": () => [stranger, server.ip, 9090],
  } as const;
  for (const family of ["h2", "grpc"] as const) {
    describe(`${family}: ${corpus[family].description}`, () => {
      for (const c of corpus[family].cases) {
        runCase(family, c, async () => {
          const [from, ip, port] = h2Targets[c.target]() as [Pod, string, number];
          return sendH2(from.netnsPath, ip, port, c, vars());
        });
      }
    });
  }

  describe(`tunnel: ${corpus.tunnel.description}`, () => {
    for (const c of corpus.tunnel.cases) {
      runCase("tunnel", c, () => sendTunnel(stranger.netnsPath, server.ip, TUNNEL_PORT, c, vars(), keys, selfSigned));
    }
  });

  /**
   * Node-1's pods are the ones enrolled before the first case. A pod a case enrolled is removed
   * (as the node, privileged) before the case fails, so that the cases after it start as before.
   */
  const expectPodsUnchanged = async (): Promise<void> => {
    const now = await enrolledPods();
    if (now === enrolledOnNode1) return;
    const before = new Set(enrolledOnNode1.split(","));
    for (const pod of now.split(",").filter((p) => !before.has(p))) {
      await unixRaw(n1, Buffer.from(`DELETE /v1/pods/${pod} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n`), 5000);
    }
    expect(now, "the pods enrolled on node-1").toBe(enrolledOnNode1);
  };

  describe(`enrollment: ${corpus.enrollment.description}`, () => {
    const callers = (c: EnrollmentCase) => ({ node: n1, client, stranger })[c.from];
    for (const c of corpus.enrollment.cases) {
      runCase(
        "enrollment",
        c,
        async () => jsonAnswerTokens(await unixRaw(callers(c), enrollmentBytes(c, vars()), c.waitMs ?? 3000)),
        expectPodsUnchanged,
      );
    }
  });

  const controllerUntouched = async () => expect(await agentsConnectedAt(), "the agents' streams").toEqual(connectedAt);

  describe(`rest: ${corpus.rest.description}`, () => {
    const restCase = async (c: RestCase): Promise<Outcome> => {
      const place = mesh.controller!.place;
      if (c.cli) {
        const r = await mesh.cli(c.cli, c.stdin === undefined ? undefined : expand(c.stdin, vars()));
        return { tokens: [`exit:${r.code}`], text: `${r.stderr}${r.stdout}` };
      }
      const bytes = restBytes(c, vars());
      if (c.flood) return flood(place.netnsPath, "127.0.0.1", REST_PORT, bytes, c.flood, c.waitMs ?? 3000);
      return jsonAnswerTokens(
        await exchange(place.netnsPath, "127.0.0.1", REST_PORT, bytes, { waitMs: c.waitMs ?? 3000 }),
      );
    };
    for (const c of corpus.rest.cases) runCase("rest", c, () => restCase(c), controllerUntouched);
  });

  describe(`controller-grpc: ${corpus["controller-grpc"].description}`, () => {
    const grpcCase = async (c: ControllerGrpcCase): Promise<Outcome> => {
      const ip = mesh.controller!.place.ip;
      const v = vars();
      if (c.frames) return controllerFrames(n1.netnsPath, ip, GRPC_PORT, ca, c, v);
      const auth = c.auth ?? "token";
      const secret = c.secret ?? "random";
      const headers: Record<string, string> = {
        ":path": c.path ?? "/nodemesh.agent.v1.AgentService/Connect",
        "content-type": c.contentType ?? "application/grpc",
        ...(auth === "none"
          ? {}
          : { authorization: `Bearer ${auth === "token" ? token : randomBytes(24).toString("base64url")}` }),
        ...(secret === "none"
          ? {}
          : { "nodemesh-node-secret": secret === "random" ? randomBytes(32).toString("base64url") : "short!" }),
        ...Object.fromEntries((c.extraHeaders ?? []).map(([n, val]) => [n, expand(val, v)])),
      };
      const stateDir = mesh.agents.get(n1)!.stateDir;
      const certificate = c.clientCertificate
        ? {
            cert: readFileSync(join(stateDir, "node-cert.pem"), "utf8"),
            key: readFileSync(join(stateDir, "node-key.pem"), "utf8"),
          }
        : undefined;
      return controllerCall(
        n1.netnsPath,
        ip,
        GRPC_PORT,
        ca,
        headers,
        controllerBody(c, v),
        c.keepOpen ?? false,
        c.waitMs ?? 3000,
        certificate,
      );
    };
    for (const c of corpus["controller-grpc"].cases)
      runCase("controller-grpc", c, () => grpcCase(c), controllerUntouched);
  });
});
