// Turns zod issues into Kubernetes Status causes: one cause per bad field, with its path written
// the way kubectl users read it (`spec.ports[1].port`); an unknown field names the nearest known one.

import type { z } from "zod";
import { fieldErrors, fieldPath } from "../../api/field-path.ts";
import type { StatusCause } from "./errors.ts";

type Issue = z.core.$ZodIssue;

/** Kubernetes cause types (k8s.io/apimachinery metav1.CauseType) for each zod issue. */
function causeReason(issue: Issue, input: unknown): string {
  switch (issue.code) {
    case "unrecognized_keys":
      return "FieldValueForbidden";
    case "invalid_type":
      return input === undefined ? "FieldValueRequired" : "FieldValueTypeInvalid";
    case "invalid_value":
      return "FieldValueNotSupported";
    case "too_big":
      if (issue.origin === "string") return "FieldValueTooLong";
      return issue.origin === "array" ? "FieldValueTooMany" : "FieldValueInvalid";
    default:
      return "FieldValueInvalid";
  }
}

function valueAt(root: unknown, path: ReadonlyArray<PropertyKey>): unknown {
  let value = root;
  for (const part of path) {
    if (typeof value !== "object" || value === null) return undefined;
    value = (value as Record<PropertyKey, unknown>)[part];
  }
  return value;
}

/** `schema` is the one that raised the issues: it knows the fields an unknown one may have meant. */
export function causesOf(issues: readonly Issue[], input: unknown, schema: z.core.$ZodType): StatusCause[] {
  // One cause per field, each unknown one too, so a client can point at each.
  return fieldErrors(schema, issues).map(({ path, message, issue }) => ({
    field: fieldPath(path),
    message,
    reason: causeReason(issue, valueAt(input, issue.path)),
  }));
}

export function invalidMessage(kind: string, name: string | undefined, causes: readonly StatusCause[]): string {
  const who = name ? `${kind} "${name}"` : kind;
  return `${who} is invalid: ${causes.map((c) => `${c.field}: ${c.message}`).join("; ")}`;
}
