// The Job that deletes a tenant's keys: etcdctl run directly (no shell), with the cluster etcd's
// credentials, deleting exactly one prefix.
import type { Config } from "../config.ts";
import { childLabels, tenantNames, tenantPrefix } from "../names.ts";
import type { KubeObject } from "../observed.ts";
import { coreCredentialMounts, coreCredentialVolumes, coreEtcdFlags, restrictedContainerSecurity, restrictedPodSecurity } from "./pod.ts";

const ETCDCTL_BINARY = "/usr/local/bin/etcdctl";
const TENANT_NAME = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;

export class UnsafePrefixError extends Error {}

/**
 * The prefix is computed from the configured root and the tenant name, never read from a field a
 * user can write, and must lie strictly inside the root: "/etcdstorage/a/" can never reach
 * "/etcdstorage/ab/", "/etcdstorage/a" or "/registry/".
 */
export function cleanupPrefix(tenant: string, config: Config): string {
  const prefix = tenantPrefix(config.tenantPrefixRoot, tenant);
  const inside = prefix.startsWith(config.tenantPrefixRoot) && prefix.length > config.tenantPrefixRoot.length + 1 && prefix.endsWith("/");
  if (!TENANT_NAME.test(tenant) || !inside || prefix.startsWith("/registry/")) {
    throw new UnsafePrefixError(`refusing to delete "${prefix}": it is not one tenant's prefix strictly inside ${config.tenantPrefixRoot}`);
  }
  return prefix;
}

export function cleanupCommand(tenant: string, config: Config): string[] {
  return [ETCDCTL_BINARY, ...coreEtcdFlags(config), "--dial-timeout=10s", "--command-timeout=30s", "del", "--prefix=true", cleanupPrefix(tenant, config)];
}

export function buildCleanupJob(tenant: string, config: Config): KubeObject {
  const labels = childLabels(tenant, "cleanup");
  return {
    apiVersion: "batch/v1",
    kind: "Job",
    metadata: { name: tenantNames(tenant).cleanupJob, namespace: config.proxyNamespace, labels },
    spec: {
      // The Job's own retries, with exponential backoff (10s, 20s, 40s...), before it counts as Failed.
      backoffLimit: 4,
      activeDeadlineSeconds: 900,
      template: {
        metadata: { labels },
        spec: {
          restartPolicy: "Never",
          automountServiceAccountToken: false,
          enableServiceLinks: false,
          securityContext: restrictedPodSecurity,
          containers: [
            {
              name: "etcdctl",
              image: config.etcdImage,
              imagePullPolicy: "IfNotPresent",
              command: cleanupCommand(tenant, config),
              env: [{ name: "ETCDCTL_API", value: "3" }],
              resources: { requests: { cpu: "10m", memory: "32Mi" }, limits: { memory: "128Mi" } },
              securityContext: restrictedContainerSecurity,
              volumeMounts: coreCredentialMounts(),
            },
          ],
          volumes: coreCredentialVolumes(config),
        },
      },
    },
  };
}
