// Field paths written the way kubectl users read them: `spec.ports[1].port`. The REST API's 422
// causes and the agent's service-table errors use the same form.
//
// An unknown field is answered with the nearest field the schema accepts at that place
// (`spec.faults: unknown field; did you mean "faultInjection"?`), read from the zod schema itself,
// so every kind gets suggestions without a list of its own.

import type { z } from "zod";

export function fieldPath(path: ReadonlyArray<PropertyKey>): string {
  let out = "";
  for (const part of path) {
    if (typeof part === "number") out += `[${part}]`;
    else out += out ? `.${String(part)}` : String(part);
  }
  return out;
}

type Schema = z.core.$ZodType;
/** The parts of a zod 4 definition this walk reads. */
interface Def {
  type: string;
  shape?: Record<string, Schema>;
  innerType?: Schema;
  in?: Schema;
  element?: Schema;
  valueType?: Schema;
  options?: Schema[];
  left?: Schema;
  right?: Schema;
  items?: Schema[];
  getter?: () => Schema;
}

/** How deep a lazy (recursive) schema is followed: far beyond any real field path. */
const MAX_DEPTH = 64;

/** The object schemas `path` may lead to inside `schema`: a union leads to each of its branches. */
function objectsAt(schema: Schema, path: ReadonlyArray<PropertyKey>, depth = 0): Def[] {
  if (depth > MAX_DEPTH) return [];
  const def = schema._zod.def as unknown as Def;
  const next = (inner: Schema | undefined, rest = path) => (inner ? objectsAt(inner, rest, depth + 1) : []);
  switch (def.type) {
    case "optional":
    case "nullable":
    case "default":
    case "prefault":
    case "nonoptional":
    case "readonly":
    case "catch":
      return next(def.innerType);
    case "pipe":
      return next(def.in);
    case "lazy":
      return next(def.getter?.());
    case "union":
      return (def.options ?? []).flatMap((option) => next(option));
    case "intersection":
      return [...next(def.left), ...next(def.right)];
  }
  if (path.length === 0) return def.type === "object" ? [def] : [];
  const [head, ...rest] = path;
  switch (def.type) {
    case "object":
      return typeof head === "string" ? next(def.shape?.[head], rest) : [];
    case "array":
      return next(def.element, rest);
    case "tuple":
      return typeof head === "number" ? next(def.items?.[head], rest) : [];
    case "record":
      return next(def.valueType, rest);
    default:
      return [];
  }
}

/** The field names the schema accepts in the object at `path`. */
export function fieldsAt(schema: Schema, path: ReadonlyArray<PropertyKey>): string[] {
  return [...new Set(objectsAt(schema, path).flatMap((def) => Object.keys(def.shape ?? {})))];
}

/** Levenshtein distance, with a transposition counting as one edit (Damerau, optimal string alignment). */
function editDistance(a: string, b: string): number {
  const rows = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) rows[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      rows[i][j] = Math.min(rows[i - 1][j] + 1, rows[i][j - 1] + 1, rows[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        rows[i][j] = Math.min(rows[i][j], rows[i - 2][j - 2] + 1);
      }
    }
  }
  return rows[a.length][b.length];
}

const normalized = (name: string) => name.toLowerCase().replace(/[^a-z0-9]/g, "");

function commonPrefix(a: string, b: string): number {
  let n = 0;
  while (n < a.length && n < b.length && a[n] === b[n]) n++;
  return n;
}

/** Longer unknown keys get no "did you mean": see nearestField. */
const MAX_SUGGESTED_KEY = 128;

/**
 * The known field a mistyped `key` most likely meant, or undefined when none is close: the same
 * letters in another case or spelling (`target_refs`), a few edits away (`retrys`), or the same
 * word stem (`faults` → `faultInjection`, `retry` → `retries`). The fewest edits win.
 */
export function nearestField(key: string, known: readonly string[]): string | undefined {
  // The edit distance costs key × name: a megabyte-long key (a hostile body) would cost seconds and
  // hundreds of MB. Nobody mistypes a field name that long.
  if (key.length > MAX_SUGGESTED_KEY) return undefined;
  const typed = normalized(key);
  let best: { name: string; distance: number } | undefined;
  for (const name of known) {
    if (name === key) continue; // known in another branch of a union: no help
    const candidate = normalized(name);
    const distance = editDistance(typed, candidate);
    const shorter = Math.min(typed.length, candidate.length);
    const fewEdits = distance <= Math.max(1, Math.min(3, Math.floor(shorter / 3)));
    const prefix = commonPrefix(typed, candidate);
    const sameStem = prefix >= 4 && prefix >= 0.6 * shorter;
    if ((fewEdits || sameStem) && (!best || distance < best.distance)) best = { name, distance };
  }
  return best?.name;
}

/** The message for an unknown `key` in the object at `objectPath` of `schema`, with a suggestion when one is near. */
export function unknownFieldMessage(schema: Schema, objectPath: ReadonlyArray<PropertyKey>, key: string): string {
  const suggestion = nearestField(key, fieldsAt(schema, objectPath));
  return suggestion ? `unknown field; did you mean "${suggestion}"?` : "unknown field";
}

export interface FieldError {
  /** Where, from the root of what `schema` parsed. */
  path: PropertyKey[];
  message: string;
  issue: z.core.$ZodIssue;
}

/**
 * The issues of a failed `schema.safeParse` as one error per bad field: zod reports the unknown keys
 * of an object as one issue at the object; here each is its own field, with the nearest known one.
 */
export function fieldErrors(schema: Schema, issues: readonly z.core.$ZodIssue[]): FieldError[] {
  return issues.flatMap((issue): FieldError[] =>
    issue.code === "unrecognized_keys"
      ? issue.keys.map((key) => ({
          path: [...issue.path, key],
          message: unknownFieldMessage(schema, issue.path, key),
          issue,
        }))
      : [{ path: [...issue.path], message: issue.message, issue }],
  );
}
