// Configuration versions: "<store resourceVersion>.<endpoints generation>". Both parts only grow
// within one controller process, so comparing them as a pair orders tables by build time.

export function formatVersion(storeVersion: string, endpointsGeneration: number): string {
  return `${storeVersion}.${endpointsGeneration}`;
}

function parts(version: string): [number, number] {
  const [store, endpoints] = version.split(".");
  return [Number(store), Number(endpoints ?? 0)];
}

/** Negative when a is older than b, 0 when equal, positive when newer. */
export function compareVersions(a: string, b: string): number {
  const [sa, ea] = parts(a);
  const [sb, eb] = parts(b);
  return sa !== sb ? sa - sb : ea - eb;
}

export function isAtLeast(version: string | undefined, threshold: string): boolean {
  return version !== undefined && compareVersions(version, threshold) >= 0;
}
