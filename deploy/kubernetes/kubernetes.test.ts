// The Kubernetes install as `kubectl kustomize` renders it: every object valid against the
// Kubernetes schemas with no unknown field, the CRDs equal to what the zod schemas generate, and
// the choices the docs promise (capabilities, host paths, probes, RBAC, webhook) really made.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { AGENT_PROCESS, CONTROLLER_PROCESS, type ProcessSettings } from "../../api/process-settings.ts";
import { CRD_DIR, crdKinds, renderCrdFiles } from "../../controller/kubernetes/crds.ts";
import { NODE_BINDINGS_SECRET_NAME } from "../../controller/kubernetes/node-bindings-secret.ts";
import { findManifest, flagsOf, type Manifest, renderManifests } from "../../test/kubernetes/manifests.ts";
import { kubernetesSchemaErrors } from "../../test/kubernetes/schemas.ts";

const base = renderManifests();
const dev = renderManifests("overlays/dev");

describe.each([
  ["base", base],
  ["overlays/dev", dev],
])("kubectl kustomize %s", (_name, manifests) => {
  it("renders every part of the install", () => {
    const kinds = manifests.map((m) => `${m.kind}/${m.metadata.name}`).sort();
    for (const part of [
      "Namespace/nodemesh-system",
      "CustomResourceDefinition/trafficpolicies.nodemesh.io",
      "ServiceAccount/nodemesh-agent",
      "ServiceAccount/nodemesh-controller",
      "ClusterRole/nodemesh-controller",
      "ClusterRoleBinding/nodemesh-controller",
      "Role/nodemesh-controller",
      "RoleBinding/nodemesh-controller",
      "DaemonSet/nodemesh-agent",
      "Deployment/nodemesh-controller",
      "Service/nodemesh-controller",
      "PodDisruptionBudget/nodemesh-controller",
      "MutatingWebhookConfiguration/nodemesh-injector",
      "Secret/nodemesh-bootstrap-token",
    ])
      expect(kinds).toContain(part);
  });

  it("is valid against the Kubernetes schemas, with no unknown field", () => {
    const problems = manifests.flatMap((m) =>
      kubernetesSchemaErrors(m).map((e) => `${m.kind}/${m.metadata.name} ${e}`),
    );
    expect(problems).toEqual([]);
  });

  it("puts every namespaced object in nodemesh-system", () => {
    const clusterScoped = [
      "Namespace",
      "CustomResourceDefinition",
      "ClusterRole",
      "ClusterRoleBinding",
      "MutatingWebhookConfiguration",
    ];
    for (const m of manifests.filter((m) => !clusterScoped.includes(m.kind)))
      expect(m.metadata.namespace, `${m.kind}/${m.metadata.name}`).toBe("nodemesh-system");
  });
});

it("the schema check catches unknown and invalid fields (it is not a rubber stamp)", () => {
  const ds = structuredClone(findManifest(base, "DaemonSet", "nodemesh-agent"));
  ds.spec.template.spec.containers[0].imagee = "typo";
  ds.spec.template.spec.hostNetwork = "yes";
  const errors = kubernetesSchemaErrors(ds);
  expect(errors).toContain("/spec/template/spec/containers/0/imagee: unknown field");
  expect(errors.some((e) => e.startsWith("/spec/template/spec/hostNetwork"))).toBe(true);
});

