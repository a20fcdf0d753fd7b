// The customize hook: ask Metacontroller to send the cluster etcd's CA and the proxy's client
// certificate with every sync, so the hook can check and mount them, and re-sync when they change.
import type { Config } from "./config.ts";

export function customize(config: Config) {
  return {
    relatedResources: [
      { apiVersion: "v1", resource: "configmaps", namespace: config.proxyNamespace, names: [config.coreCaConfigMap] },
      { apiVersion: "v1", resource: "secrets", namespace: config.proxyNamespace, names: [config.coreClientSecret] },
    ],
  };
}
