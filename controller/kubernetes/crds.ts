// CustomResourceDefinitions for the nodemesh kinds, generated from the same zod schemas that
// validate the REST API (api/resources.ts): one source of truth. `node controller/kubernetes/crds.ts`
// rewrites deploy/kubernetes/base/crds/; crds.test.ts fails when the checked-in files differ.
//
// Not every kind becomes a CRD: on Kubernetes, a nodemesh Service is the cluster's own core/v1
// Service (translate.ts), and HTTPRoute/GRPCRoute come from the upstream Gateway API CRDs.

import { writeFileSync } from "node:fs";
import { z } from "zod";
import { GROUP, KINDS, type KindInfo, PropagationStatus } from "../../api/resources.ts";

type JsonSchema = { [key: string]: unknown };

/** Kinds Kubernetes (or the Gateway API) already defines: no nodemesh CRD for them. */
export const KINDS_FROM_KUBERNETES: ReadonlySet<string> = new Set(["Service", "HTTPRoute", "GRPCRoute"]);

export function crdKinds(): KindInfo[] {
  return KINDS.filter((k) => k.group === GROUP && !KINDS_FROM_KUBERNETES.has(k.kind));
}

/**
 * A JSON schema from zod → a Kubernetes *structural* schema: every node typed, no
 * `additionalProperties: false` (Kubernetes prunes unknown fields instead), unions of objects
 * merged into one object (the controller's zod validation still decides which shape is right),
 * no defaults (the controller applies them, so the stored object stays what the user wrote).
 */
export function structural(schema: JsonSchema): JsonSchema {
  const variants = (schema.anyOf ?? schema.oneOf) as JsonSchema[] | undefined;
  if (variants) return mergeVariants(variants.map(structural), schema);
  const out: JsonSchema = {};
  for (const [key, value] of Object.entries(schema)) {
    if (key === "default" || key === "$schema" || key === "id") continue;
    if (key === "additionalProperties" && value === false) continue;
    if (key === "properties") {
      out.properties = Object.fromEntries(
        Object.entries(value as Record<string, JsonSchema>).map(([name, s]) => [name, structural(s)]),
      );
    } else if (key === "items" || (key === "additionalProperties" && typeof value === "object")) {
      out[key] = structural(value as JsonSchema);
    } else if (key === "const") {
      out.enum = [value];
    } else {
      out[key] = value;
    }
  }
  return out;
}

function mergeVariants(variants: JsonSchema[], parent: JsonSchema): JsonSchema {
  const types = new Set(variants.map((v) => v.type));
  if (types.size !== 1) throw new Error(`cannot make a structural schema of a union of ${[...types].join(", ")}`);
  const [type] = types;
  if (type !== "object") {
    const enums = variants.flatMap((v) => (v.enum as unknown[] | undefined) ?? []);
    return { type, ...(enums.length ? { enum: [...new Set(enums)] } : {}) };
  }
  const properties: Record<string, JsonSchema> = {};
  for (const v of variants) {
    for (const [name, s] of Object.entries((v.properties ?? {}) as Record<string, JsonSchema>)) {
      const seen = properties[name];
      // A discriminator: each variant gives one value, the merged field accepts them all.
      if (seen?.enum && s.enum) seen.enum = [...new Set([...(seen.enum as unknown[]), ...(s.enum as unknown[])])];
      else properties[name] ??= s;
    }
  }
  // Only fields every variant requires stay required.
  const required = (variants[0]?.required as string[] | undefined)?.filter((f) =>
    variants.every((v) => (v.required as string[] | undefined)?.includes(f)),
  );
  const description = parent.description;
  return {
    type: "object",
    ...(description ? { description } : {}),
    properties,
    ...(required?.length ? { required } : {}),
  };
}

export function crdFor(kind: KindInfo): JsonSchema {
  const spec = structural(z.toJSONSchema(kind.spec, { target: "openapi-3.0", io: "input" }) as JsonSchema);
  const status = structural(z.toJSONSchema(PropagationStatus, { target: "openapi-3.0" }) as JsonSchema);
  return {
    apiVersion: "apiextensions.k8s.io/v1",
    kind: "CustomResourceDefinition",
    metadata: {
      name: `${kind.plural}.${kind.group}`,
      labels: { "app.kubernetes.io/part-of": "nodemesh" },
    },
    spec: {
      group: kind.group,
      scope: kind.namespaced ? "Namespaced" : "Cluster",
      names: {
        kind: kind.kind,
        listKind: `${kind.kind}List`,
        plural: kind.plural,
        singular: kind.kind.toLowerCase(),
        categories: ["nodemesh"],
      },
      versions: [
        {
          name: kind.version,
          served: true,
          storage: true,
          subresources: { status: {} },
          additionalPrinterColumns: [
            // Agents that applied the current generation, "N/M".
            { name: "Applied", type: "string", jsonPath: ".status.applied" },
            { name: "Age", type: "date", jsonPath: ".metadata.creationTimestamp" },
          ],
          schema: {
            openAPIV3Schema: {
              type: "object",
              required: ["spec"],
              properties: {
                apiVersion: { type: "string" },
                kind: { type: "string" },
                metadata: { type: "object" },
                spec,
                status,
              },
            },
          },
        },
      ],
    },
  };
}

/** deploy/kubernetes/base/crds/<plural>.<group>.yaml → its content. */
export async function renderCrdFiles(): Promise<Map<string, string>> {
  const { stringify } = await import("yaml");
  const header = "# Generated from api/resources.ts by `node controller/kubernetes/crds.ts`: do not edit.\n";
  return new Map(
    crdKinds().map((k) => [`${k.plural}.${k.group}.yaml`, header + stringify(crdFor(k), { lineWidth: 0 })]),
  );
}

export const CRD_DIR = new URL("../../deploy/kubernetes/base/crds/", import.meta.url).pathname;

if (import.meta.main) {
  for (const [file, text] of await renderCrdFiles()) writeFileSync(CRD_DIR + file, text);
}
