// A REST server on 127.0.0.1:<free port> over a MemoryStore, and a tiny client for the tests.

import { Registry } from "prom-client";
import type { TokenAuth } from "../auth.ts";
import { MemoryStore } from "../store/memory-store.ts";
import type { StatusFor } from "./kind-handler.ts";
import type { RestServer, RestServerOptions } from "./server.ts";
import { startRestServer } from "./server.ts";

export interface TestServer {
  store: MemoryStore;
  rest: RestServer;
  registry: Registry;
  call(method: string, path: string, options?: CallOptions): Promise<Reply>;
}

export interface CallOptions {
  /** An object is sent as JSON; a string is sent as is. */
  body?: unknown;
  contentType?: string;
  token?: string;
}

export interface Reply {
  status: number;
  headers: Headers;
  // biome-ignore lint/suspicious/noExplicitAny: tests read arbitrary response shapes
  body: any;
}

export async function startTestServer(
  options: { auth?: TokenAuth; statusFor?: StatusFor; store?: MemoryStore } & Partial<
    Pick<RestServerOptions, "views" | "maxWatches" | "maxWatchesPerClient" | "maxWatchBacklogBytes" | "preview">
  > = {},
): Promise<TestServer> {
  const store = options.store ?? new MemoryStore();
  const registry = new Registry();
  const rest = await startRestServer({ store, registry, host: "127.0.0.1", port: 0, ...options });
  const call = async (method: string, path: string, o: CallOptions = {}): Promise<Reply> => {
    const headers: Record<string, string> = {};
    if (o.token) headers["authorization"] = `Bearer ${o.token}`;
    let body: string | undefined;
    if (o.body !== undefined) {
      body = typeof o.body === "string" ? o.body : JSON.stringify(o.body);
      headers["content-type"] =
        o.contentType ?? (method === "PATCH" ? "application/merge-patch+json" : "application/json");
    }
    const res = await fetch(`${rest.url}${path}`, { method, headers, body });
    const text = await res.text();
    const isJson = res.headers.get("content-type")?.startsWith("application/json");
    return { status: res.status, headers: res.headers, body: isJson ? JSON.parse(text) : text };
  };
  return { store, rest, registry, call };
}

export const SERVICES = "/apis/nodemesh.io/v1alpha1/namespaces/default/services";

/** A VIP of its own per name: two Services on one VIP:port are refused (409). */
export function vipOf(name: string): string {
  let h = 0;
  for (const c of name) h = (h * 31 + c.charCodeAt(0)) >>> 0;
  return `10.96.${(h >>> 8) % 256}.${(h % 254) + 1}`;
}

export function service(name: string, spec: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    apiVersion: "nodemesh.io/v1alpha1",
    kind: "Service",
    metadata: { name, namespace: "default" },
    spec: { vip: vipOf(name), ports: [{ port: 80, protocol: "http" }], selector: { app: name }, ...spec },
  };
}

export const HTTPROUTES = "/apis/gateway.networking.k8s.io/v1/namespaces/default/httproutes";
export const GRPCROUTES = "/apis/gateway.networking.k8s.io/v1/namespaces/default/grpcroutes";
export const TRAFFICPOLICIES = "/apis/nodemesh.io/v1alpha1/namespaces/default/trafficpolicies";
export const AUTHORIZATIONPOLICIES = "/apis/nodemesh.io/v1alpha1/namespaces/default/authorizationpolicies";
export const PEERAUTHENTICATIONS = "/apis/nodemesh.io/v1alpha1/namespaces/default/peerauthentications";
export const REQUESTAUTHENTICATIONS = "/apis/nodemesh.io/v1alpha1/namespaces/default/requestauthentications";

export function httpRoute(name: string, spec: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    apiVersion: "gateway.networking.k8s.io/v1",
    kind: "HTTPRoute",
    metadata: { name, namespace: "default" },
    spec: {
      parentRefs: [{ name: "web", port: 80 }],
      rules: [
        {
          matches: [{ path: { type: "PathPrefix", value: "/v2" } }],
          backendRefs: [
            { name: "web-v2", weight: 90 },
            { name: "web-v1", weight: 10 },
          ],
        },
      ],
      ...spec,
    },
  };
}

export function grpcRoute(name: string, spec: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    apiVersion: "gateway.networking.k8s.io/v1",
    kind: "GRPCRoute",
    metadata: { name, namespace: "default" },
    spec: {
      parentRefs: [{ name: "greeter" }],
      rules: [{ matches: [{ method: { service: "helloworld.Greeter" } }], backendRefs: [{ name: "greeter-v2" }] }],
      ...spec,
    },
  };
}

export function trafficPolicy(name: string, spec: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    apiVersion: "nodemesh.io/v1alpha1",
    kind: "TrafficPolicy",
    metadata: { name, namespace: "default" },
    spec: {
      targetRefs: [{ name: "web" }],
      loadBalancer: { type: "ConsistentHash", consistentHash: { header: "x-user" } },
      timeouts: { request: "5s" },
      retries: { attempts: 3 },
      ...spec,
    },
  };
}

export function authorizationPolicy(name: string, spec: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    apiVersion: "nodemesh.io/v1alpha1",
    kind: "AuthorizationPolicy",
    metadata: { name, namespace: "default" },
    spec: {
      targetRefs: [{ name: "web" }],
      action: "ALLOW",
      rules: [{ from: [{ source: { principals: ["spiffe://cluster.local/ns/default/sa/client"] } }] }],
      ...spec,
    },
  };
}

export function peerAuthentication(name: string, spec: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    apiVersion: "nodemesh.io/v1alpha1",
    kind: "PeerAuthentication",
    metadata: { name, namespace: "default" },
    spec: { targetRefs: [{ name: "web" }], mtls: { mode: "STRICT" }, ...spec },
  };
}

export function requestAuthentication(name: string, spec: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    apiVersion: "nodemesh.io/v1alpha1",
    kind: "RequestAuthentication",
    metadata: { name, namespace: "default" },
    spec: {
      targetRefs: [{ name: "web" }],
      jwtRules: [{ issuer: "https://issuer.test", jwksUri: "https://issuer.test/jwks" }],
      ...spec,
    },
  };
}
