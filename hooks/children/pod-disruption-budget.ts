import type { Config } from "../config.ts";
import { childLabels, proxySelector, tenantNames } from "../names.ts";
import type { KubeObject } from "../observed.ts";

/** Node drains take the tenant's proxies down one at a time. */
export function buildPodDisruptionBudget(tenant: string, config: Config): KubeObject {
  return {
    apiVersion: "policy/v1",
    kind: "PodDisruptionBudget",
    metadata: { name: tenantNames(tenant).proxy, namespace: config.proxyNamespace, labels: childLabels(tenant, "proxy") },
    spec: { maxUnavailable: 1, selector: { matchLabels: proxySelector(tenant) } },
  };
}
