// The leader's webhook certificate against the stand-in API server: issued once into the Secret,
// kept while valid, renewed in the last third of its life; the caBundle follows, and is put back
// when a re-applied configuration wiped it.
import { X509Certificate } from "node:crypto";
import pino from "pino";
import { afterEach, beforeEach, expect, it } from "vitest";
import { FakeApiServer } from "../../test/kubernetes/api-server.ts";
import { kubeConfigFor } from "../../test/kubernetes/kubeconfig.ts";
import { findManifest, renderManifests } from "../../test/kubernetes/manifests.ts";
import { issueWebhookCertificate } from "../webhook/certificate.ts";
import { KubeClient } from "./kube-client.ts";
import { WebhookCertificates } from "./webhook-certificates.ts";

let api: FakeApiServer;
const webhookConfiguration = findManifest(renderManifests(), "MutatingWebhookConfiguration", "nodemesh-injector");

beforeEach(async () => {
  api = new FakeApiServer({ bookmarkIntervalMs: 0 });
  await api.start();
  api.apply(structuredClone(webhookConfiguration));
});
afterEach(() => api.stop());

const manager = () =>
  new WebhookCertificates({
    client: new KubeClient(kubeConfigFor(api.url)),
    namespace: "nodemesh-system",
    secretName: "nodemesh-webhook-tls",
    serviceName: "nodemesh-controller",
    webhookConfigurationName: "nodemesh-injector",
    log: pino({ level: "silent" }),
  });
const secretFile = (file: string) =>
  Buffer.from(api.get("secrets", "nodemesh-system", "nodemesh-webhook-tls")?.data[file], "base64").toString("utf8");
const caBundle = () =>
  Buffer.from(
    api.get("mutatingwebhookconfigurations", undefined, "nodemesh-injector")?.webhooks[0].clientConfig.caBundle ?? "",
    "base64",
  ).toString("utf8");

it("issues a certificate for the controller Service's names and puts its CA in the caBundle", async () => {
  const ca = await manager().ensure();
  const leaf = new X509Certificate(secretFile("tls.crt"));
  expect(leaf.subjectAltName).toContain("DNS:nodemesh-controller.nodemesh-system.svc");
  expect(leaf.verify(new X509Certificate(ca).publicKey)).toBe(true);
  expect(secretFile("ca.crt")).toBe(ca);
  expect(caBundle()).toBe(ca);
  // The rest of the configuration is untouched.
  const stored = api.get("mutatingwebhookconfigurations", undefined, "nodemesh-injector");
  expect({
    ...stored?.webhooks[0],
    clientConfig: { ...stored?.webhooks[0].clientConfig, caBundle: undefined },
  }).toEqual({
    ...webhookConfiguration.webhooks[0],
    clientConfig: { ...webhookConfiguration.webhooks[0].clientConfig, caBundle: undefined },
  });
});

it("keeps a valid certificate, restores a wiped caBundle, renews one near its end", async () => {
  const ca = await manager().ensure();
  const rv = api.get("secrets", "nodemesh-system", "nodemesh-webhook-tls")?.metadata.resourceVersion;
  api.apply(structuredClone(webhookConfiguration)); // kubectl apply -k again: caBundle gone
  expect(await manager().ensure()).toBe(ca);
  expect(api.get("secrets", "nodemesh-system", "nodemesh-webhook-tls")?.metadata.resourceVersion).toBe(rv);
  expect(caBundle()).toBe(ca);

  // A certificate issued 300 days ago for a year is in its last third: renewed.
  const old = await issueWebhookCertificate({ dnsNames: ["x"], now: new Date(Date.now() - 300 * 86_400_000) });
  const secret = api.get("secrets", "nodemesh-system", "nodemesh-webhook-tls")!;
  secret.data["tls.crt"] = Buffer.from(old.certPem).toString("base64");
  api.apply(secret);
  const renewed = await manager().ensure();
  expect(renewed).not.toBe(ca);
  expect(caBundle()).toBe(renewed);
});
