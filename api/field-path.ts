// Field paths written the way kubectl users read them: `spec.ports[1].port`. The REST API's 422
// causes and the agent's service-table errors use the same form.

export function fieldPath(path: ReadonlyArray<PropertyKey>): string {
  let out = "";
  for (const part of path) {
    if (typeof part === "number") out += `[${part}]`;
    else out += out ? `.${String(part)}` : String(part);
  }
  return out;
}
