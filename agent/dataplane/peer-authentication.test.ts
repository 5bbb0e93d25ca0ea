import { describe, expect, it } from "vitest";
import { parseTrafficObject, type TrafficObject } from "../../api/traffic.ts";
import { compilePeerAuthentication } from "./peer-authentication.ts";

function peerAuthentication(namespace: string, name: string, spec: unknown): TrafficObject {
  const r = parseTrafficObject({ kind: "PeerAuthentication", name, namespace, spec });
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.value;
}

const SERVICES = [
  { name: "web", namespace: "shop", endpoints: [{ ip: "10.0.0.1" }] },
  { name: "db", namespace: "shop", endpoints: [{ ip: "10.0.0.2" }] },
];

describe("PeerAuthentication modes", () => {
  it("is PERMISSIVE when nothing says otherwise", () => {
    expect(compilePeerAuthentication([], SERVICES)("10.0.0.1", "shop", 80)).toBe("PERMISSIVE");
  });

  it("takes the most specific level that sets a mode: the pod's port, the pod, its namespace, the mesh", () => {
    const mode = compilePeerAuthentication(
      [
        peerAuthentication("nodemesh-system", "mesh", { mtls: { mode: "STRICT" } }),
        peerAuthentication("shop", "shop", { mtls: { mode: "PERMISSIVE" } }),
        peerAuthentication("shop", "web", {
          targetRefs: [{ name: "web" }],
          portLevelMtls: { "8080": { mode: "STRICT" } },
        }),
      ],
      SERVICES,
    );
    expect(mode("10.0.0.1", "shop", 8080)).toBe("STRICT"); // the pod's port
    expect(mode("10.0.0.1", "shop", 9000)).toBe("PERMISSIVE"); // no pod-level mode: the namespace's
    expect(mode("10.0.0.2", "shop", 8080)).toBe("PERMISSIVE"); // the namespace's
    expect(mode("10.0.0.9", "other", 8080)).toBe("STRICT"); // the mesh's
  });

  it("does not let an object of one namespace select another namespace's pods", () => {
    const mode = compilePeerAuthentication(
      [peerAuthentication("other", "all", { mtls: { mode: "STRICT" } })],
      SERVICES,
    );
    expect(mode("10.0.0.1", "shop", 80)).toBe("PERMISSIVE");
    expect(mode("10.0.0.7", "other", 80)).toBe("STRICT");
  });
});
