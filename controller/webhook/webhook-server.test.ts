// The injection webhook over real HTTPS with AdmissionReview v1 requests of the shapes a real API
// server sends. Each injected pod is checked against the Kubernetes Pod schema (no unknown field)
// and its init container's flags are parsed by `nodemesh init`'s own parser.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseInitArgs } from "../../init-container/cli.ts";
import {
  admissionReview,
  admittedPod,
  deploymentPod,
  type PodJson,
  postToWebhook,
} from "../../test/kubernetes/admission.ts";
import { kubernetesSchemaErrors } from "../../test/kubernetes/schemas.ts";
import { issueWebhookCertificate, type WebhookCertificate } from "./certificate.ts";
import { WebhookServer } from "./webhook-server.ts";

const IMAGE = "nodemesh/nodemesh:0.1.0";
const NAMESPACES: Record<string, Record<string, string>> = {
  shop: { "nodemesh.io/intercept": "enabled" },
  plain: {},
  other: { "nodemesh.io/intercept": "disabled" },
  fast: { "nodemesh.io/intercept": "enabled", "nodemesh.io/interception": "node" },
};

let dir: string;
let cert: WebhookCertificate;
let server: WebhookServer;
let url: string;

function writeCert(c: WebhookCertificate): void {
  writeFileSync(join(dir, "tls.crt"), c.certPem);
  writeFileSync(join(dir, "tls.key"), c.keyPem);
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "nodemesh-webhook-"));
  cert = await issueWebhookCertificate({
    dnsNames: ["nodemesh-controller.nodemesh-system.svc"],
    ipAddresses: ["127.0.0.1"],
  });
  writeCert(cert);
  server = new WebhookServer({
    host: "127.0.0.1",
    port: 0,
    tlsDir: dir,
    reloadIntervalMs: 50,
    injection: () => ({ image: IMAGE }),
    namespaceAnnotations: async (name) => {
      const annotations = NAMESPACES[name];
      if (!annotations) throw new Error(`namespaces "${name}" not found`);
      return annotations;
    },
    log: pino({ level: "silent" }),
  });
  await server.start();
  url = `https://127.0.0.1:${server.port}/inject`;
});

afterAll(async () => {
  await server?.close();
  rmSync(dir, { recursive: true, force: true });
});

async function review(pod: PodJson, opts?: { operation?: string; namespace?: string }) {
  const body = admissionReview(pod, opts);
  const res = await postToWebhook(url, cert.caPem, body);
  expect(res.status).toBe(200);
  expect(res.json?.kind).toBe("AdmissionReview");
  expect(res.json?.response.uid).toBe(body.request.uid);
  return res.json?.response as PodJson;
}

const initOf = (pod: PodJson) => pod.spec.initContainers?.find((c: PodJson) => c.name === "nodemesh-init");

/** What `nodemesh init` will do with the injected container's args and downward-API env. */
function initPlan(container: PodJson) {
  const env = { POD_NAME: "reviews-7d9f8c6b5-x2x9q", POD_NAMESPACE: "shop", POD_IP: "10.244.1.7" };
  return parseInitArgs(container.args, env, () => ({}));
}

