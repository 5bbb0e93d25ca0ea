// The workload CA's root in Kubernetes mode, shared by every controller replica (as istiod keeps its
// self-signed root in the Secret `istio-ca-secret`): the Secret `nodemesh-ca` (ca.pem, ca-key.pem)
// in the controller's namespace. The first replica to start makes a root and creates the Secret;
// one that loses the race (409 AlreadyExists) takes the winner's, so every replica signs with the
// same root and a workload certificate issued by one is trusted by agents served by another.
//
// The root's certificate (never its key) is also published in the ConfigMap `nodemesh-ca-root`
// (ca.pem), which the agent DaemonSet mounts as its --controller-ca-file (Istio's
// `istio-ca-root-cert`): agents verify the controller's gRPC serving certificate with it.

import type { Logger } from "pino";
import { KubeApiError, type KubeClient } from "./kube-client.ts";

export const CA_SECRET_NAME = "nodemesh-ca";
export const CA_ROOT_CONFIGMAP_NAME = "nodemesh-ca-root";

export interface CaMaterial {
  readonly certPem: string;
  readonly keyPem: string;
}

interface Secret {
  apiVersion: "v1";
  kind: "Secret";
  metadata: { name: string; namespace: string; labels?: Record<string, string> };
  type?: string;
  data?: Record<string, string>;
}

interface ConfigMap {
  apiVersion: "v1";
  kind: "ConfigMap";
  metadata: { name: string; namespace: string; resourceVersion?: string; labels?: Record<string, string> };
  data?: Record<string, string>;
}

const LABELS = { "app.kubernetes.io/part-of": "nodemesh" };
const b64 = (s: string) => Buffer.from(s).toString("base64");
const unb64 = (s: string | undefined) => (s ? Buffer.from(s, "base64").toString("utf8") : "");

async function read<T>(client: KubeClient, path: string): Promise<T | undefined> {
  try {
    return await client.get<T>(path);
  } catch (err) {
    if (err instanceof KubeApiError && err.code === 404) return undefined;
    throw err;
  }
}

function materialOf(secret: Secret, namespace: string): CaMaterial {
  const certPem = unb64(secret.data?.["ca.pem"]);
  const keyPem = unb64(secret.data?.["ca-key.pem"]);
  if (!certPem.includes("BEGIN CERTIFICATE") || !keyPem.includes("PRIVATE KEY")) {
    // Never replaced here: another replica may be signing with it. An operator deletes it.
    throw new Error(
      `the Secret ${namespace}/${CA_SECRET_NAME} has no readable ca.pem and ca-key.pem; delete it to make a new root (every workload certificate is then issued again)`,
    );
  }
  return { certPem, keyPem };
}

/**
 * The shared root: read from the Secret, or made with `make` and stored there when there is none.
 * Throws when the API server cannot be read (the controller then does not start: it must not sign
 * with a root of its own).
 */
export async function sharedCaRoot(
  client: KubeClient,
  namespace: string,
  make: () => Promise<CaMaterial>,
  log: Logger,
): Promise<CaMaterial> {
  const path = `/api/v1/namespaces/${namespace}/secrets`;
  const existing = await read<Secret>(client, `${path}/${CA_SECRET_NAME}`);
  if (existing) return materialOf(existing, namespace);
  const made = await make();
  const secret: Secret = {
    apiVersion: "v1",
    kind: "Secret",
    metadata: { name: CA_SECRET_NAME, namespace, labels: LABELS },
    type: "Opaque",
    data: { "ca.pem": b64(made.certPem), "ca-key.pem": b64(made.keyPem) },
  };
  try {
    await client.request("POST", path, secret);
    log.info({ secret: `${namespace}/${CA_SECRET_NAME}` }, "workload CA root made and stored");
    return made;
  } catch (err) {
    if (!(err instanceof KubeApiError && err.code === 409)) throw err;
    // Another replica stored its root first: that one is the mesh's.
    const winner = await read<Secret>(client, `${path}/${CA_SECRET_NAME}`);
    if (!winner) throw new Error(`the Secret ${namespace}/${CA_SECRET_NAME} vanished while being created`);
    return materialOf(winner, namespace);
  }
}

/** Publishes the roots agents verify the controller with (ConfigMap nodemesh-ca-root, ca.pem). */
export async function publishCaRoot(client: KubeClient, namespace: string, rootPem: string): Promise<void> {
  const path = `/api/v1/namespaces/${namespace}/configmaps`;
  const current = await read<ConfigMap>(client, `${path}/${CA_ROOT_CONFIGMAP_NAME}`);
  if (current?.data?.["ca.pem"] === rootPem) return;
  const next: ConfigMap = {
    apiVersion: "v1",
    kind: "ConfigMap",
    metadata: {
      name: CA_ROOT_CONFIGMAP_NAME,
      namespace,
      labels: LABELS,
      ...(current ? { resourceVersion: current.metadata.resourceVersion } : {}),
    },
    data: { "ca.pem": rootPem },
  };
  try {
    if (current) await client.request("PUT", `${path}/${CA_ROOT_CONFIGMAP_NAME}`, next);
    else await client.request("POST", path, next);
  } catch (err) {
    // Another replica published at the same moment: the same root, since they share it.
    if (!(err instanceof KubeApiError && err.code === 409)) throw err;
  }
}
