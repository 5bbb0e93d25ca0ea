// `nodemesh controller --source kubernetes`: the Kubernetes parts of the controller, assembled.
// - the source (informers → read-only mirror store) replaces the file store;
// - the injection webhook is served by every replica;
// - the Lease leader writes status and keeps the webhook's certificate;
// - node bindings live in a Secret shared by every replica (node-bindings-secret.ts).
// The agent server is started only once the source has listed everything: an agent must never
// receive an empty table because the controller had not read Kubernetes yet.

import { hostname } from "node:os";
import type { Logger } from "pino";
import type { PropagationStatus } from "../../api/resources.ts";
import type { ObjectKey, Store } from "../store/store.ts";
import { DEFAULT_INIT_COMMAND, type InjectionConfig } from "../webhook/inject.ts";
import { WebhookServer } from "../webhook/webhook-server.ts";
import { type CaMaterial, publishCaRoot, sharedCaRoot } from "./ca-secret.ts";
import { KubeClient, loadKubeConfig } from "./kube-client.ts";
import { KubernetesSource } from "./kubernetes-source.ts";
import { LeaderElection } from "./leader-election.ts";
import { SecretNodeBindings } from "./node-bindings-secret.ts";
import { StatusWriter } from "./status-writer.ts";
import { WebhookCertificates } from "./webhook-certificates.ts";

/** Names the manifests in deploy/kubernetes give these objects. */
export const LEASE_NAME = "nodemesh-controller";
export const SERVICE_NAME = "nodemesh-controller";
export const WEBHOOK_SECRET_NAME = "nodemesh-webhook-tls";
export const WEBHOOK_CONFIGURATION_NAME = "nodemesh-injector";
const CERTIFICATE_CHECK_MS = 60 * 60_000;

export interface KubernetesModeOptions {
  /** A kubeconfig file; absent: the in-cluster service account. */
  kubeconfig?: string;
  /** The controller's own namespace (Lease, Secret, Service). */
  namespace: string;
  /** This replica's name in the Lease (the pod name). */
  identity?: string;
  webhook?: {
    host: string;
    port: number;
    tlsDir: string;
    /** The init container's image; absent: this controller's own image, read from its pod. */
    image?: string;
  };
  statusIntervalMs?: number;
  leaseDurationMs?: number;
  retryPeriodMs?: number;
  log: Logger;
}

export class KubernetesMode {
  readonly source: KubernetesSource;
  readonly #o: KubernetesModeOptions;
  readonly #client: KubeClient;
  #election?: LeaderElection;
  #status?: StatusWriter;
  #webhook?: WebhookServer;
  #certificates?: WebhookCertificates;
  #certificateTimer?: NodeJS.Timeout;
  #injection?: InjectionConfig;
  #bindings?: SecretNodeBindings;

