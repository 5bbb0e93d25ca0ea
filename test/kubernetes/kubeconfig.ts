// A KubeConfig (and its file) pointing at the stand-in API server.
import { writeFileSync } from "node:fs";
import { KubeConfig } from "@kubernetes/client-node";
import { stringify } from "yaml";

function document(server: string) {
  return {
    apiVersion: "v1",
    kind: "Config",
    clusters: [{ name: "stand-in", cluster: { server, "insecure-skip-tls-verify": true } }],
    users: [{ name: "controller", user: { token: "stand-in-token" } }],
    contexts: [{ name: "stand-in", context: { cluster: "stand-in", user: "controller" } }],
    "current-context": "stand-in",
  };
}

export function kubeConfigFor(server: string): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromString(stringify(document(server)));
  return kc;
}

export function writeKubeConfig(path: string, server: string): string {
  writeFileSync(path, stringify(document(server)));
  return path;
}
