// `nodemesh check` and `nodemesh explain` as an operator runs them: the CLI inside a node's
// namespace (so the agent's admin port is on its loopback, as after a port-forward on
// Kubernetes), the controller reached over the underlay with a token.
//
//   node-1: client, reviews-1 (v1)        node-2: reviews-2 (v2), reviews-3 (v1)
//   Services: reviews 10.96.0.10 (all three), reviews-v1 10.96.0.11, reviews-v2 10.96.0.12; http 80 → 8080.
//
// Each verdict asserted is one the situation calls for: a healthy pod, a pod whose nat table was
// flushed, a route to a Service that does not exist, an agent killed; and explanations of a
// header match (with and without the header), a weighted split and a passthrough address.

import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import type { DetailedExplanation } from "../../agent/dataplane/explain.ts";
import type { Finding } from "../../api/diagnosis.ts";
import type { Node, Place, Pod, RunResult } from "../world/world.ts";
import { World } from "../world/world.ts";
import { Mesh } from "./mesh.ts";
import { httpFrom } from "./netns-client.ts";

const CLI = new URL("../../bin/nodemesh.ts", import.meta.url).pathname;
const VIP = { reviews: "10.96.0.10", v1: "10.96.0.11", v2: "10.96.0.12" } as const;

const service = (name: string, vip: string, selector: string) => `apiVersion: nodemesh.io/v1alpha1
kind: Service
metadata: { name: ${name}, namespace: default }
spec:
  vip: ${vip}
  ports: [{ name: http, port: 80, targetPort: 8080, protocol: http }]
  selector: ${selector}
`;
const SERVICES = [
  service("reviews", VIP.reviews, "{ app: reviews }"),
  service("reviews-v1", VIP.v1, "{ app: reviews, version: v1 }"),
  service("reviews-v2", VIP.v2, "{ app: reviews, version: v2 }"),
].join("---\n");

const route = (name: string, rules: string) => `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: ${name}, namespace: default }
spec:
  parentRefs: [{ name: reviews, port: 80 }]
  rules:
${rules}`;

