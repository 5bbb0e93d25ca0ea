// The Kubernetes install, load-bearing: the manifests rendered by `kubectl kustomize` are what runs.
// - The controller runs the Deployment's command, args and env (plus --kubeconfig: the stand-in
//   API server speaks plain HTTP, so it cannot be reached the in-cluster way) in the world's
//   controller namespace, against the stand-in API server (test/kubernetes/api-server.ts).
// - Each node's agent runs the DaemonSet's command, args and env in the node's namespace.
// - Pods of a Deployment go through the webhook over HTTPS, trusted by the caBundle the controller
//   wrote into the MutatingWebhookConfiguration; then kubelet is played: the pod's namespace, the
//   injected init container's exact command, args and env with its volume mounted, then the app.
// Traffic from a pod to a Service's ClusterIP is intercepted and balanced over pods on both nodes;
// an HTTPRoute created in the stand-in splits it and its status says every agent applied it; a
// pod of a namespace without the annotation gets no init container and no interception.
// What is substituted, and only this: the image (node + built CLI → this machine's node + the
// source CLI), volume paths (→ temporary directories), the controller Service's DNS name (→ its
// address in the world: there is no cluster DNS here), the API server's address.

import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { bindListenerFd, Netns } from "../../agent/sys/linux.ts";
import { admissionReview, admittedPod, deploymentPod, type PodJson, postToWebhook } from "../kubernetes/admission.ts";
import { FakeApiServer, type KubeObject, RESOURCE_TYPES } from "../kubernetes/api-server.ts";
import { writeKubeConfig } from "../kubernetes/kubeconfig.ts";
import { type Container, mountPaths, runToCompletion, startContainer } from "../kubernetes/kubelet.ts";
import { findManifest, type Manifest, renderManifests } from "../kubernetes/manifests.ts";
import { httpRoute, namespace, service, trafficPolicy } from "../kubernetes/objects.ts";
import { type Controller, type Node, type Pod, type Proc, World } from "../world/world.ts";
import { eventually } from "./eventually.ts";
import { httpFrom } from "./netns-client.ts";

const API_PORT = 6443;
const CONTROLLER_DNS = "nodemesh-controller.nodemesh-system.svc";
const WORKLOAD = new URL("../workload/workload.ts", import.meta.url).pathname;

const secretData = (s: Manifest, key: string) => Buffer.from(s.data[key], "base64").toString("utf8");

