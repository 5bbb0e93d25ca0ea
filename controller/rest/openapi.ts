// `/openapi/v3`: an OpenAPI 3.0 document generated from the zod schemas in api/resources.ts, the
// same source that validates requests (and will give the CRDs their openAPIV3Schema).

import { z } from "zod";
import { JSON_TYPE } from "../../api/http-json.ts";
import { API_VERSION, apiVersionOf, KINDS, type KindInfo, objectSchema } from "../../api/resources.ts";
import { MERGE_PATCH_TYPE } from "./http-io.ts";

type JsonSchema = Record<string, unknown>;

const ref = (name: string): JsonSchema => ({ $ref: `#/components/schemas/${name}` });
const body = (schema: JsonSchema, type = JSON_TYPE) => ({ required: true, content: { [type]: { schema } } });
const reply = (description: string, schema: JsonSchema) => ({ description, content: { [JSON_TYPE]: { schema } } });

/** Kubernetes names schemas by reversed group: io.nodemesh.v1alpha1.Service. */
export function schemaName(kind: KindInfo, suffix = ""): string {
  return `${kind.group.split(".").reverse().join(".")}.${kind.version}.${kind.kind}${suffix}`;
}

/** The JSON schema of a kind's objects, as clients send them (defaults make fields optional). */
export function kindJsonSchema(kind: KindInfo): JsonSchema {
  const { $schema: _dialect, ...schema } = z.toJSONSchema(objectSchema(kind), { target: "openapi-3.0", io: "input" });
  return schema;
}

const STATUS_SCHEMA: JsonSchema = {
  type: "object",
  description: "A Kubernetes Status: why a request failed.",
  properties: {
    kind: { type: "string", enum: ["Status"] },
    apiVersion: { type: "string", enum: ["v1"] },
    status: { type: "string" },
    message: { type: "string" },
    reason: { type: "string" },
    code: { type: "integer" },
    details: {
      type: "object",
      properties: {
        name: { type: "string" },
        kind: { type: "string" },
        causes: {
          type: "array",
          items: {
            type: "object",
            properties: { field: { type: "string" }, message: { type: "string" }, reason: { type: "string" } },
          },
        },
      },
    },
  },
};

function kindPaths(kind: KindInfo, dryRun: boolean): Record<string, unknown> {
  const one = ref(schemaName(kind));
  const list = ref(schemaName(kind, "List"));
  const failure = { default: reply("Failure", ref("io.k8s.apimachinery.pkg.apis.meta.v1.Status")) };
  const base = `/apis/${apiVersionOf(kind)}`;
  // Operations are tagged with their group/version, so the document lists each group's kinds.
  const tags = [apiVersionOf(kind)];
  const scoped = kind.namespaced ? `${base}/namespaces/{namespace}/${kind.plural}` : `${base}/${kind.plural}`;
  const param = (name: string) => ({ name, in: "path", required: true, schema: { type: "string" } });
  const scopeParams = kind.namespaced ? [param("namespace")] : [];
  const watchParam = {
    name: "watch",
    in: "query",
    schema: { type: "boolean" },
    description: "stream changes (NDJSON)",
  };
  const dryRunParam = dryRun && {
    name: "dryRun",
    in: "query",
    schema: { type: "string", enum: ["All"] },
    description:
      "All: validate, check against the other objects and answer with the object as it would be, its conditions and the agents' table changes (status.dryRun); nothing is stored",
  };
  const listOp = {
    tags,
    operationId: `list${kind.kind}`,
    parameters: [watchParam],
    responses: { 200: reply("OK", list), ...failure },
  };
  const paths: Record<string, unknown> = {
    [scoped]: {
      parameters: scopeParams,
      get: listOp,
      post: {
        tags,
        operationId: `create${kind.kind}`,
        ...(dryRunParam ? { parameters: [dryRunParam] } : {}),
        requestBody: body(one),
        responses: { 201: reply("Created", one), ...failure },
      },
    },
    [`${scoped}/{name}`]: {
      parameters: [...scopeParams, param("name")],
      get: { tags, operationId: `read${kind.kind}`, responses: { 200: reply("OK", one), ...failure } },
      put: {
        tags,
        operationId: `replace${kind.kind}`,
        ...(dryRunParam ? { parameters: [dryRunParam] } : {}),
        requestBody: body(one),
        responses: { 200: reply("OK", one), ...failure },
      },
      patch: {
        tags,
        operationId: `patch${kind.kind}`,
        ...(dryRunParam ? { parameters: [dryRunParam] } : {}),
        requestBody: body({ type: "object" }, MERGE_PATCH_TYPE),
        responses: { 200: reply("OK", one), ...failure },
      },
      delete: {
        tags,
        operationId: `delete${kind.kind}`,
        ...(dryRunParam ? { parameters: [dryRunParam] } : {}),
        responses: { 200: reply("OK", one), ...failure },
      },
    },
  };
  if (kind.namespaced) {
    paths[`${base}/${kind.plural}`] = { get: { ...listOp, operationId: `list${kind.kind}ForAllNamespaces` } };
  }
  return paths;
}

function kindSchemas(kind: KindInfo): Record<string, JsonSchema> {
  return {
    [schemaName(kind)]: kindJsonSchema(kind),
    [schemaName(kind, "List")]: {
      type: "object",
      required: ["apiVersion", "kind", "metadata", "items"],
      properties: {
        apiVersion: { type: "string" },
        kind: { type: "string", enum: [`${kind.kind}List`] },
        metadata: { type: "object", properties: { resourceVersion: { type: "string" } } },
        items: { type: "array", items: ref(schemaName(kind)) },
      },
    },
  };
}

/** `dryRun`: the server answers `?dryRun=All` (declared per write, as kubectl looks for it). */
export function openApiDocument(kinds: readonly KindInfo[] = KINDS, dryRun = true): Record<string, unknown> {
  const groupVersions = [...new Set(kinds.map(apiVersionOf))];
  return {
    openapi: "3.0.3",
    info: { title: "nodemesh", version: API_VERSION },
    tags: groupVersions.map((name) => ({
      name,
      description: kinds
        .filter((k) => apiVersionOf(k) === name)
        .map((k) => k.kind)
        .join(", "),
    })),
    paths: Object.assign({}, ...kinds.map((k) => kindPaths(k, dryRun))),
    components: {
      schemas: Object.assign(
        { "io.k8s.apimachinery.pkg.apis.meta.v1.Status": STATUS_SCHEMA },
        ...kinds.map(kindSchemas),
      ),
    },
  };
}