describe("CRDs", () => {
  it("are the ones the zod schemas generate (run `node controller/kubernetes/crds.ts` after a schema change)", async () => {
    for (const [file, text] of await renderCrdFiles()) expect(readFileSync(CRD_DIR + file, "utf8"), file).toBe(text);
  });

  it("cover every nodemesh kind that Kubernetes does not already define, with status and printer columns", () => {
    expect(crdKinds().map((k) => k.kind)).toContain("TrafficPolicy");
    // A kind added to api/resources.ts needs its file generated and listed in base/kustomization.yaml.
    for (const kind of crdKinds()) {
      const crd = findManifest(base, "CustomResourceDefinition", `${kind.plural}.${kind.group}`);
      const [version] = crd.spec.versions;
      expect(version.subresources).toEqual({ status: {} });
      expect(version.additionalPrinterColumns.map((c: { name: string }) => c.name)).toEqual(["Applied", "Age"]);
    }
  });

  it("are structural: every node typed, no additionalProperties beside properties, no unions", () => {
    const crd = parse(readFileSync(`${CRD_DIR}trafficpolicies.nodemesh.io.yaml`, "utf8"));
    const problems: string[] = [];
    const walk = (s: Record<string, unknown>, path: string) => {
      if (!s.type) problems.push(`${path}: no type`);
      if (s.properties && s.additionalProperties !== undefined)
        problems.push(`${path}: properties and additionalProperties`);
      for (const k of ["anyOf", "oneOf", "allOf", "$ref"]) if (k in s) problems.push(`${path}: ${k}`);
      for (const [name, p] of Object.entries((s.properties ?? {}) as Record<string, Record<string, unknown>>))
        walk(p, `${path}.${name}`);
      if (s.items) walk(s.items as Record<string, unknown>, `${path}[]`);
      if (typeof s.additionalProperties === "object")
        walk(s.additionalProperties as Record<string, unknown>, `${path}{}`);
    };
    walk(crd.spec.versions[0].schema.openAPIV3Schema, "");
    expect(problems).toEqual([]);
  });
});

