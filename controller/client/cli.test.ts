// `nodemesh apply | get | delete` against a REST server in this process, output captured.

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { startTestServer, type TestServer } from "../rest/test-server.fixture.ts";
import { runClient } from "./cli.ts";

const MESH = `
apiVersion: nodemesh.io/v1alpha1
kind: Service
metadata: { name: web }
spec:
  vip: 10.96.0.10
  ports: [{ name: http, port: 80, targetPort: 8080 }]
  selector: { app: web }
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: web-split }
spec:
  parentRefs: [{ name: web, port: 80 }]
  rules:
    - matches: [{ path: { type: PathPrefix, value: /v2 } }]
      backendRefs: [{ name: web-v2, weight: 90 }, { name: web-v1, weight: 10 }]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: { name: greeter }
spec:
  parentRefs: [{ name: greeter }]
  rules: [{ backendRefs: [{ name: greeter-v2 }] }]
---
apiVersion: nodemesh.io/v1alpha1
kind: TrafficPolicy
metadata: { name: web }
spec:
  targetRefs: [{ name: web }]
  timeouts: { request: 2s }
  retries: { attempts: 3 }
`;

let t: TestServer;
let dir: string;
let out: string[];
let err: string[];

beforeEach(async () => {
  t = await startTestServer();
  dir = mkdtempSync(join(tmpdir(), "nodemesh-cli-"));
  out = [];
  err = [];
  vi.spyOn(console, "log").mockImplementation((line: string) => void out.push(line));
  vi.spyOn(process.stdout, "write").mockImplementation((text) => out.push(String(text)) > 0);
  vi.spyOn(process.stderr, "write").mockImplementation((text) => err.push(String(text)) > 0);
});

afterEach(async () => {
  vi.restoreAllMocks();
  await t.rest.close();
  rmSync(dir, { recursive: true, force: true });
});

function cli(command: string, ...args: string[]): Promise<number> {
  out = [];
  err = [];
  return runClient(command, [...args, "--server", t.rest.url]);
}

/** What was printed, line by line. */
function lines(): string[] {
  return out.join("\n").split("\n");
}

function file(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

describe("nodemesh apply, get, delete", () => {
  it("applies every kind from one YAML file, then reports them unchanged or configured", async () => {
    const path = file("mesh.yaml", MESH);
    expect(await cli("apply", "-f", path)).toBe(0);
    expect(out).toEqual([
      "service/web created",
      "httproute/web-split created",
      "grpcroute/greeter created",
      "trafficpolicy/web created",
    ]);
    expect(t.store.get({ plural: "httproutes", namespace: "default", name: "web-split" })?.apiVersion).toBe(
      "gateway.networking.k8s.io/v1",
    );

    // Stored specs carry defaults; the file's do not: still the same.
    expect(await cli("apply", "-f", path)).toBe(0);
    expect(out).toEqual([
      "service/web unchanged",
      "httproute/web-split unchanged",
      "grpcroute/greeter unchanged",
      "trafficpolicy/web unchanged",
    ]);

    expect(await cli("apply", "-f", file("changed.yaml", MESH.replace("attempts: 3", "attempts: 4")))).toBe(0);
    expect(out).toContain("trafficpolicy/web configured");
  });

  it("lists each kind with its own columns, and deletes", async () => {
    await cli("apply", "-f", file("mesh.yaml", MESH));
    expect(await cli("get", "services")).toBe(0);
    expect(lines()).toEqual([
      expect.stringMatching(/^NAMESPACE\s+NAME\s+VIP\s+PORTS\s+APPLIED\s+AGE$/),
      expect.stringMatching(/^default\s+web\s+10\.96\.0\.10\s+80\/auto\s/), // no protocol: detected
    ]);

    expect(await cli("get", "httproutes")).toBe(0);
    expect(lines()).toEqual([
      expect.stringMatching(/^NAMESPACE\s+NAME\s+PARENTS\s+RULES\s+APPLIED\s+AGE$/),
      expect.stringMatching(/^default\s+web-split\s+web:80\s+1\s/),
    ]);

    expect(await cli("get", "trafficpolicy", "web", "-o", "json")).toBe(0);
    expect(JSON.parse(out[0]!)).toMatchObject({ kind: "TrafficPolicy", spec: { targetRefs: [{ name: "web" }] } });

    expect(await cli("get", "grpcroutes", "-A")).toBe(0);
    expect(out[0]).toMatch(/greeter\s+greeter\s+1/);

    expect(await cli("delete", "httproute", "web-split")).toBe(0);
    expect(out).toEqual(["httproute/web-split deleted"]);
    expect(await cli("get", "httproutes")).toBe(0);
    expect(out).toEqual(["No httproutes found."]);
  });

  it("prints every bad field of a refused object", async () => {
    const bad = MESH.replace("{ type: PathPrefix, value: /v2 }", "{ type: RegularExpression, value: '(a+)+' }").replace(
      "weight: 10",
      "weight: -1",
    );
    expect(await cli("apply", "-f", file("bad.yaml", bad))).toBe(1);
    expect(err.join("")).toContain("422: HTTPRoute");
    expect(err.join("")).toContain("spec.rules[0].matches[0].path.value: nested quantifiers");
    expect(err.join("")).toContain("spec.rules[0].backendRefs[1].weight");
    expect(t.store.list("httproutes")).toEqual([]);
  });
});
