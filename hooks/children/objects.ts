// Wire conventions written once: a TLS Secret is kubernetes.io/tls with base64 data, never stringData.
import type { KubeObject } from "../observed.ts";

export interface Placement {
  name: string;
  namespace: string;
  labels: Record<string, string>;
}

export function secret(placement: Placement, data: Record<string, string>, type = "kubernetes.io/tls"): KubeObject {
  return {
    apiVersion: "v1",
    kind: "Secret",
    metadata: { ...placement },
    type,
    data: Object.fromEntries(Object.entries(data).map(([key, value]) => [key, Buffer.from(value, "utf8").toString("base64")])),
  };
}

export function configMap(placement: Placement, data: Record<string, string>): KubeObject {
  return { apiVersion: "v1", kind: "ConfigMap", metadata: { ...placement }, data };
}