describe("the Kubernetes install, end to end", () => {
  const manifests = renderManifests();
  const daemonSet = findManifest(manifests, "DaemonSet", "nodemesh-agent");
  const deployment = findManifest(manifests, "Deployment", "nodemesh-controller");
  const agentContainer: Container = daemonSet.spec.template.spec.containers[0];
  const controllerContainer: Container = deployment.spec.template.spec.containers[0];

  let world: World;
  let api: FakeApiServer;
  let dir: string;
  let controllerPlace: Controller;
  let controller: Proc;
  let webhookCa = "";
  const pods = new Map<string, Pod>();
  const apps: Proc[] = [];
  /** Each node's host directory behind the hostPath /var/run/nodemesh (the enrollment socket). */
  const enrollmentDir = (node: Node) => join(dir, node.name, "var-run-nodemesh");

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "nodemesh-k8s-e2e-"));
    world = await World.create({ nodes: 2 });
    controllerPlace = await world.addController();

    // The API server, inside the controller's namespace at 127.0.0.1:6443, holding the install's
    // objects it serves (the rest — CRDs, RBAC, workloads — are not the stand-in's business).
    api = new FakeApiServer({ bookmarkIntervalMs: 1000 });
    const ns = Netns.open(controllerPlace.netnsPath);
    try {
      await api.start(API_PORT, bindListenerFd(ns, API_PORT));
    } finally {
      ns.close();
    }
    for (const m of manifests) if (RESOURCE_TYPES.some((t) => t.kind === m.kind)) api.apply(m as KubeObject);
    const kubeconfig = writeKubeConfig(join(dir, "kubeconfig"), api.url);

    // The controller pod: its Secret volumes as files, its own Pod object (it reads its image).
    const volumes = (name: string) => {
      const d = join(dir, "controller", name);
      mkdirSync(d, { recursive: true });
      return d;
    };
    const bootstrap = findManifest(manifests, "Secret", "nodemesh-bootstrap-token");
    const restTokens = findManifest(manifests, "Secret", "nodemesh-rest-tokens");
    writeFileSync(join(volumes("bootstrap-token"), "token"), secretData(bootstrap, "token"));
    writeFileSync(join(volumes("rest-tokens"), "tokens"), secretData(restTokens, "tokens"));
    const tunnelKey = findManifest(manifests, "Secret", "nodemesh-tunnel-key");
    writeFileSync(join(volumes("tunnel-key"), "key"), secretData(tunnelKey, "key"));
    const controllerMounts = new Map<string, string>(
      (controllerContainer.volumeMounts ?? []).map((m) => [m.mountPath, volumes(m.name)]),
    );
    const controllerPod = { name: "nodemesh-controller-5d8f9c7b6-abcde", namespace: "nodemesh-system" };
    api.apply({
      apiVersion: "v1",
      kind: "Pod",
      metadata: { ...controllerPod, labels: deployment.spec.template.metadata.labels },
      spec: deployment.spec.template.spec,
    });
    controller = startContainer(
      world,
      controllerPlace,
      controllerContainer,
      controllerPod,
      mountPaths(controllerMounts),
      [`--kubeconfig=${kubeconfig}`],
    );
    await controller.waitForLine(/"msg":"controller ready"/, 30_000);

    // Kubelet's side of the webhook Secret: once the leader issued it, its files appear in the volume.
    const tls = await eventually("the webhook Secret", 15_000, () =>
      api.get("secrets", "nodemesh-system", "nodemesh-webhook-tls"),
    );
    for (const file of ["tls.crt", "tls.key", "ca.crt"])
      writeFileSync(join(controllerMounts.get("/etc/nodemesh/webhook-tls")!, file), secretData(tls as Manifest, file));
    webhookCa = await eventually("the webhook caBundle", 15_000, () => {
      const bundle = api.get("mutatingwebhookconfigurations", undefined, "nodemesh-injector")?.webhooks[0].clientConfig
        .caBundle;
      return bundle ? Buffer.from(bundle, "base64").toString("utf8") : undefined;
    });
    await controller.waitForLine(/webhook (certificate loaded|listening)/, 15_000);

    // Kubelet's side of the CA root ConfigMap the agents mount (--controller-ca-file): the replicas'
    // shared root (the Secret nodemesh-ca) in it, so agents verify the controller's TLS with it.
    const caRoot = await eventually("the CA root ConfigMap", 15_000, () =>
      api.get("configmaps", "nodemesh-system", "nodemesh-ca-root"),
    );
    const caSecret = api.get("secrets", "nodemesh-system", "nodemesh-ca")!;
    expect(caRoot.data["ca.pem"]).toBe(secretData(caSecret as Manifest, "ca.pem"));
    expect(JSON.stringify(caRoot)).not.toContain("PRIVATE KEY");
    writeFileSync(join(volumes("ca-root"), "ca.pem"), caRoot.data["ca.pem"]);

    // The DaemonSet: one agent per node, its hostPath volumes as per-node directories.
    await Promise.all(
      world.nodes.map(async (node) => {
        const paths = new Map<string, string>([
          ["/var/run/nodemesh", enrollmentDir(node)],
          ["/var/lib/nodemesh", join(dir, node.name, "var-lib-nodemesh")],
          ["/etc/nodemesh/bootstrap", join(dir, "controller", "bootstrap-token")],
          ["/etc/nodemesh/tunnel", join(dir, "controller", "tunnel-key")],
          ["/etc/nodemesh/ca", join(dir, "controller", "ca-root")],
        ]);
        for (const d of paths.values()) mkdirSync(d, { recursive: true });
        const toPaths = mountPaths(paths);
        const rewrite = (arg: string) => toPaths(arg).replace(`=${CONTROLLER_DNS}:`, `=${controllerPlace.ip}:`);
        const pod = { name: `nodemesh-agent-${node.name}`, namespace: "nodemesh-system", nodeName: node.name };
        const agent = startContainer(world, node, agentContainer, pod, rewrite);
        await agent.waitForLine(/"msg":"agent ready"/, 30_000);
      }),
    );
    // The nodes' bindings are in the API (the controller has no writable disk), one key per node.
    const bound = await eventually("both nodes bound in the Secret", 15_000, () => {
      const keys = Object.keys(api.get("secrets", "nodemesh-system", "nodemesh-node-bindings")?.data ?? {});
      return keys.length === world.nodes.length ? keys.sort() : undefined;
    });
    expect(bound).toEqual(world.nodes.map((n) => n.name).sort());
  }, 120_000);

  afterAll(async () => {
    await world?.destroy();
    await api?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** A Deployment's pod: admitted through the webhook, created in the API, then started as kubelet would. */
  async function runPod(
    ns: string,
    app: string,
    version: string,
    node: Node,
    suffix: string,
    annotations?: Record<string, string>,
  ): Promise<{ pod: Pod; admitted: PodJson }> {
    const template = deploymentPod({ namespace: ns, app, ...(annotations ? { annotations } : {}) });
    template.metadata.labels.version = version;
    template.metadata.generateName = `${app}-${version}-`;
    const review = await postToWebhook("https://127.0.0.1:9443/inject", webhookCa, admissionReview(template), {
      netnsPath: controllerPlace.netnsPath,
      servername: CONTROLLER_DNS,
    });
    expect(review.status).toBe(200);
    const admitted = await admittedPod(template, review.json?.response);
    const name = `${app}-${version}-${suffix}`;
    admitted.metadata.name = name;
    admitted.spec.nodeName = node.name;
    api.apply(admitted as KubeObject);

    const pod = await world.addPod(node, name);
    pods.set(name, pod);
    // Kubelet reports the sandbox's address before init containers run (the controller checks
    // the agents' reports of their pods against it).
    api.apply({ ...(admitted as KubeObject), status: { phase: "Pending", podIP: pod.ip, podIPs: [{ ip: pod.ip }] } });
    const facts = { name, namespace: ns, ip: pod.ip, nodeName: node.name };
    for (const init of (admitted.spec.initContainers ?? []) as Container[]) {
      const volumes = new Map<string, string>(
        (init.volumeMounts ?? []).map((m) => {
          const volume = admitted.spec.volumes.find((v: PodJson) => v.name === m.name);
          expect(volume.hostPath.path).toBe("/var/run/nodemesh");
          return [m.mountPath, enrollmentDir(node)];
        }),
      );
      const r = await runToCompletion(world, pod, init, facts, volumes);
      if (r.code !== 0)
        throw new Error(`init container ${init.name} of ${name} failed (${r.code}): ${r.stderr}${r.stdout}`);
    }
    const proc = world.spawn(pod, process.execPath, [WORKLOAD, "--name", name, "--version", version], { name });
    await proc.waitForLine(/"event":"ready"/, 15_000);
    apps.push(proc);
    running.push({ admitted, ip: pod.ip, node: node.name });
    publishEndpointSlices(ns);
    return { pod, admitted };
  }

  /** Kubernetes' EndpointSlice controller: one slice per Service, listing its ready pods. */
  const running: { admitted: PodJson; ip: string; node: string }[] = [];
  function publishEndpointSlices(ns: string): void {
    for (const svc of api.list("services").filter((s) => s.metadata.namespace === ns)) {
      const selector: Record<string, string> = svc.spec.selector ?? {};
      const selected = running.filter(
        ({ admitted }) =>
          admitted.metadata.namespace === ns &&
          Object.entries(selector).every(([k, v]) => admitted.metadata.labels?.[k] === v),
      );
      api.apply({
        apiVersion: "discovery.k8s.io/v1",
        kind: "EndpointSlice",
        metadata: {
          name: `${svc.metadata.name}-abcde`,
          namespace: ns,
          labels: {
            "kubernetes.io/service-name": svc.metadata.name,
            "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
          },
        },
        addressType: "IPv4",
        ports: [{ name: "http", port: 8080, protocol: "TCP" }],
        endpoints: selected.map(({ admitted, ip, node }) => ({
          addresses: [ip],
          conditions: { ready: true, serving: true, terminating: false },
          nodeName: node,
          targetRef: { kind: "Pod", namespace: ns, name: admitted.metadata.name },
        })),
      });
    }
  }

  const servedBy = async (from: Pod, path = "/"): Promise<string> => {
    const reply = await httpFrom(from.netnsPath, `http://10.96.0.10${path}`, { timeoutMs: 3000 });
    expect(reply.status, reply.body).toBe(200);
    return JSON.parse(reply.body).pod as string;
  };

  it("intercepts a meshed pod's traffic to a ClusterIP and balances it over pods on both nodes", async () => {
    api.apply(namespace("shop", { "nodemesh.io/intercept": "enabled" }));
    for (const [name, ip, selector] of [
      ["reviews", "10.96.0.10", { app: "reviews" }],
      ["reviews-v1", "10.96.0.11", { app: "reviews", version: "v1" }],
      ["reviews-v2", "10.96.0.12", { app: "reviews", version: "v2" }],
    ] as const)
      api.apply(
        service(
          "shop",
          name,
          ip,
          [{ name: "http", port: 80, targetPort: 8080, protocol: "TCP", appProtocol: "http" }],
          selector,
        ),
      );
    const [n1, n2] = world.nodes as [Node, Node];
    const { admitted } = await runPod("shop", "client", "v1", n1, "x7k2p");
    expect(admitted.spec.initContainers.map((c: Container) => c.name)).toEqual(["nodemesh-init"]);
    await runPod("shop", "reviews", "v1", n1, "a1b2c");
    await runPod("shop", "reviews", "v1", n2, "d3e4f");
    await runPod("shop", "reviews", "v2", n2, "g5h6i");
    // A replica opted out of the mesh: no agent knows it, its EndpointSlice does; meshed callers
    // reach it directly (before EndpointSlices were read, it was never an endpoint).
    const optedOut = await runPod("shop", "reviews", "v3", n1, "j7k8l", { "nodemesh.io/intercept": "disabled" });
    expect(optedOut.admitted.spec.initContainers).toBeUndefined();
    const client = pods.get("client-v1-x7k2p")!;

    const all = ["reviews-v1-a1b2c", "reviews-v1-d3e4f", "reviews-v2-g5h6i", "reviews-v3-j7k8l"];
    const seen = await eventually("every reviews pod serving", 30_000, async () => {
      const served = new Set<string>();
      for (let i = 0; i < 9; i++) served.add(await servedBy(client).catch(() => "failed"));
      return all.every((p) => served.has(p)) ? served : undefined;
    });
    expect([...seen].sort()).toEqual(all);
  }, 120_000);

  it("splits by an HTTPRoute created in the API, and writes the route's status: applied by every agent", async () => {
    api.apply(
      httpRoute("shop", "reviews-split", {
        parentRefs: [{ group: "", kind: "Service", name: "reviews", port: 80 }],
        rules: [
          {
            matches: [{ path: { type: "PathPrefix", value: "/v2" } }],
            backendRefs: [{ name: "reviews-v2", port: 80 }],
          },
          { backendRefs: [{ name: "reviews-v1", port: 80 }] },
        ],
      }),
    );
    const client = pods.get("client-v1-x7k2p")!;
    await eventually("the route in force", 30_000, async () => {
      const v1 = new Set<string>();
      for (let i = 0; i < 6; i++) v1.add(await servedBy(client).catch(() => "failed"));
      const v2 = await servedBy(client, "/v2/ratings").catch(() => "failed");
      return v1.size === 2 && v1.has("reviews-v1-a1b2c") && v1.has("reviews-v1-d3e4f") && v2 === "reviews-v2-g5h6i"
        ? true
        : undefined;
    });
    const status = await eventually("the route's status", 20_000, () => {
      const parents = api.get("httproutes", "shop", "reviews-split")?.status?.parents;
      const applied = parents?.[0]?.conditions?.find((c: { type: string }) => c.type === "Applied");
      return applied?.status === "True" ? parents : undefined;
    });
    // A TrafficPolicy (the nodemesh CRD) gets its APPLIED column; a gateway's route gets nothing from us.
    api.apply(
      trafficPolicy("shop", "reviews-retries", { targetRefs: [{ name: "reviews" }], retries: { attempts: 2 } }),
    );
    api.apply(
      httpRoute("shop", "ingress", {
        parentRefs: [{ group: "gateway.networking.k8s.io", kind: "Gateway", name: "edge" }],
        rules: [{ backendRefs: [{ name: "reviews", port: 80 }] }],
      }),
    );
    const policy = await eventually("the policy's status", 20_000, () => {
      const s = api.get("trafficpolicies", "shop", "reviews-retries")?.status;
      return s?.applied === "2/2" ? s : undefined;
    });
    expect(policy).toMatchObject({ observedGeneration: 1, agentsApplied: 2, agentsTotal: 2 });
    expect(policy.conditions).toContainEqual(
      expect.objectContaining({ type: "Applied", status: "True", reason: "Applied" }),
    );
    expect(api.get("httproutes", "shop", "ingress")?.status).toBeUndefined();
    expect(status[0]).toMatchObject({
      controllerName: "nodemesh.io/controller",
      parentRef: { name: "reviews", port: 80 },
      conditions: expect.arrayContaining([
        expect.objectContaining({ type: "Accepted", status: "True" }),
        expect.objectContaining({
          type: "Applied",
          status: "True",
          message: "2 of 2 connected agents applied generation 1",
        }),
      ]),
    });
  }, 90_000);

  it("leaves a pod of a namespace without the annotation alone: no init container, no interception", async () => {
    api.apply(namespace("plain"));
    const [, n2] = world.nodes as [Node, Node];
    const { pod, admitted } = await runPod("plain", "outsider", "v1", n2, "q9w8e");
    expect(admitted.spec.initContainers).toBeUndefined();
    expect(admitted.metadata.annotations?.["nodemesh.io/status"]).toBeUndefined();
    const nat = await world.exec(pod, "iptables-save", ["-t", "nat"]);
    expect(nat.stdout).not.toContain("NODEMESH");
    // Nothing answers for the ClusterIP outside the mesh here (no kube-proxy): the connection fails.
    await expect(httpFrom(pod.netnsPath, "http://10.96.0.10/", { timeoutMs: 1500 })).rejects.toThrow();
    const meshed = pods.get("client-v1-x7k2p")!;
    expect((await world.exec(meshed, "iptables-save", ["-t", "nat"])).stdout).toContain("NODEMESH_OUTPUT");
    expect(readFileSync(join(dir, "controller", "bootstrap-token", "token"), "utf8").length).toBeGreaterThan(0);
  }, 60_000);
});