describe("the agent DaemonSet", () => {
  const ds = findManifest(base, "DaemonSet", "nodemesh-agent");
  const pod = ds.spec.template.spec;
  const agent = pod.containers[0];

  it("starts node with the agent's process settings, as the demo, the tests and the benchmarks do", () => {
    expectProcessSettings(agent, AGENT_PROCESS, "agent");
  });

  it("runs in the node's network and pid namespaces with exactly the capabilities it needs", () => {
    expect(pod.hostNetwork).toBe(true);
    expect(pod.hostPID).toBe(true);
    expect(pod.dnsPolicy).toBe("ClusterFirstWithHostNet");
    expect(agent.securityContext.privileged).toBe(false);
    expect(agent.securityContext.capabilities).toEqual({ drop: ["ALL"], add: ["NET_ADMIN", "SYS_ADMIN", "NET_RAW"] });
    expect(pod.automountServiceAccountToken).toBe(false);
  });

  it("mounts the enrollment socket's and the state directory's host paths at the paths its flags name", () => {
    const flags = flagsOf(agent.args);
    const mounts = new Map<string, Manifest>(agent.volumeMounts.map((m: Manifest) => [m.name, m]));
    const hostPaths = new Map(
      pod.volumes.filter((v: Manifest) => v.hostPath).map((v: Manifest) => [v.name, v.hostPath.path]),
    );
    const hostPathOf = (path: string) =>
      hostPaths.get([...mounts.values()].find((m) => path.startsWith(`${m.mountPath}/`) || path === m.mountPath)?.name);
    expect(hostPathOf(flags.get("enrollment-socket")!)).toBe("/var/run/nodemesh");
    expect(hostPathOf(flags.get("state-dir")!)).toBe("/var/lib/nodemesh");
    expect(mounts.get("netns")).toMatchObject({ mountPath: "/var/run/netns", mountPropagation: "HostToContainer" });
    expect(hostPaths.get("netns")).toBe("/var/run/netns");
  });

  it("is probed on its admin port and scraped as deploy/prometheus/scrape.yaml expects", () => {
    expect(agent.readinessProbe.httpGet).toEqual({ path: "/readyz", port: 15020 });
    expect(agent.livenessProbe.httpGet).toEqual({ path: "/healthz", port: 15020 });
    // No declared port: under hostNetwork it would be a host port, and the surge pod could not schedule.
    expect(agent.ports).toBeUndefined();
    expect(ds.spec.template.metadata.labels["app.kubernetes.io/name"]).toBe("nodemesh-agent");
    expect(ds.spec.template.metadata.annotations).toMatchObject({
      "prometheus.io/scrape": "true",
      "prometheus.io/port": "15020",
    });
    expect(agent.resources.requests).toBeDefined();
  });

  it("upgrades by surge: the new agent takes over beside the old one, which drains within its grace period", () => {
    expect(ds.spec.updateStrategy.rollingUpdate).toEqual({ maxUnavailable: 0, maxSurge: 1 });
    const drainS = Number(flagsOf(agent.args).get("drain-timeout-s"));
    expect(drainS).toBe(30);
    expect(ds.spec.template.spec.terminationGracePeriodSeconds).toBeGreaterThan(drainS + 5);
    for (const container of ds.spec.template.spec.containers) expect(container.ports).toBeUndefined();
  });

  it("authenticates to the controller with the bootstrap token Secret the controller also reads", () => {
    const flags = flagsOf(agent.args);
    expect(flags.get("controller")).toBe("nodemesh-controller.nodemesh-system.svc:15012");
    const tokenMount = agent.volumeMounts.find((m: Manifest) =>
      flags.get("controller-token-file")!.startsWith(m.mountPath),
    );
    const volume = pod.volumes.find((v: Manifest) => v.name === tokenMount.name);
    expect(volume.secret.secretName).toBe("nodemesh-bootstrap-token");
    const controller = findManifest(base, "Deployment", "nodemesh-controller").spec.template.spec;
    expect(controller.volumes.find((v: Manifest) => v.name === "bootstrap-token").secret.secretName).toBe(
      "nodemesh-bootstrap-token",
    );
    expect(flagsOf(controller.containers[0].args).has("insecure-agents")).toBe(false);
  });

  it("sends the agents' spans to the controller's OTLP port", () => {
    const agent = findManifest(base, "DaemonSet", "nodemesh-agent").spec.template.spec.containers[0];
    const endpoint = new URL(flagsOf(agent.args).get("otlp-endpoint")!);
    expect(`${endpoint.hostname}:${endpoint.port}`).toBe("nodemesh-controller.nodemesh-system.svc:4318");
  });

  it("speaks TLS to the controller, verified with the root the replicas publish, under the Service's name", () => {
    const controller = findManifest(base, "Deployment", "nodemesh-controller").spec.template.spec;
    const controllerFlags = flagsOf(controller.containers[0].args);
    const agentFlags = flagsOf(agent.args);
    expect(controllerFlags.get("grpc-tls")).toBe("on");
    const controllerHost = agentFlags.get("controller")!.split(":")[0]!;
    expect(controllerFlags.get("tls-san")!.split(",")).toContain(controllerHost);
    expect(agentFlags.has("insecure-controller")).toBe(false);
    // The CA file comes from the ConfigMap the controllers write (ca-secret.ts), mounted read-only.
    const caFile = agentFlags.get("controller-ca-file")!;
    const mount = agent.volumeMounts.find((m: { mountPath: string }) => caFile.startsWith(`${m.mountPath}/`));
    expect(mount?.readOnly).toBe(true);
    const volume = pod.volumes.find((v: { name: string }) => v.name === mount.name);
    expect(volume.configMap.name).toBe("nodemesh-ca-root");
  });
});

/** The container runs `node <settings' flags> nodemesh.js <command>` with the settings' environment. */
function expectProcessSettings(container: Manifest, settings: ProcessSettings, command: string): void {
  expect(container.command).toEqual(["node", ...settings.nodeFlags, "/opt/nodemesh/dist/bin/nodemesh.js", command]);
  for (const [name, value] of Object.entries(settings.env)) expect(container.env).toContainEqual({ name, value });
}

