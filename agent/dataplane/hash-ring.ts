// The consistent-hash ring of a backend (built once per snapshot) and the hash it uses.

import type { Endpoint } from "./endpoint.ts";

const RING_POINTS_PER_ENDPOINT = 64;
export interface HashRing {
  readonly hashes: Uint32Array;
  readonly owners: readonly Endpoint[];
}

/** FNV-1a, 32 bit: cheap and well spread for short keys. */
export function hash32(key: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  // Final avalanche (murmur3 fmix32) so that similar keys land far apart on the ring.
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

export function buildHashRing(endpoints: readonly Endpoint[]): HashRing {
  const points: { hash: number; owner: Endpoint }[] = [];
  for (const e of endpoints) {
    for (let i = 0; i < RING_POINTS_PER_ENDPOINT; i++)
      points.push({ hash: hash32(`${e.ip}:${e.port}#${i}`), owner: e });
  }
  points.sort((a, b) => a.hash - b.hash);
  return { hashes: Uint32Array.from(points, (p) => p.hash), owners: points.map((p) => p.owner) };
}