describe.skipIf(process.getuid?.() !== 0)("nodemesh check and explain in a two-node world", () => {
  let world: World;
  let mesh: Mesh;
  let n1: Node;
  let n2: Node;
  let client: Pod;
  let reviews: Pod[];
  let env: Record<string, string>;

  /** The CLI in `place` (a node: its agent's admin port is on that loopback). */
  const nodemesh = (place: Place, args: string[], input?: string): Promise<RunResult> =>
    world.exec(place, process.execPath, [CLI, ...args], { env, timeoutMs: 30_000, ...(input ? { input } : {}) });
  const checkJson = async (place: Place, ...args: string[]) => {
    const r = await nodemesh(place, ["check", ...args, "-o", "json"]);
    if (!r.stdout.trim().startsWith("[")) throw new Error(`check failed (${r.code}): ${r.stderr}${r.stdout}`);
    return { code: r.code, findings: JSON.parse(r.stdout) as Finding[] };
  };
  const explainJson = async (...args: string[]): Promise<DetailedExplanation> => {
    const r = await nodemesh(n1, ["explain", "--from", "client", ...args, "-o", "json"]);
    if (r.code !== 0) throw new Error(`explain failed (${r.code}): ${r.stderr}${r.stdout}`);
    return JSON.parse(r.stdout);
  };
  const find = (findings: Finding[], check: string, subject: string) =>
    findings.filter((f) => f.check === check && f.subject === subject);

  /** Applies YAML and waits until every connected agent applied the controller's newest version. */
  const apply = async (yaml: string, verb: "apply" | "delete" = "apply"): Promise<void> => {
    // delete: "KIND NAME" (KIND defaults to httproute)
    const [kind, name] = yaml.includes(" ") ? yaml.split(" ") : ["httproute", yaml];
    const r =
      verb === "apply" ? await nodemesh(n1, ["apply", "-f", "-"], yaml) : await nodemesh(n1, ["delete", kind!, name!]);
    if (r.code !== 0) throw new Error(`nodemesh ${verb} failed (${r.code}): ${r.stderr}${r.stdout}`);
    await sleep(100); // the controller folds writes within 20 ms into one table
    await vi.waitFor(
      async () => {
        const s = await nodemesh(n1, ["status", "-o", "json"]);
        const agents = JSON.parse(s.stdout) as {
          connected: boolean;
          appliedVersion?: string;
          currentVersion: string;
        }[];
        if (!agents.filter((a) => a.connected).every((a) => a.appliedVersion === a.currentVersion)) {
          throw new Error(`agents not in sync: ${s.stdout}`);
        }
      },
      { timeout: 15_000, interval: 100 },
    );
  };

  beforeAll(async () => {
    world = await World.create({ nodes: 2 });
    mesh = new Mesh(world);
    [n1, n2] = world.nodes as [Node, Node];
    // The REST API on the underlay with a token, so the CLI in a node's namespace reaches it.
    const token = randomBytes(18).toString("base64url");
    const tokens = join(mesh.dir, "rest-tokens");
    writeFileSync(tokens, `${token} write operator\n`, { mode: 0o600 });
    await mesh.startController(["--address", "0.0.0.0", "--tokens", tokens]);
    env = { NODEMESH_SERVER: `http://${mesh.controller!.place.ip}:8080`, NODEMESH_TOKEN: token };
    await Promise.all([mesh.startAgent(n1), mesh.startAgent(n2)]);
    client = await world.addPod(n1, "client");
    reviews = [
      await world.addPod(n1, "reviews-1"),
      await world.addPod(n2, "reviews-2"),
      await world.addPod(n2, "reviews-3"),
    ];
    const versions = ["v1", "v2", "v1"];
    await Promise.all(
      reviews.map((p, i) =>
        mesh.startWorkload(p, [
          "--version",
          versions[i]!,
          "--http-port",
          "8080",
          "--grpc-port",
          "0",
          "--tcp-echo-port",
          "0",
        ]),
      ),
    );
    await mesh.enroll(client, ["--label", "app=client"]);
    for (const [i, p] of reviews.entries()) {
      await mesh.enroll(p, ["--label", "app=reviews", "--label", `version=${versions[i]}`]);
    }
    await apply(SERVICES);
    // The endpoints come from the agents' pod reports: wait until node-1's agent has all three.
    await vi.waitFor(
      async () => {
        const e = await explainJson("GET", `http://${VIP.reviews}/`);
        expect(e.endpoints?.length).toBe(3);
      },
      { timeout: 20_000, interval: 500 },
    );
  }, 120_000);

  afterAll(async () => {
    await mesh?.destroy();
  });

  it("check on a healthy pod: every finding ok, exit 0", async () => {
    const { code, findings } = await checkJson(n1, "client");
    expect(findings.filter((f) => f.verdict !== "ok")).toEqual([]);
    expect(code).toBe(0);
    expect(find(findings, "controller", `controller ${env.NODEMESH_SERVER}`)[0]?.message).toBe("healthy and ready");
    expect(find(findings, "agent", "node node-1")[0]?.message).toMatch(
      /^connected to the controller, on its latest configuration /,
    );
    expect(find(findings, "enrolled", "pod default/client")[0]?.message).toContain(`as ${client.ip}`);
    expect(find(findings, "rules", "pod default/client")[0]?.message).toMatch(
      /^NODEMESH_OUTPUT first in OUTPUT, the agent's connections in conntrack zone 1337, NODEMESH_INBOUND first in PREROUTING, in nodemesh init's order/,
    );
    expect(find(findings, "listeners", "pod default/client")[0]?.message).toContain("15001, 15006, 15008 listen");
    expect(find(findings, "objects", "namespace default")[0]?.message).toMatch(/^3 objects: every reference resolves/);
    // The table form: one line per finding and the tally.
    const table = await nodemesh(n1, ["check", "default/client"]);
    expect(table.code).toBe(0);
    expect(table.stdout).toMatch(/^ok +rules +pod default\/client: NODEMESH_OUTPUT first/m);
    expect(table.stdout).toContain("\n0 error(s), 0 warning(s), ");
    console.log(`$ nodemesh check default/client\n${table.stdout}`);
  });

  it("the agent's /debug/check and /debug/explain answer only its node's loopback", async () => {
    const stranger = await world.addPod(n1, "stranger"); // not enrolled: nothing intercepts it
    const admin = (path: string) => `http://${n1.gatewayIp}:15020${path}`;
    const check = await httpFrom(stranger.netnsPath, admin("/debug/check?pod=default/client"));
    expect(check.status).toBe(403);
    expect(check.body).not.toContain(client.ip);
    const body = JSON.stringify({ pod: "default/client", method: "GET", url: `http://${VIP.reviews}/`, headers: {} });
    expect((await httpFrom(stranger.netnsPath, admin("/debug/explain"), { method: "POST", body })).status).toBe(403);
  });

  it("check on a pod whose nat table was flushed: an error with the init command as fix, exit 1", async () => {
    const pod = reviews[0]!;
    const flushed = await world.exec(pod, "iptables", ["-t", "nat", "-F"]);
    expect(flushed.code).toBe(0);
    try {
      const { code, findings } = await checkJson(n1, pod.name);
      expect(code).toBe(1);
      const [rules] = find(findings, "rules", `pod default/${pod.name}`);
      expect(rules).toMatchObject({ verdict: "error" });
      expect(rules!.message).toContain(
        'the pod\'s rules differ from what nodemesh init installs (missing or moved: -A PREROUTING -p tcp -m comment --comment "nodemesh: intercept inbound tcp" -j NODEMESH_INBOUND | -A OUTPUT',
      );
      expect(rules!.fix).toContain(`nodemesh init --pod-name ${pod.name} --pod-namespace default`);
      // Chains gone too: no rules at all.
      await world.exec(pod, "iptables", ["-t", "nat", "-X"]);
      const bare = await checkJson(n1, pod.name);
      expect(find(bare.findings, "rules", `pod default/${pod.name}`)[0]?.message).toContain(
        "no interception rules in the pod's nat table (no NODEMESH_OUTPUT, no NODEMESH_INBOUND)",
      );
      // The rest of what was checked is fine: the listeners stay, the pod is enrolled.
      expect(find(bare.findings, "listeners", `pod default/${pod.name}`)[0]?.verdict).toBe("ok");
      console.log(
        `$ nodemesh check ${pod.name}   # nat table flushed\n${(await nodemesh(n1, ["check", pod.name])).stdout}`,
      );

      // Our rules all there, but another tool's rule first in OUTPUT: the order is wrong.
      await mesh.enroll(pod, ["--label", "app=reviews", "--label", "version=v1"]);
      expect((await checkJson(n1, pod.name)).code).toBe(0);
      await world.exec(pod, "iptables", [
        "-t",
        "nat",
        "-I",
        "OUTPUT",
        "1",
        "-p",
        "tcp",
        "--dport",
        "9999",
        "-j",
        "RETURN",
      ]);
      const [order] = find((await checkJson(n1, pod.name)).findings, "rules", `pod default/${pod.name}`);
      expect(order).toMatchObject({ verdict: "error" });
      expect(order!.message).toContain(
        'out of order: "-A OUTPUT -p tcp -m comment --comment "nodemesh: intercept outbound tcp" -j NODEMESH_OUTPUT" belongs where the pod has "-A OUTPUT -p tcp -m tcp --dport 9999 -j RETURN"',
      );
    } finally {
      await mesh.enroll(pod, ["--label", "app=reviews", "--label", "version=v1"]);
    }
    expect((await checkJson(n1, pod.name)).code).toBe(0);
  });

  it("check names a route whose backend does not exist, and the field to fix", async () => {
    await apply(route("broken", "    - backendRefs: [{ name: reviews-v9 }]\n"));
    try {
      const { code, findings } = await checkJson(n1, "-n", "default");
      expect(code).toBe(1);
      const [broken] = find(findings, "objects", "HTTPRoute default/broken").filter((f) => f.verdict === "error");
      expect(broken!.message).toBe(
        "ResolvedRefs False (BackendNotFound): no such Service: default/reviews-v9 (its share of requests gets a 500)",
      );
      expect(broken!.fix).toContain("spec.rules[].backendRefs");
      console.log(
        `$ nodemesh check -n default   # a route to reviews-v9\n${(await nodemesh(n1, ["check", "-n", "default"])).stdout}`,
      );
      // -n checks every pod of the namespace its node's agent can be asked about; the others say where to ask.
      expect(find(findings, "rules", "pod default/client")[0]?.verdict).toBe("ok");
      expect(find(findings, "rules", "pod default/reviews-2")[0]).toMatchObject({ verdict: "warning" });
      expect(find(findings, "rules", "pod default/reviews-2")[0]!.message).toContain("the pod is on node node-2");
    } finally {
      await apply("broken", "delete");
    }
  });

  it("explain a header match: end-user jason to v2; without the header, why that rule did not match", async () => {
    await apply(
      route(
        "reviews-jason",
        `    - matches: [{ headers: [{ name: end-user, value: jason }] }]
      backendRefs: [{ name: reviews-v2 }]
    - backendRefs: [{ name: reviews-v1 }]
`,
      ) +
        `---
apiVersion: nodemesh.io/v1alpha1
kind: TrafficPolicy
metadata: { name: reviews, namespace: default }
spec:
  targetRefs: [{ name: reviews }]
  timeouts: { request: 2s }
  retries: { attempts: 3 }
`,
    );
    try {
      const jason = await explainJson("GET", `http://${VIP.reviews}/v2`, "-H", "end-user: jason");
      expect(jason.outcome).toBe("service");
      expect(jason.interception).toEqual({
        intercepted: true,
        reason: `NODEMESH_OUTPUT redirects ${VIP.reviews}:80 to the agent's :15001`,
      });
      expect(jason.service).toEqual({ id: "reviews.default", vipPort: `${VIP.reviews}:80`, protocol: "http" });
      expect(jason.rules).toEqual([{ rule: "default/reviews-jason#0", match: 0, matched: true, failed: [] }]);
      expect(jason.backends).toEqual([{ service: "reviews-v2.default:80", weight: 1, share: 1, assumed: true }]);
      expect(jason.endpoints).toEqual([
        { address: `${reviews[1]!.ip}:8080`, pod: "default/reviews-2", node: "node-2", ejected: false, next: true },
      ]);
      expect(jason.next).toBe(`${reviews[1]!.ip}:8080`);
      // The parent Service's policy: its timeouts and retries apply to this request.
      expect(jason.policy).toContain("timeouts: request 2000 ms, per try none, connect none");
      expect(jason.policy?.find((l) => l.startsWith("retries:"))).toMatch(
        /^retries: up to 3 attempts on connect-failure,reset,gateway-error,unavailable, backoff 25\.\.250 ms, budget \d+% \(min \d+\)$/,
      );

      const other = await explainJson("GET", `http://${VIP.reviews}/v2`);
      expect(other.rules).toEqual([
        {
          rule: "default/reviews-jason#0",
          match: 0,
          matched: false,
          failed: ["header end-user = jason (request: none)"],
        },
        { rule: "default/reviews-jason#1", match: 0, matched: true, failed: [] },
      ]);
      expect(other.matchedRule).toBe("default/reviews-jason#1");
      expect(other.backends).toEqual([{ service: "reviews-v1.default:80", weight: 1, share: 1, assumed: true }]);
      expect(other.endpoints?.map((e) => `${e.pod}@${e.node}`).sort()).toEqual([
        "default/reviews-1@node-1",
        "default/reviews-3@node-2",
      ]);
      const bob = await explainJson("GET", `http://${VIP.reviews}/v2`, "-H", "End-User: bob");
      expect(bob.rules?.[0]?.failed).toEqual(['header end-user = jason (request: "bob")']);

      // The table form names the step and the failed condition.
      const text = await nodemesh(n1, ["explain", "--from", "client", "GET", `http://${VIP.reviews}/v2`]);
      expect(text.stdout).toContain(
        "default/reviews-jason#0 match 0: did not match: header end-user = jason (request: none)",
      );
      console.log(`$ nodemesh explain --from client GET http://${VIP.reviews}/v2\n${text.stdout}`);
      const withJason = ["explain", "--from", "client", "GET", `http://${VIP.reviews}/v2`, "-H", "end-user: jason"];
      console.log(
        `$ nodemesh explain --from client GET http://${VIP.reviews}/v2 -H 'end-user: jason'\n${(await nodemesh(n1, withJason)).stdout}`,
      );
    } finally {
      await apply("reviews-jason", "delete");
      await apply("trafficpolicy reviews", "delete");
    }
  });

  it("explain a weighted split: every weight, and the backend followed", async () => {
    await apply(
      route("split", "    - backendRefs: [{ name: reviews-v1, weight: 90 }, { name: reviews-v2, weight: 10 }]\n"),
    );
    try {
      const e = await explainJson("GET", `http://${VIP.reviews}/`);
      expect(e.matchedRule).toBe("default/split#0");
      expect(e.backends).toEqual([
        { service: "reviews-v1.default:80", weight: 90, share: 0.9, assumed: true },
        { service: "reviews-v2.default:80", weight: 10, share: 0.1, assumed: false },
      ]);
      expect(e.steps.find((s) => s.step === "backend")?.summary).toBe(
        "one of 2 by weight; this explanation follows reviews-v1.default:80 (the heaviest)",
      );
      expect(e.endpoints?.map((x) => x.pod).sort()).toEqual(["default/reviews-1", "default/reviews-3"]);
      // Round robin: the next pick is one of them, and explaining takes no pick.
      const next = e.endpoints?.filter((x) => x.next) ?? [];
      expect(next).toHaveLength(1);
      expect((await explainJson("GET", `http://${VIP.reviews}/`)).next).toBe(e.next);
      const text = await nodemesh(n1, ["explain", "--from", "client", "GET", `http://${VIP.reviews}/`]);
      console.log(`$ nodemesh explain --from client GET http://${VIP.reviews}/\n${text.stdout}`);
    } finally {
      await apply("split", "delete");
    }
  });

  it("explain an address no Service owns: passthrough; loopback and an excluded port: not intercepted", async () => {
    const target = reviews[1]!; // a pod address: no Service's VIP
    const e = await explainJson("GET", `http://${target.ip}:8080/`);
    expect(e.outcome).toBe("passthrough");
    expect(e.steps.find((s) => s.step === "service")?.summary).toBe(
      `${target.ip}:8080 is no Service's address: passthrough, connected as is to ${target.ip}:8080 (destination_service="passthrough"); no route or policy applies`,
    );
    expect(e.service).toBeUndefined();
    const text = await nodemesh(n1, ["explain", "--from", "client", "GET", `http://${target.ip}:8080/`]);
    console.log(`$ nodemesh explain --from client GET http://${target.ip}:8080/\n${text.stdout}`);
    const loopback = await explainJson("GET", "http://127.0.0.1:8080/");
    expect(loopback).toMatchObject({
      outcome: "not intercepted",
      interception: { intercepted: false, reason: "not intercepted: 127.0.0.1 is loopback (RETURN)" },
    });
    // The client's rules reinstalled with an excluded outbound port: read back from the rules.
    await mesh.enroll(client, ["--label", "app=client", "--exclude-outbound-ports", "9000"]);
    try {
      const excluded = await explainJson("GET", `http://${VIP.reviews}:9000/`);
      expect(excluded).toMatchObject({
        outcome: "not intercepted",
        interception: {
          intercepted: false,
          reason: "not intercepted: port 9000 is an excluded outbound port (RETURN)",
        },
      });
      expect(excluded.steps).toHaveLength(1);
      const { findings } = await checkJson(n1, "client");
      expect(find(findings, "rules", "pod default/client")[0]?.message).toContain(
        "(excluded: outbound ports 9000, outbound CIDRs none, inbound ports none)",
      );
    } finally {
      await mesh.enroll(client, ["--label", "app=client"]);
    }
  });

  it("check on a pod whose agent is down: the controller sees it gone, its admin port does not answer", async () => {
    await mesh.stopAgent(n2, "SIGKILL");
    await vi.waitFor(
      async () => {
        const s = await nodemesh(n1, ["status", "-o", "json"]);
        expect(
          (JSON.parse(s.stdout) as { node: string; connected: boolean }[]).find((a) => a.node === "node-2")?.connected,
        ).toBe(false);
      },
      { timeout: 15_000, interval: 200 },
    );
    const { code, findings } = await checkJson(n2, "reviews-2");
    expect(code).toBe(1);
    expect(find(findings, "agent", "node node-2")[0]).toMatchObject({ verdict: "error" });
    expect(find(findings, "agent", "node node-2")[0]!.message).toMatch(
      /^the agent is not connected to the controller \(since /,
    );
    const [admin] = find(findings, "agent", "agent http://127.0.0.1:15020");
    expect(admin).toMatchObject({ verdict: "error" });
    expect(admin!.message).toContain("the agent's admin port does not answer (connect ECONNREFUSED 127.0.0.1:15020)");
    expect(find(findings, "rules", "pod default/reviews-2")[0]).toMatchObject({
      verdict: "error",
      message: "rules and listeners not checked: node node-2's agent did not answer",
    });
    console.log(
      `$ nodemesh check reviews-2   # node-2's agent killed\n${(await nodemesh(n2, ["check", "reviews-2"])).stdout}`,
    );
    // The controller itself is fine.
    expect(find(findings, "controller", `controller ${env.NODEMESH_SERVER}`)[0]?.verdict).toBe("ok");
  });
});
