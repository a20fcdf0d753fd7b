// What the proxy pods and the cleanup Job share: the "restricted" Pod Security profile and the
// mounted credentials for the cluster's etcd (the same flags serve the gateway and etcdctl).
import type { Config } from "../config.ts";

// A non-root identity (the project's image and the distroless etcd image run as it); fsGroup lets
// it read the mounted keys.
const POD_UID = 65532;

export const CORE_MOUNTS = { ca: "/etc/etcd-proxy/core-ca", client: "/etc/etcd-proxy/core-client" } as const;

export function coreEtcdFlags(config: Config): string[] {
  return [
    `--endpoints=${config.coreEtcdEndpoints.join(",")}`,
    `--cacert=${CORE_MOUNTS.ca}/ca.crt`,
    `--cert=${CORE_MOUNTS.client}/tls.crt`,
    `--key=${CORE_MOUNTS.client}/tls.key`,
  ];
}

export function coreCredentialMounts() {
  return [
    { name: "core-ca", mountPath: CORE_MOUNTS.ca, readOnly: true },
    { name: "core-client", mountPath: CORE_MOUNTS.client, readOnly: true },
  ];
}

export function coreCredentialVolumes(config: Config) {
  return [configMapVolume("core-ca", config.coreCaConfigMap), secretVolume("core-client", config.coreClientSecret)];
}

export function secretVolume(name: string, secretName: string) {
  return { name, secret: { secretName, defaultMode: 0o440 } };
}

export function configMapVolume(name: string, configMapName: string) {
  return { name, configMap: { name: configMapName, defaultMode: 0o444 } };
}

export const restrictedPodSecurity = {
  runAsNonRoot: true,
  runAsUser: POD_UID,
  runAsGroup: POD_UID,
  fsGroup: POD_UID,
  seccompProfile: { type: "RuntimeDefault" },
} as const;

export const restrictedContainerSecurity = {
  allowPrivilegeEscalation: false,
  readOnlyRootFilesystem: true,
  runAsNonRoot: true,
  capabilities: { drop: ["ALL"] },
} as const;