describe("the controller", () => {
  const deployment = findManifest(base, "Deployment", "nodemesh-controller");
  const container = deployment.spec.template.spec.containers[0];
  const flags = flagsOf(container.args);
  const service = findManifest(base, "Service", "nodemesh-controller");

  it("starts node with the controller's process settings, as the demo, the tests and the benchmark do", () => {
    expectProcessSettings(container, CONTROLLER_PROCESS, "controller");
  });

  it("runs 2 replicas from Kubernetes as the source, behind a PodDisruptionBudget", () => {
    expect(deployment.spec.replicas).toBe(2);
    expect(flags.get("source")).toBe("kubernetes");
    expect(findManifest(base, "PodDisruptionBudget", "nodemesh-controller").spec.minAvailable).toBe(1);
    expect(deployment.spec.template.spec.securityContext.runAsNonRoot).toBe(true);
  });

  it("serves gRPC 15012, REST 8080, the webhook and OTLP 4318 through its Service", () => {
    const ports = Object.fromEntries(service.spec.ports.map((p: Manifest) => [p.name, [p.port, p.targetPort]]));
    expect(ports).toEqual({
      http: [8080, "http"],
      grpc: [15012, "grpc"],
      webhook: [443, "webhook"],
      otlp: [4318, "otlp"],
    });
    const containerPorts = Object.fromEntries(container.ports.map((p: Manifest) => [p.name, p.containerPort]));
    expect(containerPorts).toEqual({
      http: 8080,
      grpc: 15012,
      webhook: Number(flags.get("webhook-port")),
      otlp: Number(flags.get("otlp-address")!.split(":")[1]),
    });
  });

  it("has read-only access to what it watches and writes only status, its Lease, the webhook's certificate and the node bindings", () => {
    const clusterRole = findManifest(base, "ClusterRole", "nodemesh-controller");
    for (const rule of clusterRole.rules) {
      expect(rule.verbs).not.toContain("*");
      expect(rule.resources).not.toContain("*");
      const writes = rule.verbs.filter((v: string) => !["get", "list", "watch"].includes(v));
      if (writes.length > 0) {
        const statusOnly = rule.resources.every((r: string) => r.endsWith("/status"));
        expect(statusOnly || rule.resourceNames?.length === 1, JSON.stringify(rule)).toBe(true);
      }
    }
    const namespaced = findManifest(base, "Role", "nodemesh-controller");
    for (const rule of namespaced.rules) {
      const updates = rule.verbs.filter((v: string) => ["update", "patch", "delete"].includes(v));
      if (updates.length > 0) expect(rule.resourceNames, JSON.stringify(rule)).toHaveLength(1);
    }
    // Every replica reads and compare-and-swaps the node bindings' Secret (controller/kubernetes/node-bindings-secret.ts).
    expect(
      namespaced.rules.some(
        (r: { resources: string[]; resourceNames?: string[]; verbs: string[] }) =>
          r.resources.includes("secrets") &&
          r.resourceNames?.includes(NODE_BINDINGS_SECRET_NAME) &&
          r.verbs.includes("get") &&
          r.verbs.includes("update"),
      ),
    ).toBe(true);
    // The agent has a ServiceAccount and no binding at all.
    const bindings = base.filter((m) => m.kind.endsWith("Binding"));
    for (const b of bindings) expect(b.subjects.map((s: Manifest) => s.name)).not.toContain("nodemesh-agent");
  });
});

describe("the injection webhook", () => {
  const webhook = findManifest(base, "MutatingWebhookConfiguration", "nodemesh-injector").webhooks[0];

  it("is served by the controller Service on /inject, fails closed and leaves system namespaces alone", () => {
    expect(webhook.clientConfig.service).toEqual({
      name: "nodemesh-controller",
      namespace: "nodemesh-system",
      path: "/inject",
      port: 443,
    });
    expect(webhook.failurePolicy).toBe("Fail");
    expect(webhook.sideEffects).toBe("None");
    expect(webhook.rules).toEqual([
      { operations: ["CREATE"], apiGroups: [""], apiVersions: ["v1"], resources: ["pods"], scope: "Namespaced" },
    ]);
    const excluded = webhook.namespaceSelector.matchExpressions.find(
      (e: Manifest) => e.key === "kubernetes.io/metadata.name",
    );
    expect(excluded.values).toEqual(expect.arrayContaining(["kube-system", "nodemesh-system"]));
  });
});
