// AdmissionReview v1 requests in the shape a real API server sends for a pod CREATE (as a
// ReplicaSet controller creates a Deployment's pods: generateName, owner, no name yet).

import { randomUUID } from "node:crypto";

// biome-ignore lint/suspicious/noExplicitAny: pods are plain JSON trees here
export type PodJson = Record<string, any>;

export function deploymentPod(opts: {
  namespace: string;
  app: string;
  annotations?: Record<string, string>;
  spec?: PodJson;
}): PodJson {
  return {
    kind: "Pod",
    apiVersion: "v1",
    metadata: {
      generateName: `${opts.app}-7d9f8c6b5-`,
      namespace: opts.namespace,
      creationTimestamp: null,
      labels: { app: opts.app, "pod-template-hash": "7d9f8c6b5" },
      ...(opts.annotations ? { annotations: opts.annotations } : {}),
      ownerReferences: [
        {
          apiVersion: "apps/v1",
          kind: "ReplicaSet",
          name: `${opts.app}-7d9f8c6b5`,
          uid: randomUUID(),
          controller: true,
          blockOwnerDeletion: true,
        },
      ],
    },
    spec: {
      containers: [
        {
          name: opts.app,
          image: "registry.example/app:1",
          ports: [{ containerPort: 8080, protocol: "TCP" }],
          resources: {},
          terminationMessagePath: "/dev/termination-log",
          terminationMessagePolicy: "File",
          imagePullPolicy: "IfNotPresent",
        },
      ],
      restartPolicy: "Always",
      terminationGracePeriodSeconds: 30,
      dnsPolicy: "ClusterFirst",
      serviceAccountName: "reviews",
      serviceAccount: "reviews",
      securityContext: {},
      schedulerName: "default-scheduler",
      enableServiceLinks: true,
      preemptionPolicy: "PreemptLowerPriority",
      ...opts.spec,
    },
    status: {},
  };
}

export function admissionReview(pod: PodJson, opts: { operation?: string; namespace?: string } = {}): PodJson {
  const gvk = { group: "", version: "v1", kind: "Pod" };
  const gvr = { group: "", version: "v1", resource: "pods" };
  return {
    kind: "AdmissionReview",
    apiVersion: "admission.k8s.io/v1",
    request: {
      uid: randomUUID(),
      kind: gvk,
      resource: gvr,
      requestKind: gvk,
      requestResource: gvr,
      namespace: opts.namespace ?? pod.metadata?.namespace,
      operation: opts.operation ?? "CREATE",
      userInfo: {
        username: "system:serviceaccount:kube-system:replicaset-controller",
        uid: randomUUID(),
        groups: ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"],
      },
      object: pod,
      oldObject: null,
      dryRun: false,
      options: { kind: "CreateOptions", apiVersion: "meta.k8s.io/v1", fieldManager: "kube-controller-manager" },
    },
  };
}

/** POSTs a body (an object, or raw text) to the webhook as the API server does: HTTPS, checking the CA. */
export async function postToWebhook(
  url: string,
  caPem: string,
  body: unknown,
  opts: { contentType?: string; method?: string; servername?: string; netnsPath?: string } = {},
): Promise<{ status: number; json: PodJson | undefined; text: string }> {
  const { request } = await import("node:https");
  const payload = typeof body === "string" ? body : JSON.stringify(body);
  // From inside a test world's namespace (as the API server reaches the webhook's pod).
  const viaNetns = opts.netnsPath
    ? await netnsConnector(opts.netnsPath, new URL(url), caPem, opts.servername)
    : undefined;
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method: opts.method ?? "POST",
        ca: caPem,
        ...(opts.servername ? { servername: opts.servername } : {}),
        headers: {
          "content-type": opts.contentType ?? "application/json",
          "content-length": Buffer.byteLength(payload),
        },
        timeout: 10_000,
        ...(viaNetns ? { createConnection: viaNetns } : { agent: false }),
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          let json: PodJson | undefined;
          try {
            json = JSON.parse(text);
          } catch {}
          resolve({ status: res.statusCode ?? 0, json, text });
        });
        res.on("error", reject);
      },
    );
    req.on("timeout", () => req.destroy(new Error("webhook did not answer in 10 s")));
    req.on("error", reject);
    req.end(payload);
  });
}

/** The pod as the API server stores it after the webhook's answer (its JSON patch applied). */
export async function admittedPod(pod: PodJson, response: PodJson): Promise<PodJson> {
  const { applyJsonPatch } = await import("./json-patch.ts");
  if (!response.allowed) throw new Error(`pod refused: ${response.status?.message}`);
  if (!response.patch) return pod;
  return applyJsonPatch(pod, JSON.parse(Buffer.from(response.patch, "base64").toString("utf8")));
}

async function netnsConnector(netnsPath: string, url: URL, caPem: string, servername?: string) {
  const [{ connect }, net, { connectableFd, Netns }] = await Promise.all([
    import("node:tls"),
    import("node:net"),
    import("../../agent/sys/linux.ts"),
  ]);
  return () => {
    const ns = Netns.open(netnsPath);
    try {
      const raw = new net.Socket({ fd: connectableFd(ns, 0), readable: true, writable: true });
      raw.connect(Number(url.port || 443), url.hostname);
      return connect({ socket: raw, ca: caPem, ...(servername ? { servername } : {}) });
    } finally {
      ns.close();
    }
  };
}
