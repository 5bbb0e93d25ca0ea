// The leader keeps the injection webhook's certificate: the Secret `nodemesh-webhook-tls` (tls.crt,
// tls.key, ca.crt; every replica serves it from its mounted copy) is issued when missing,
// unreadable or in the last third of its life, and the MutatingWebhookConfiguration's caBundle
// is kept equal to its ca.crt (checked on every pass, so a re-applied configuration is fixed).

import type { Logger } from "pino";
import { issueWebhookCertificate, renewalDue, serviceDnsNames } from "../webhook/certificate.ts";
import { KubeApiError, type KubeClient } from "./kube-client.ts";

export interface WebhookCertificatesOptions {
  client: KubeClient;
  namespace: string;
  secretName: string;
  serviceName: string;
  webhookConfigurationName: string;
  log: Logger;
  validityDays?: number;
}

interface Secret {
  apiVersion: "v1";
  kind: "Secret";
  metadata: { name: string; namespace: string; resourceVersion?: string };
  type?: string;
  data?: Record<string, string>;
}

const b64 = (s: string) => Buffer.from(s).toString("base64");
const unb64 = (s: string | undefined) => (s ? Buffer.from(s, "base64").toString("utf8") : "");

export class WebhookCertificates {
  readonly #o: WebhookCertificatesOptions;

  constructor(options: WebhookCertificatesOptions) {
    this.#o = options;
  }

  /** Issues or renews the certificate if needed and fixes the caBundle; returns the CA in force. */
  async ensure(): Promise<string> {
    const { client, namespace, secretName } = this.#o;
    const path = `/api/v1/namespaces/${namespace}/secrets`;
    let secret: Secret | undefined;
    try {
      secret = await client.get<Secret>(`${path}/${secretName}`);
    } catch (err) {
      if (!(err instanceof KubeApiError && err.code === 404)) throw err;
    }
    let ca = unb64(secret?.data?.["ca.crt"]);
    if (!secret || !ca || renewalDue(unb64(secret.data?.["tls.crt"]))) {
      const issued = await issueWebhookCertificate({
        dnsNames: serviceDnsNames(this.#o.serviceName, namespace),
        validityDays: this.#o.validityDays ?? 365,
      });
      const next: Secret = {
        apiVersion: "v1",
        kind: "Secret",
        metadata: {
          name: secretName,
          namespace,
          ...(secret ? { resourceVersion: secret.metadata.resourceVersion } : {}),
        },
        type: "kubernetes.io/tls",
        data: { "tls.crt": b64(issued.certPem), "tls.key": b64(issued.keyPem), "ca.crt": b64(issued.caPem) },
      };
      // Create, or replace under the resourceVersion read: a 409 means another leader just did it.
      if (secret) await client.request("PUT", `${path}/${secretName}`, next);
      else await client.request("POST", path, next);
      this.#o.log.info(
        { secret: `${namespace}/${secretName}`, notAfter: issued.notAfter },
        "webhook certificate issued",
      );
      ca = issued.caPem;
    }
    await this.#ensureCaBundle(ca);
    return ca;
  }

  async #ensureCaBundle(caPem: string): Promise<void> {
    const path = `/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/${this.#o.webhookConfigurationName}`;
    const config = await this.#o.client.get<{
      metadata: { resourceVersion?: string };
      webhooks?: { clientConfig?: { caBundle?: string } }[];
    }>(path);
    const bundle = b64(caPem);
    const webhooks = config.webhooks ?? [];
    if (webhooks.every((w) => w.clientConfig?.caBundle === bundle)) return;
    // A merge patch replaces the list: send it whole, as read, under its resourceVersion.
    await this.#o.client.mergePatch(path, {
      metadata: { resourceVersion: config.metadata.resourceVersion },
      webhooks: webhooks.map((w) => ({ ...w, clientConfig: { ...w.clientConfig, caBundle: bundle } })),
    });
    this.#o.log.info({ webhookConfiguration: this.#o.webhookConfigurationName }, "webhook caBundle updated");
  }
}
