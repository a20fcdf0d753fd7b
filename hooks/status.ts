// Status from observed state, deterministic: a condition keeps its lastTransitionTime from
// parent.status while its status does not change, so the same observation gives the same status.
import type { Condition, KubeObject } from "./observed.ts";
import { rfc3339 } from "./time.ts";

export type ConditionInput = Omit<Condition, "lastTransitionTime" | "observedGeneration">;

export function proxyAvailable(deployment: KubeObject | undefined): ConditionInput {
  const type = "ProxyAvailable";
  if (!deployment) return { type, status: "False", reason: "DeploymentMissing", message: "the proxy Deployment does not exist yet" };
  const status = (deployment.status ?? {}) as { availableReplicas?: number; conditions?: { type: string; status: string; reason?: string }[] };
  const wanted = (deployment.spec as { replicas?: number } | undefined)?.replicas ?? 1;
  const available = status.availableReplicas ?? 0;
  const deploymentAvailable = status.conditions?.find((c) => c.type === "Available");
  const message = `${available}/${wanted} proxy pods available`;
  if (deploymentAvailable?.status === "True" && available > 0) return { type, status: "True", reason: deploymentAvailable.reason ?? "MinimumReplicasAvailable", message };
  return { type, status: "False", reason: deploymentAvailable?.reason ?? "ProxyStarting", message };
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
    const lastTransitionTime = before && before.status === condition.status && typeof before.lastTransitionTime === "string" ? before.lastTransitionTime : rfc3339(now);
    return { ...condition, lastTransitionTime, ...(generation !== undefined ? { observedGeneration: generation } : {}) };
  });
}
