// The schemas that judge the install manifests: Kubernetes' own (through kubernetes-models) and
// Metacontroller's CompositeController fields. Shared by the checks of manifests/ as written and
// of what kustomize builds from it, and of what the hooks write (the fields a schema would prune).
import { Ajv } from "ajv";
import { CustomResourceDefinition } from "kubernetes-models/apiextensions.k8s.io/v1";
import { Deployment } from "kubernetes-models/apps/v1";
import { NetworkPolicy } from "kubernetes-models/networking.k8s.io/v1";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1";
import { ClusterRole, ClusterRoleBinding } from "kubernetes-models/rbac.authorization.k8s.io/v1";
import { Namespace, Service, ServiceAccount } from "kubernetes-models/v1";

// Manifests are untyped YAML; the checks are what gives them a shape.
export type Manifest = any;

const KUBERNETES_KINDS: Record<string, (object: Manifest) => void> = {
  "v1 Namespace": (o) => new Namespace(o).validate(),
  "v1 ServiceAccount": (o) => new ServiceAccount(o).validate(),
  "v1 Service": (o) => new Service(o).validate(),
  "apps/v1 Deployment": (o) => new Deployment(o).validate(),
  "policy/v1 PodDisruptionBudget": (o) => new PodDisruptionBudget(o).validate(),
  "networking.k8s.io/v1 NetworkPolicy": (o) => new NetworkPolicy(o).validate(),
  "rbac.authorization.k8s.io/v1 ClusterRole": (o) => new ClusterRole(o).validate(),
  "rbac.authorization.k8s.io/v1 ClusterRoleBinding": (o) => new ClusterRoleBinding(o).validate(),
  "apiextensions.k8s.io/v1 CustomResourceDefinition": (o) => new CustomResourceDefinition(o).validate(),
};

// The CompositeController fields this project uses, as Metacontroller's CRD
// (compositecontrollers.metacontroller.k8s.io) defines them; unknown fields are refused so
// that a misspelt field cannot be silently ignored by Metacontroller.
const webhookSchema = {
  type: "object",
  additionalProperties: false,
  properties: {
    url: { type: "string" },
    path: { type: "string", pattern: "^/" },
    timeout: { type: "string", pattern: "^([0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$" },
    service: {
      type: "object",
      additionalProperties: false,
      required: ["name", "namespace"],
      properties: { name: { type: "string" }, namespace: { type: "string" }, port: { type: "integer", minimum: 1, maximum: 65535 }, protocol: { enum: ["http", "https"] } },
    },
  },
  oneOf: [{ required: ["url"] }, { required: ["service"] }],
};
const hookSchema = {
  type: "object",
  additionalProperties: false,
  required: ["webhook"],
  properties: { version: { enum: ["v1", "v2"] }, webhook: webhookSchema },
};
const compositeControllerSchema = {
  type: "object",
  required: ["apiVersion", "kind", "metadata", "spec"],
  properties: {
    apiVersion: { const: "metacontroller.k8s.io/v1alpha1" },
    kind: { const: "CompositeController" },
    metadata: { type: "object", required: ["name"], properties: { name: { type: "string" } } },
    spec: {
      type: "object",
      additionalProperties: false,
      required: ["parentResource", "childResources", "hooks"],
      properties: {
        parentResource: {
          type: "object",
          additionalProperties: false,
          required: ["apiVersion", "resource"],
          properties: { apiVersion: { type: "string" }, resource: { type: "string" } },
        },
        childResources: {
          type: "array",
          items: {
            type: "object",
            additionalProperties: false,
            required: ["apiVersion", "resource"],
            properties: {
              apiVersion: { type: "string" },
              resource: { type: "string" },
              updateStrategy: {
                type: "object",
                additionalProperties: false,
                properties: { method: { enum: ["OnDelete", "Recreate", "InPlace", "RollingRecreate", "RollingInPlace"] } },
              },
            },
          },
        },
        hooks: { type: "object", additionalProperties: false, properties: { sync: hookSchema, finalize: hookSchema, customize: hookSchema } },
        resyncPeriodSeconds: { type: "integer", minimum: 1, maximum: 2147483647 },
        generateSelector: { type: "boolean" },
      },
    },
  },
};

const validateCompositeController = new Ajv({ allErrors: true, strict: true, strictRequired: false }).compile<Manifest>(compositeControllerSchema);

/** What the schema of its kind finds wrong with object, or undefined for a kind no schema here covers. */
export function upstreamProblems(object: Manifest): string[] | undefined {
  const kind = `${object.apiVersion} ${object.kind}`;
  if (kind === "metacontroller.k8s.io/v1alpha1 CompositeController") {
    return validateCompositeController(object) ? [] : (validateCompositeController.errors ?? []).map((e) => `${e.instancePath} ${e.message}`);
  }
  const validate = KUBERNETES_KINDS[kind];
  if (!validate) return undefined;
  try {
    validate(object);
    return [];
  } catch (error) {
    return [(error as Error).message];
  }
}

/** Fields the schema does not declare: the API server prunes them, so a misspelt field is silently lost. */
export function unknownFields(value: Manifest, schema: Manifest, path = ""): string[] {
  if (Array.isArray(value)) return value.flatMap((item, i) => unknownFields(item, schema.items ?? {}, `${path}[${i}]`));
  if (value === null || typeof value !== "object" || !schema.properties || schema["x-kubernetes-preserve-unknown-fields"]) return [];
  return Object.entries(value).flatMap(([key, child]) =>
    schema.properties[key] ? unknownFields(child, schema.properties[key], `${path}.${key}`) : [`${path}.${key}`],
  );
}
