// The shared workload CA root in Kubernetes mode, against the stand-in API server: replicas racing
// at start-up end with one root; a later replica reads it; a Secret without a readable root stops
// the controller with a message saying what to do; the root's ConfigMap is written once and
// replaced when the root changes.
import pino from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { FakeApiServer } from "../../test/kubernetes/api-server.ts";
import { kubeConfigFor } from "../../test/kubernetes/kubeconfig.ts";
import { CA_ROOT_CONFIGMAP_NAME, CA_SECRET_NAME, publishCaRoot, sharedCaRoot } from "./ca-secret.ts";
import { KubeClient } from "./kube-client.ts";

const NS = "nodemesh-system";
const log = pino({ level: "silent" });
let api: FakeApiServer;

beforeEach(async () => {
  api = new FakeApiServer({ bookmarkIntervalMs: 0 });
  await api.start();
});
afterEach(() => api.stop());

const client = () => new KubeClient(kubeConfigFor(api.url));
const root = (n: number) => ({
  certPem: `-----BEGIN CERTIFICATE-----\nroot-${n}\n-----END CERTIFICATE-----\n`,
  keyPem: `-----BEGIN PRIVATE KEY-----\nkey-${n}\n-----END PRIVATE KEY-----\n`,
});

describe("shared CA root", () => {
  it("gives every replica one root, whoever made it", async () => {
    const made: number[] = [];
    const replicas = await Promise.all(
      [1, 2, 3].map((n) =>
        sharedCaRoot(
          client(),
          NS,
          async () => {
            made.push(n);
            return root(n);
          },
          log,
        ),
      ),
    );
    expect(new Set(replicas.map((r) => r.certPem)).size).toBe(1);
    const stored = api.get("secrets", NS, CA_SECRET_NAME)!;
    expect(Buffer.from(stored.data["ca.pem"], "base64").toString()).toBe(replicas[0]!.certPem);
    expect(Buffer.from(stored.data["ca-key.pem"], "base64").toString()).toBe(replicas[0]!.keyPem);
    // A replica started later reads it and makes nothing.
    const later = await sharedCaRoot(client(), NS, async () => root(9), log);
    expect(later).toEqual(replicas[0]);
    expect(made).not.toContain(9);
  });

  it("refuses to start on a Secret without a readable root, saying what to do", async () => {
    await client().request("POST", `/api/v1/namespaces/${NS}/secrets`, {
      apiVersion: "v1",
      kind: "Secret",
      metadata: { name: CA_SECRET_NAME, namespace: NS },
      data: { "ca.pem": Buffer.from("garbage").toString("base64") },
    });
    await expect(sharedCaRoot(client(), NS, async () => root(1), log)).rejects.toThrow(
      /nodemesh-system\/nodemesh-ca has no readable ca.pem and ca-key.pem; delete it/,
    );
  });

  it("publishes the root for agents, and replaces it when it changes", async () => {
    await publishCaRoot(client(), NS, root(1).certPem);
    await publishCaRoot(client(), NS, root(1).certPem);
    const first = api.get("configmaps", NS, CA_ROOT_CONFIGMAP_NAME)!;
    expect(first.data["ca.pem"]).toBe(root(1).certPem);
    await publishCaRoot(client(), NS, root(2).certPem);
    const second = api.get("configmaps", NS, CA_ROOT_CONFIGMAP_NAME)!;
    expect(second.data["ca.pem"]).toBe(root(2).certPem);
    expect(second.metadata.resourceVersion).not.toBe(first.metadata.resourceVersion);
  });
});
