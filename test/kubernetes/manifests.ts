// The install as Kubernetes would receive it: `kubectl kustomize` of deploy/kubernetes (or an
// overlay), parsed. Tests read the commands, ports and paths they run from here, so the
// manifests are what the tests exercise.

import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";

export const KUSTOMIZE_ROOT = new URL("../../deploy/kubernetes/", import.meta.url).pathname;

export type Manifest = {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string };
  // biome-ignore lint/suspicious/noExplicitAny: manifests are read as plain JSON trees
  [k: string]: any;
};

export function renderManifests(dir = ""): Manifest[] {
  let text: string;
  try {
    text = execFileSync("kubectl", ["kustomize", join(KUSTOMIZE_ROOT, dir)], { encoding: "utf8", timeout: 60_000 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT")
      throw new Error(
        "kubectl is not installed: rendering deploy/kubernetes needs `kubectl kustomize` (kubectl 1.27+)",
      );
    throw err;
  }
  return parseAllDocuments(text).map((d) => d.toJSON() as Manifest);
}

export function findManifest(manifests: Manifest[], kind: string, name: string): Manifest {
  const found = manifests.find((m) => m.kind === kind && m.metadata.name === name);
  if (!found) throw new Error(`the rendered manifests have no ${kind} ${name}`);
  return found;
}

/** A container's `--flag=value` arguments as a map (the manifests write every flag that way; a boolean flag bare). */
export function flagsOf(args: readonly string[]): Map<string, string> {
  const flags = new Map<string, string>();
  for (const arg of args) {
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(arg);
    if (!m) throw new Error(`argument "${arg}" is not --flag=value or --flag`);
    flags.set(m[1]!, m[2] ?? "true"); // a bare --flag is a boolean one
  }
  return flags;
}
