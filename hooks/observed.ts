// The Metacontroller hook request, and typed look-ups into what it observed. Read-only.

export interface ObjectMeta {
  name: string;
  namespace?: string;
  uid?: string;
  generation?: number;
  deletionTimestamp?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  [field: string]: unknown;
}

export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: ObjectMeta;
  [field: string]: unknown;
}

export interface Condition {
  type: string;
  status: "True" | "False" | "Unknown";
  reason: string;
  message: string;
  lastTransitionTime: string;
  observedGeneration?: number;
}

export interface EtcdStorageObject extends KubeObject {
  spec?: unknown;
  status?: { conditions?: Condition[]; [field: string]: unknown } | null;
}

/** Objects by "Kind.group/version", then by "namespace/name" (by "name" for a cluster-scoped object). */
export type ObjectsByType = Record<string, Record<string, KubeObject>>;

export interface HookRequest {
  controller?: Record<string, unknown>;
  parent: EtcdStorageObject;
  children: ObjectsByType;
  related?: ObjectsByType;
  finalizing?: boolean;
}

export interface HookResponse {
  status: Record<string, unknown>;
  children: KubeObject[];
  resyncAfterSeconds?: number;
  finalized?: boolean;
}

/** The child types of the CompositeController, in Metacontroller's v2 keys. */
export const CHILD_TYPES = {
  Deployment: { apiVersion: "apps/v1", key: "Deployment.apps/v1", resource: "deployments" },
  Service: { apiVersion: "v1", key: "Service.v1", resource: "services" },
  PodDisruptionBudget: { apiVersion: "policy/v1", key: "PodDisruptionBudget.policy/v1", resource: "poddisruptionbudgets" },
  Secret: { apiVersion: "v1", key: "Secret.v1", resource: "secrets" },
  ConfigMap: { apiVersion: "v1", key: "ConfigMap.v1", resource: "configmaps" },
  Job: { apiVersion: "batch/v1", key: "Job.batch/v1", resource: "jobs" },
  CronJob: { apiVersion: "batch/v1", key: "CronJob.batch/v1", resource: "cronjobs" },
} as const;

export type ChildKind = keyof typeof CHILD_TYPES;

/** Related Namespaces (/customize asks for the destinations'): cluster-scoped, so keyed by name alone. */
export const NAMESPACE_TYPE = { apiVersion: "v1", key: "Namespace.v1", resource: "namespaces" } as const;

export function findObject(objects: ObjectsByType | undefined, kind: ChildKind, namespace: string, name: string): KubeObject | undefined {
  return objects?.[CHILD_TYPES[kind].key]?.[`${namespace}/${name}`];
}

export function allObjects(objects: ObjectsByType | undefined): KubeObject[] {
  return Object.values(objects ?? {}).flatMap((byName) => Object.values(byName ?? {}));
}

/** A Secret's data, decoded; a value that is not a string reads as missing. */
export function secretData(secret: KubeObject | undefined): Record<string, string | undefined> {
  const data = (secret?.data ?? {}) as Record<string, unknown>;
  return Object.fromEntries(Object.entries(data).map(([key, value]) => [key, typeof value === "string" ? Buffer.from(value, "base64").toString("utf8") : undefined]));
}

export function configMapData(configMap: KubeObject | undefined): Record<string, string | undefined> {
  const data = (configMap?.data ?? {}) as Record<string, unknown>;
  return Object.fromEntries(Object.entries(data).map(([key, value]) => [key, typeof value === "string" ? value : undefined]));
}
