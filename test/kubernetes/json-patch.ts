// RFC 6902 JSON Patch, the `add` operation (the only one the injector emits), as the API server
// applies a mutating webhook's answer. Anything else is refused loudly rather than half-applied.

type Json = unknown;

function unescapeSegment(segment: string): string {
  return segment.replaceAll("~1", "/").replaceAll("~0", "~");
}

export function applyJsonPatch<T>(doc: T, patch: readonly { op: string; path: string; value?: Json }[]): T {
  const out = structuredClone(doc) as Json;
  for (const { op, path, value } of patch) {
    if (op !== "add") throw new Error(`json patch: op ${op} not supported here`);
    const segments = path.split("/").slice(1).map(unescapeSegment);
    const last = segments.pop();
    if (last === undefined) throw new Error("json patch: cannot replace the whole document");
    let parent = out as Record<string, Json> | Json[];
    for (const s of segments) {
      const next = Array.isArray(parent) ? parent[Number(s)] : parent[s];
      if (typeof next !== "object" || next === null) throw new Error(`json patch: ${path}: ${s} does not exist`);
      parent = next as Record<string, Json>;
    }
    if (Array.isArray(parent)) {
      const index = last === "-" ? parent.length : Number(last);
      if (!Number.isInteger(index) || index < 0 || index > parent.length)
        throw new Error(`json patch: ${path}: bad index`);
      parent.splice(index, 0, structuredClone(value));
    } else {
      parent[last] = structuredClone(value);
    }
  }
  return out as T;
}
