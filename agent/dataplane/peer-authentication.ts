// PeerAuthentication at the destination's agent: the mTLS mode of a pod's port, from the most
// specific object that sets one (the pod's own, then its namespace's, then the mesh's), compiled
// once per snapshot. Enforced in inbound.ts: STRICT refuses plaintext tunnels (403
// NM_MTLS_REQUIRED) and callers outside the mesh (a reset); read by the caller's agent too, which
// tunnels in plaintext to a DISABLE port (mtls.ts tunnelIdentity).

import type { PeerAuthenticationSpec, TrafficObject } from "../../api/traffic.ts";
import { podSelector } from "./pod-selection.ts";

export type MtlsMode = "PERMISSIVE" | "STRICT" | "DISABLE";

/** The mode of `port` on the pod at `ip` in `namespace`. */
export type PeerAuthenticationIndex = (ip: string, namespace: string, port: number) => MtlsMode;

export const ALL_PERMISSIVE: PeerAuthenticationIndex = () => "PERMISSIVE";

export function compilePeerAuthentication(
  traffic: readonly TrafficObject[],
  services: readonly { name: string; namespace: string; endpoints: readonly { ip: string }[] }[],
): PeerAuthenticationIndex {
  // Sorted by name within each level (the table's order): the first that sets a mode wins.
  const objects = traffic.flatMap((o) =>
    o.kind === "PeerAuthentication" ? [{ namespace: o.namespace, targetRefs: o.spec.targetRefs, value: o.spec }] : [],
  );
  if (objects.length === 0) return ALL_PERMISSIVE;
  const select = podSelector<PeerAuthenticationSpec>(objects, services);
  return (ip, namespace, port) => {
    const { workload, namespace: wide, mesh } = select(ip, namespace);
    for (const spec of workload) {
      const mode = spec.portLevelMtls?.[String(port)]?.mode ?? spec.mtls?.mode;
      if (mode) return mode;
    }
    for (const spec of [...wide, ...mesh]) if (spec.mtls) return spec.mtls.mode;
    return "PERMISSIVE";
  };
}
