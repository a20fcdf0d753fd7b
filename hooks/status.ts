// Status from observed state, deterministic: a condition keeps its lastTransitionTime from
// parent.status while its status does not change, so the same observation gives the same status.
import type { Condition, KubeObject } from "./observed.ts";
import { rfc3339 } from "./time.ts";

const RFC3339 = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/;

export type ConditionInput = Omit<Condition, "lastTransitionTime" | "observedGeneration">;

export function proxyAvailable(deployment: KubeObject | undefined): ConditionInput {
  const type = "ProxyAvailable";
  if (!deployment) return { type, status: "False", reason: "DeploymentMissing", message: "the proxy Deployment does not exist yet" };
  // Observed objects are whatever the cluster holds: read every field defensively.
  const status = (deployment.status ?? {}) as { availableReplicas?: unknown; conditions?: unknown };
  const replicas = (deployment.spec as { replicas?: unknown } | null | undefined)?.replicas;
  const wanted = typeof replicas === "number" ? replicas : 1;
  const available = typeof status.availableReplicas === "number" ? status.availableReplicas : 0;
  const deploymentAvailable = objectList<{ type?: unknown; status?: unknown; reason?: unknown }>(status.conditions).find((c) => c.type === "Available");
  const reason = typeof deploymentAvailable?.reason === "string" && /^[A-Za-z][A-Za-z0-9_,:]*$/.test(deploymentAvailable.reason) ? deploymentAvailable.reason : undefined;
  const message = `${available}/${wanted} proxy pods available`;
  if (deploymentAvailable?.status === "True" && available > 0) return { type, status: "True", reason: reason ?? "MinimumReplicasAvailable", message };
  return { type, status: "False", reason: reason ?? "ProxyStarting", message };
}

/** Ready is True only when every other condition is; otherwise it carries the first failure's reason. */
export function ready(parts: ConditionInput[], readyMessage: string): ConditionInput {
  const failing = parts.find((part) => part.status !== "True");
  if (failing) return { type: "Ready", status: "False", reason: failing.reason, message: `${failing.type}: ${failing.message}` };
  return { type: "Ready", status: "True", reason: "TenantReady", message: readyMessage };
}

export function withTransitionTimes(conditions: ConditionInput[], previous: Condition[] | undefined, now: Date, generation: number | undefined): Condition[] {
  return conditions.map((condition) => {
    const before = previous?.find((p) => p.type === condition.type);
    const carried = before?.status === condition.status && typeof before.lastTransitionTime === "string" && RFC3339.test(before.lastTransitionTime);
    const lastTransitionTime = carried ? before.lastTransitionTime : rfc3339(now);
    return { ...condition, lastTransitionTime, ...(generation !== undefined ? { observedGeneration: generation } : {}) };
  });
}

/** Recorded conditions as an answer states them again: their times are withTransitionTimes' to set. */
export function conditionInputs(conditions: Condition[]): ConditionInput[] {
  return conditions.map(({ lastTransitionTime: _t, observedGeneration: _g, ...condition }) => condition);
}

/** True when no condition changed: every transition time was carried, none is "now". */
export function carriesEveryTransition(conditions: Condition[], previous: Condition[] | undefined): boolean {
  return conditions.every((c) => previous?.some((p) => p.type === c.type && p.status === c.status && p.lastTransitionTime === c.lastTransitionTime));
}

/** The objects of a list field, or none when the field is not a list. */
export function objectList<T>(value: unknown): T[] {
  return Array.isArray(value) ? value.filter((item): item is T => item !== null && typeof item === "object") : [];
}
