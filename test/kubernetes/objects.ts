// Kubernetes objects as users write them (kubectl apply), for the stand-in API server.
import type { KubeObject } from "./api-server.ts";

export function namespace(name: string, annotations: Record<string, string> = {}): KubeObject {
  return {
    apiVersion: "v1",
    kind: "Namespace",
    metadata: { name, labels: { "kubernetes.io/metadata.name": name }, annotations },
  };
}

export function service(
  ns: string,
  name: string,
  clusterIP: string,
  ports: Record<string, unknown>[] = [
    { name: "http", port: 80, targetPort: 8080, protocol: "TCP", appProtocol: "http" },
  ],
  selector: Record<string, string> = { app: name },
): KubeObject {
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: { name, namespace: ns },
    spec: { type: "ClusterIP", clusterIP, clusterIPs: [clusterIP], selector, ports, sessionAffinity: "None" },
  };
}

export function httpRoute(ns: string, name: string, spec: Record<string, unknown>): KubeObject {
  return { apiVersion: "gateway.networking.k8s.io/v1", kind: "HTTPRoute", metadata: { name, namespace: ns }, spec };
}

export function trafficPolicy(ns: string, name: string, spec: Record<string, unknown>): KubeObject {
  return { apiVersion: "nodemesh.io/v1alpha1", kind: "TrafficPolicy", metadata: { name, namespace: ns }, spec };
}
