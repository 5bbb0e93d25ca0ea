// Validates Kubernetes objects against the Kubernetes API's own schemas (kubernetes-models'
// validators, generated from the API server's OpenAPI document; Gateway API kinds from
// @kubernetes-models/gateway-api) and refuses unknown fields, which the validators alone let
// through: each object is read through a proxy that records the fields the schema looked at, and
// any field the schema never read is one it does not know.

import { validate as grpcRoute } from "@kubernetes-models/gateway-api/_schemas/IoK8sSigsGatewayApiApisV1GRPCRoute";
import { validate as httpRoute } from "@kubernetes-models/gateway-api/_schemas/IoK8sSigsGatewayApiApisV1HTTPRoute";
import { validate as mutatingWebhookConfiguration } from "kubernetes-models/_schemas/IoK8sApiAdmissionregistrationV1MutatingWebhookConfiguration";
import { validate as daemonSet } from "kubernetes-models/_schemas/IoK8sApiAppsV1DaemonSet";
import { validate as deployment } from "kubernetes-models/_schemas/IoK8sApiAppsV1Deployment";
import { validate as lease } from "kubernetes-models/_schemas/IoK8sApiCoordinationV1Lease";
import { validate as namespace } from "kubernetes-models/_schemas/IoK8sApiCoreV1Namespace";
import { validate as pod } from "kubernetes-models/_schemas/IoK8sApiCoreV1Pod";
import { validate as secret } from "kubernetes-models/_schemas/IoK8sApiCoreV1Secret";
import { validate as service } from "kubernetes-models/_schemas/IoK8sApiCoreV1Service";
import { validate as serviceAccount } from "kubernetes-models/_schemas/IoK8sApiCoreV1ServiceAccount";
import { validate as crd } from "kubernetes-models/_schemas/IoK8sApiextensionsApiserverPkgApisApiextensionsV1CustomResourceDefinition";
import { validate as podDisruptionBudget } from "kubernetes-models/_schemas/IoK8sApiPolicyV1PodDisruptionBudget";
import { validate as clusterRole } from "kubernetes-models/_schemas/IoK8sApiRbacV1ClusterRole";
import { validate as clusterRoleBinding } from "kubernetes-models/_schemas/IoK8sApiRbacV1ClusterRoleBinding";
import { validate as role } from "kubernetes-models/_schemas/IoK8sApiRbacV1Role";
import { validate as roleBinding } from "kubernetes-models/_schemas/IoK8sApiRbacV1RoleBinding";

interface Validator {
  (data: unknown): boolean;
  errors?: { instancePath: string; message?: string; params?: unknown }[] | null;
}

const VALIDATORS: Record<string, Validator> = {
  "apiextensions.k8s.io/v1/CustomResourceDefinition": crd,
  "admissionregistration.k8s.io/v1/MutatingWebhookConfiguration": mutatingWebhookConfiguration,
  "apps/v1/DaemonSet": daemonSet,
  "apps/v1/Deployment": deployment,
  "coordination.k8s.io/v1/Lease": lease,
  "v1/Namespace": namespace,
  "v1/Pod": pod,
  "v1/Secret": secret,
  "v1/Service": service,
  "v1/ServiceAccount": serviceAccount,
  "policy/v1/PodDisruptionBudget": podDisruptionBudget,
  "rbac.authorization.k8s.io/v1/ClusterRole": clusterRole,
  "rbac.authorization.k8s.io/v1/ClusterRoleBinding": clusterRoleBinding,
  "rbac.authorization.k8s.io/v1/Role": role,
  "rbac.authorization.k8s.io/v1/RoleBinding": roleBinding,
  "gateway.networking.k8s.io/v1/HTTPRoute": httpRoute,
  "gateway.networking.k8s.io/v1/GRPCRoute": grpcRoute,
};

/** Wraps `value` so that every field read is recorded in `read`; `all` gets every field there is. */
function tracked(value: unknown, path: string, read: Set<string>, all: Set<string>): unknown {
  if (value === null || typeof value !== "object") return value;
  for (const key of Object.keys(value)) all.add(`${path}/${key}`);
  return new Proxy(value, {
    get(target, key, receiver) {
      const v = Reflect.get(target, key, receiver);
      if (typeof key !== "string" || !Object.hasOwn(target, key)) return v;
      read.add(`${path}/${key}`);
      return tracked(v, `${path}/${key}`, read, all);
    },
  });
}

/** The problems of one object: schema errors and unknown fields, as "path: message" lines. */
export function kubernetesSchemaErrors(obj: { apiVersion?: unknown; kind?: unknown }): string[] {
  const id = `${String(obj.apiVersion)}/${String(obj.kind)}`;
  const validate = VALIDATORS[id];
  if (!validate) return [`no schema known for ${id}`];
  const read = new Set<string>();
  const all = new Set<string>();
  const errors = validate(tracked(obj, "", read, all))
    ? []
    : (validate.errors ?? []).map((e) => `${e.instancePath || "/"}: ${e.message ?? JSON.stringify(e.params)}`);
  // A field is unknown when the schema never read it (a map's keys are read). A CRD's
  // openAPIV3Schema is free-form to these validators (deploy/kubernetes checks it is structural).
  for (const field of all)
    if (!read.has(field) && !field.includes("/openAPIV3Schema/")) errors.push(`${field}: unknown field`);
  return errors;
}