  constructor(options: KubernetesModeOptions) {
    this.#o = options;
    this.#client = new KubeClient(loadKubeConfig(options.kubeconfig));
    this.source = new KubernetesSource({ client: this.#client, log: options.log.child({ component: "kubernetes" }) });
  }

  get store(): Store {
    return this.source.store;
  }

  get webhookPort(): number | undefined {
    return this.#webhook?.port;
  }

  get leading(): boolean {
    return this.#election?.leading ?? false;
  }

  /** Lists everything once (retrying while the API server cannot be reached), and serves the webhook. */
  async startSource(): Promise<void> {
    await this.source.start();
    const waiting = setInterval(
      () => this.#o.log.info("waiting for the Kubernetes API server to list objects"),
      10_000,
    );
    try {
      await this.source.synced;
    } finally {
      clearInterval(waiting);
    }
    if (this.#o.webhook) await this.#startWebhook(this.#o.webhook);
  }

  /** The node bindings, in a Secret of the controller's namespace shared by every replica; read once here. */
  async nodeBindings(refreshMs?: number): Promise<SecretNodeBindings> {
    const log = this.#o.log.child({ component: "node-bindings" });
    this.#bindings = new SecretNodeBindings({
      client: this.#client,
      namespace: this.#o.namespace,
      log,
      ...(refreshMs !== undefined ? { refreshMs } : {}),
    });
    // Claims read the Secret themselves: a failed first read only delays what the REST listing shows.
    await this.#bindings
      .load()
      .catch((err) => log.warn({ err: (err as Error).message }, "could not read the node bindings yet"));
    return this.#bindings;
  }

  /**
   * The workload CA's root, shared by every replica through a Secret (made with `make` by the first
   * replica), and published for agents in a ConfigMap (ca-secret.ts).
   */
  async sharedCaRoot(make: () => Promise<CaMaterial>): Promise<CaMaterial> {
    const log = this.#o.log.child({ component: "workload-ca" });
    const root = await sharedCaRoot(this.#client, this.#o.namespace, make, log);
    await this.publishCaRoot(root.certPem);
    return root;
  }

  /** Publishes the roots agents verify the controller with (the ConfigMap nodemesh-ca-root). */
  publishCaRoot(rootsPem: string): Promise<void> {
    return publishCaRoot(this.#client, this.#o.namespace, rootsPem);
  }

  /** Leader election; the leader writes status (propagation from the agent server) and certificates. */
  startLeaderDuties(propagation: (key: ObjectKey) => PropagationStatus | undefined): void {
    const log = this.#o.log.child({ component: "leader" });
    this.#status = new StatusWriter({
      client: this.#client,
      source: this.source,
      propagation,
      log,
      ...(this.#o.statusIntervalMs ? { intervalMs: this.#o.statusIntervalMs } : {}),
    });
    if (this.#o.webhook)
      this.#certificates = new WebhookCertificates({
        client: this.#client,
        namespace: this.#o.namespace,
        secretName: WEBHOOK_SECRET_NAME,
        serviceName: SERVICE_NAME,
        webhookConfigurationName: WEBHOOK_CONFIGURATION_NAME,
        log,
      });
    this.#election = new LeaderElection({
      client: this.#client,
      namespace: this.#o.namespace,
      name: LEASE_NAME,
      identity: this.#o.identity ?? hostname(),
      log,
      ...(this.#o.leaseDurationMs ? { leaseDurationMs: this.#o.leaseDurationMs } : {}),
      ...(this.#o.retryPeriodMs ? { retryPeriodMs: this.#o.retryPeriodMs } : {}),
      onStartedLeading: () => {
        this.#status?.start();
        if (this.#certificates) {
          const check = () =>
            this.#certificates
              ?.ensure()
              .catch((err) => log.error({ err: (err as Error).message }, "webhook certificate not ensured"));
          void check();
          this.#certificateTimer = setInterval(check, CERTIFICATE_CHECK_MS);
        }
      },
      onStoppedLeading: () => {
        this.#status?.stop();
        clearInterval(this.#certificateTimer);
      },
    });
    this.#election.start();
  }

  async stop(): Promise<void> {
    clearInterval(this.#certificateTimer);
    this.#status?.stop();
    await this.#election?.stop();
    await this.#webhook?.close();
    this.#bindings?.close();
    await this.source.stop();
  }

  async #startWebhook(opts: NonNullable<KubernetesModeOptions["webhook"]>): Promise<void> {
    const image = opts.image ?? (await this.#ownImage());
    this.#injection = { image, command: DEFAULT_INIT_COMMAND };
    const injection = this.#injection;
    this.#webhook = new WebhookServer({
      host: opts.host,
      port: opts.port,
      tlsDir: opts.tlsDir,
      injection: () => injection,
      namespaceAnnotations: (name) => this.source.namespaceAnnotations(name),
      log: this.#o.log.child({ component: "webhook" }),
    });
    // The certificate may not exist yet (the leader writes it): serve once it does.
    await this.#webhook.start(false);
  }

  /** The image of this controller's container: the init container runs the same image. */
  async #ownImage(): Promise<string> {
    const pod = process.env.POD_NAME;
    if (!pod)
      throw new Error("--inject-image is needed outside a pod (no $POD_NAME to read the controller's image from)");
    const self = await this.#client.get<{ spec?: { containers?: { name: string; image: string }[] } }>(
      `/api/v1/namespaces/${this.#o.namespace}/pods/${pod}`,
    );
    const containers = self.spec?.containers ?? [];
    const image = (containers.find((c) => c.name === "controller") ?? containers[0])?.image;
    if (!image) throw new Error(`pod ${this.#o.namespace}/${pod} has no container image`);
    return image;
  }
}
