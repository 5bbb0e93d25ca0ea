// Which namespaced objects select a pod, for the kinds that apply where a pod is
// (AuthorizationPolicy, PeerAuthentication): an object with `targetRefs` selects the pods behind
// those Services of its namespace; one without selects every pod of its namespace; one in the
// mesh's root namespace without `targetRefs` selects every pod of the mesh (Istio's root
// namespace, here the namespace nodemesh is installed in).

export const MESH_ROOT_NAMESPACE = "nodemesh-system";

export interface Selecting<T> {
  readonly namespace: string;
  readonly targetRefs?: readonly { readonly name: string }[];
  readonly value: T;
}

/** The objects selecting one pod, the most specific level first. */
export interface PodSelection<T> {
  /** Through the Services it backs. */
  readonly workload: readonly T[];
  readonly namespace: readonly T[];
  readonly mesh: readonly T[];
}

export type PodSelector<T> = (ip: string, namespace: string) => PodSelection<T>;

const NONE: readonly never[] = [];

export function podSelector<T>(
  objects: readonly Selecting<T>[],
  services: readonly { name: string; namespace: string; endpoints: readonly { ip: string }[] }[],
): PodSelector<T> {
  const byNamespace = new Map<string, T[]>();
  const byService = new Map<string, T[]>();
  for (const o of objects) {
    const keys = o.targetRefs ? o.targetRefs.map((ref) => `${ref.name}.${o.namespace}`) : [o.namespace];
    const into = o.targetRefs ? byService : byNamespace;
    for (const key of keys) into.set(key, [...(into.get(key) ?? []), o.value]);
  }
  const byIp = new Map<string, Set<T>>();
  for (const svc of services) {
    const selecting = byService.get(`${svc.name}.${svc.namespace}`);
    if (!selecting) continue;
    for (const e of svc.endpoints) {
      const set = byIp.get(e.ip) ?? new Set();
      for (const value of selecting) set.add(value);
      byIp.set(e.ip, set);
    }
  }
  const mesh = byNamespace.get(MESH_ROOT_NAMESPACE) ?? NONE;
  return (ip, namespace) => ({
    workload: [...(byIp.get(ip) ?? NONE)],
    namespace: namespace === MESH_ROOT_NAMESPACE ? NONE : (byNamespace.get(namespace) ?? NONE),
    mesh,
  });
}

/**
 * What every object that selects a pod amounts to, whatever its level, built once per pod and
 * kept for the snapshot's life (bounded: a pod address is only ever a key here). `combine` gets
 * the selecting objects (never none) and may say the pod has nothing (undefined).
 */
export function podIndex<T, W>(
  objects: readonly Selecting<T>[],
  services: readonly { name: string; namespace: string; endpoints: readonly { ip: string }[] }[],
  combine: (selected: readonly T[]) => W | undefined,
): (ip: string, namespace: string) => W | undefined {
  const select = podSelector(objects, services);
  const built = new Map<string, W | undefined>();
  return (ip, namespace) => {
    const key = `${ip}|${namespace}`;
    if (built.has(key)) return built.get(key);
    const { workload, namespace: wide, mesh } = select(ip, namespace);
    const selected = [...workload, ...wide, ...mesh];
    const w = selected.length > 0 ? combine(selected) : undefined;
    if (built.size < 65_536) built.set(key, w);
    return w;
  };
}