describe("the injection webhook", () => {
  it("injects the init container into a pod of an annotated namespace, giving a valid Pod", async () => {
    const pod = deploymentPod({ namespace: "shop", app: "reviews" });
    const response = await review(pod);
    expect(response.allowed).toBe(true);
    expect(response.patchType).toBe("JSONPatch");
    const admitted = await admittedPod(pod, response);
    expect(kubernetesSchemaErrors(admitted)).toEqual([]);
    const init = initOf(admitted);
    expect(admitted.spec.initContainers[0]).toBe(init);
    expect(init.image).toBe(IMAGE);
    expect(init.command).toEqual(["node", "/opt/nodemesh/dist/bin/nodemesh.js", "init"]);
    expect(init.securityContext.capabilities).toEqual({ drop: ["ALL"], add: ["NET_ADMIN", "NET_RAW"] });
    expect(init.volumeMounts).toEqual([{ name: "nodemesh-enrollment", mountPath: "/var/run/nodemesh" }]);
    expect(admitted.spec.volumes).toContainEqual({
      name: "nodemesh-enrollment",
      hostPath: { path: "/var/run/nodemesh", type: "Directory" },
    });
    expect(admitted.metadata.annotations["nodemesh.io/status"]).toBe("injected");
    const plan = initPlan(init);
    expect(plan.pod).toMatchObject({
      name: "reviews-7d9f8c6b5-x2x9q",
      namespace: "shop",
      ip: "10.244.1.7",
      serviceAccount: "reviews",
      labels: { app: "reviews", "pod-template-hash": "7d9f8c6b5" },
    });
    expect(admitted.spec.containers).toEqual(pod.spec.containers); // the app is untouched
  });

  it("leaves pods of a namespace without the annotation (or with another value) alone", async () => {
    for (const namespace of ["plain", "other"]) {
      const response = await review(deploymentPod({ namespace, app: "web" }));
      expect(response).toEqual({ uid: expect.any(String), allowed: true });
    }
  });

  it("leaves a pod annotated nodemesh.io/intercept: disabled alone", async () => {
    const pod = deploymentPod({
      namespace: "shop",
      app: "batch",
      annotations: { "nodemesh.io/intercept": "disabled" },
    });
    expect((await review(pod)).patch).toBeUndefined();
  });

  it("never injects a host-network pod (its namespace is the node's)", async () => {
    const pod = deploymentPod({ namespace: "shop", app: "node-exporter", spec: { hostNetwork: true } });
    const response = await review(pod);
    expect(response.allowed).toBe(true);
    expect(response.patch).toBeUndefined();
  });

  it("is idempotent: an injected pod sent again (reinvocation) is not changed", async () => {
    const pod = deploymentPod({ namespace: "shop", app: "reviews" });
    const once = await admittedPod(pod, await review(pod));
    const again = await review(once);
    expect(again.allowed).toBe(true);
    expect(again.patch).toBeUndefined();
  });

  it("goes first among existing init containers, keeps existing volumes and annotations", async () => {
    const pod = deploymentPod({
      namespace: "shop",
      app: "db",
      annotations: { "team/owner": "data" },
      spec: {
        initContainers: [{ name: "migrate", image: "registry.example/migrate:1" }],
        volumes: [{ name: "data", emptyDir: {} }],
      },
    });
    const admitted = await admittedPod(pod, await review(pod));
    expect(admitted.spec.initContainers.map((c: PodJson) => c.name)).toEqual(["nodemesh-init", "migrate"]);
    expect(admitted.spec.volumes.map((v: PodJson) => v.name)).toEqual(["data", "nodemesh-enrollment"]);
    expect(admitted.metadata.annotations).toEqual({ "team/owner": "data", "nodemesh.io/status": "injected" });
    expect(kubernetesSchemaErrors(admitted)).toEqual([]);
  });

  it("turns the exclusion annotations into the init container's flags", async () => {
    const pod = deploymentPod({
      namespace: "shop",
      app: "reviews",
      annotations: {
        "nodemesh.io/exclude-outbound-ports": "22,8000:8100",
        "nodemesh.io/exclude-inbound-ports": "9090",
        "nodemesh.io/exclude-outbound-cidrs": "169.254.169.254,10.0.0.0/8",
      },
    });
    const init = initOf(await admittedPod(pod, await review(pod)));
    expect(init.args).toEqual(
      expect.arrayContaining([
        "--exclude-outbound-ports=22,8000:8100",
        "--exclude-inbound-ports=9090",
        "--exclude-outbound-cidrs=169.254.169.254,10.0.0.0/8",
      ]),
    );
    const plan = initPlan(init);
    expect(plan.config.excludeOutboundPorts).toEqual([
      { first: 22, last: 22 },
      { first: 8000, last: 8100 },
    ]);
    expect(plan.config.excludeInboundPorts).toEqual([{ first: 9090, last: 9090 }]);
    expect(plan.config.excludeOutboundCidrs).toHaveLength(2);
  });

  it("gives a pod annotated nodemesh.io/interception: ebpf the eBPF mode, its cgroup from inside the pod, the node's cgroup hierarchy and bpffs, and the capabilities", async () => {
    const pod = deploymentPod({
      namespace: "shop",
      app: "reviews",
      annotations: { "nodemesh.io/interception": "ebpf" },
    });
    const admitted = await admittedPod(pod, await review(pod));
    expect(kubernetesSchemaErrors(admitted)).toEqual([]);
    const init = initOf(admitted);
    expect(init.args).toEqual(
      expect.arrayContaining(["--mode=ebpf", "--cgroup=parent", "--cgroup-root=/host/sys/fs/cgroup"]),
    );
    expect(initPlan(init)).toMatchObject({ mode: "ebpf", cgroup: "parent", cgroupRoot: "/host/sys/fs/cgroup" });
    expect(init.securityContext.capabilities).toEqual({
      drop: ["ALL"],
      add: ["NET_ADMIN", "NET_RAW", "BPF", "SYS_ADMIN"],
    });
    expect(init.securityContext.privileged).toBe(false);
    expect(init.volumeMounts).toEqual([
      { name: "nodemesh-enrollment", mountPath: "/var/run/nodemesh" },
      { name: "nodemesh-cgroup", mountPath: "/host/sys/fs/cgroup", readOnly: true },
      { name: "nodemesh-bpffs", mountPath: "/sys/fs/bpf", readOnly: false },
    ]);
    expect(admitted.spec.volumes).toEqual(
      expect.arrayContaining([
        { name: "nodemesh-cgroup", hostPath: { path: "/sys/fs/cgroup", type: "Directory" } },
        { name: "nodemesh-bpffs", hostPath: { path: "/sys/fs/bpf", type: "Directory" } },
      ]),
    );
  });

  it("takes the interception mode from the namespace unless the pod names one; iptables adds nothing", async () => {
    const plain = deploymentPod({ namespace: "fast", app: "reviews" });
    const fromNamespace = initOf(await admittedPod(plain, await review(plain)));
    expect(fromNamespace.args).toContain("--mode=node");
    const podSays = deploymentPod({
      namespace: "fast",
      app: "reviews",
      annotations: { "nodemesh.io/interception": "iptables" },
    });
    const admitted = await admittedPod(podSays, await review(podSays));
    const init = initOf(admitted);
    expect(init.args.filter((a: string) => a.startsWith("--mode") || a.startsWith("--cgroup"))).toEqual([]);
    expect(init.securityContext.capabilities.add).toEqual(["NET_ADMIN", "NET_RAW"]);
    expect(admitted.spec.volumes.map((v: PodJson) => v.name)).not.toContain("nodemesh-bpffs");
    expect(initPlan(init).mode).toBe("iptables");
  });

  it("refuses a pod whose interception annotation is not a mode, naming it", async () => {
    const pod = deploymentPod({
      namespace: "shop",
      app: "reviews",
      annotations: { "nodemesh.io/interception": "nft" },
    });
    const response = await review(pod);
    expect(response.allowed).toBe(false);
    expect(response.status.code).toBe(400);
    expect(response.status.message).toContain(
      'annotation nodemesh.io/interception: "nft" is not iptables, ebpf or node',
    );
  });

  it("refuses a pod whose exclusion annotation is malformed, naming it (it must not start un-intercepted)", async () => {
    const pod = deploymentPod({
      namespace: "shop",
      app: "reviews",
      annotations: { "nodemesh.io/exclude-outbound-ports": "22,http" },
    });
    const response = await review(pod);
    expect(response.allowed).toBe(false);
    expect(response.status.code).toBe(400);
    expect(response.status.message).toMatch(/nodemesh.io\/exclude-outbound-ports.*"http"/);
  });

  it("refuses a pod whose namespace it cannot read", async () => {
    const response = await review(deploymentPod({ namespace: "gone", app: "x" }));
    expect(response.allowed).toBe(false);
    expect(response.status.message).toMatch(/cannot read namespace gone/);
  });

  it("allows other operations unchanged", async () => {
    const response = await review(deploymentPod({ namespace: "shop", app: "reviews" }), { operation: "UPDATE" });
    expect(response).toEqual({ uid: expect.any(String), allowed: true });
  });

  it("answers malformed reviews with a clear refusal and keeps serving", async () => {
    const bad: [unknown, number, RegExp, { contentType?: string; method?: string }?][] = [
      ["{not json", 400, /not valid JSON/],
      ["[1,2]", 400, /JSON object/],
      [
        { apiVersion: "admission.k8s.io/v1beta1", kind: "AdmissionReview", request: { uid: "u" } },
        400,
        /admission.k8s.io\/v1/,
      ],
      [{ apiVersion: "admission.k8s.io/v1", kind: "AdmissionReview" }, 400, /no request.uid/],
      [{ apiVersion: "admission.k8s.io/v1", kind: "AdmissionReview", request: { uid: "" } }, 400, /no request.uid/],
      [admissionReview({}), 415, /content-type/, { contentType: "text/plain" }],
      ["", 405, /POST/, { method: "GET" }],
      [`{"a":"${"x".repeat(5 * 1024 * 1024)}"}`, 413, /exceeds/],
    ];
    for (const [body, status, message, opts] of bad) {
      const res = await postToWebhook(url, cert.caPem, body, opts);
      expect(res.status, res.text).toBe(status);
      expect(res.json?.message).toMatch(message);
    }
    // Reviews with a uid but a broken object are answered as reviews: allowed false, the reason.
    const brokenObjects: [PodJson, RegExp][] = [
      [
        {
          ...admissionReview(deploymentPod({ namespace: "shop", app: "a" })),
          request: { uid: "u1", resource: { group: "apps", resource: "deployments" }, operation: "CREATE" },
        },
        /only pods/,
      ],
      [admissionReview("not a pod" as unknown as PodJson, { namespace: "shop" }), /not a Pod/],
      [
        admissionReview({ metadata: { labels: { a: 1 } }, spec: { containers: [] } }, { namespace: "shop" }),
        /labels must map strings/,
      ],
      [admissionReview({ metadata: {}, spec: { containers: "x" } }, { namespace: "shop" }), /no spec.containers/],
      [
        admissionReview({ metadata: { name: "p" }, spec: { containers: [] } }, { namespace: "" }),
        /namespace is missing/,
      ],
    ];
    for (const [body, message] of brokenObjects) {
      const res = await postToWebhook(url, cert.caPem, body);
      expect(res.status, res.text).toBe(200);
      expect(res.json?.response).toMatchObject({ uid: body.request.uid, allowed: false, status: { code: 400 } });
      expect(res.json?.response.status.message).toMatch(message);
    }
    // Everyone else is still served.
    expect((await review(deploymentPod({ namespace: "shop", app: "reviews" }))).patch).toBeDefined();
  });

  it("serves a rotated certificate without a restart", async () => {
    const next = await issueWebhookCertificate({
      dnsNames: ["nodemesh-controller.nodemesh-system.svc"],
      ipAddresses: ["127.0.0.1"],
    });
    writeCert(next);
    // The old CA stops working once the new pair is loaded (polled every 50 ms here).
    let served = false;
    for (let i = 0; i < 100 && !served; i++) {
      try {
        await postToWebhook(url, next.caPem, admissionReview(deploymentPod({ namespace: "plain", app: "a" })));
        served = true;
      } catch {
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    expect(served).toBe(true);
    await expect(
      postToWebhook(url, cert.caPem, admissionReview(deploymentPod({ namespace: "plain", app: "a" }))),
    ).rejects.toThrow();
    cert = next;
  });
});
