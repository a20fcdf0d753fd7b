import type { Config } from "../config.ts";
import { childLabels, CLIENT_PORT, proxySelector, tenantNames } from "../names.ts";
import type { KubeObject } from "../observed.ts";

/** etcd-<name>: the endpoint the aggregated API server's --etcd-servers points at. */
export function buildService(tenant: string, config: Config): KubeObject {
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: { name: tenantNames(tenant).proxy, namespace: config.proxyNamespace, labels: childLabels(tenant, "proxy") },
    spec: {
      type: "ClusterIP",
      selector: proxySelector(tenant),
      ports: [{ name: "client", port: CLIENT_PORT, targetPort: "client", protocol: "TCP" }],
    },
  };
}
