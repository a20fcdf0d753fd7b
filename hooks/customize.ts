// The customize hook: ask Metacontroller to send, with every sync, the cluster etcd's CA and the
// proxy's client certificate (the hook checks and mounts them), the Namespaces the spec delivers
// into (only existing ones receive anything) and, with spec.dataSource, the EtcdStorageBackup and
// the restore Job's pods, and to re-sync when any of them changes.
import type { Config } from "./config.ts";
import { restorePodLabels } from "./children/backup-jobs.ts";
import { API_VERSION } from "./names.ts";
import { NAMESPACE_TYPE, type EtcdStorageObject } from "./observed.ts";
import { destinationNamespaces, readSpec } from "./spec.ts";

export function customize(parent: EtcdStorageObject, config: Config) {
  const read = readSpec(parent, config);
  // An invalid spec delivers nothing (sync keeps what exists), so it needs no Namespaces.
  const namespaces = read.valid ? destinationNamespaces(read.spec) : [];
  return {
    relatedResources: [
      { apiVersion: "v1", resource: "configmaps", namespace: config.proxyNamespace, names: [config.coreCaConfigMap] },
      { apiVersion: "v1", resource: "secrets", namespace: config.proxyNamespace, names: [config.coreClientSecret] },
      // Cluster-scoped: no namespace. Never without names: a rule with neither names nor a
      // selector selects every Namespace of the cluster.
      ...(namespaces.length > 0 ? [{ apiVersion: NAMESPACE_TYPE.apiVersion, resource: NAMESPACE_TYPE.resource, names: namespaces }] : []),
      // spec.dataSource: the backup to restore, and the restore Job's pods (their termination
      // message is the restore's outcome).
      ...(read.valid && read.spec.dataSource
        ? [
            { apiVersion: API_VERSION, resource: "etcdstoragebackups", names: [read.spec.dataSource.backup] },
            { apiVersion: "v1", resource: "pods", namespace: config.proxyNamespace, labelSelector: { matchLabels: restorePodLabels(parent.metadata.name, read.spec.dataSource.backup) } },
          ]
        : []),
    ],
  };
}
