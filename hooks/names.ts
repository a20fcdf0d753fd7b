// Every child name and label, in one place: names are deterministic functions of the parent.

/** The longest suffix any child name adds to "etcd-<name>"; the schema's name rule (47) follows from it. */
const CHILD_SUFFIXES = ["-serving-ca", "-client-ca", "-server-tls", "-trusted-ca", "-cleanup", "-restore"] as const;
export const MAX_TENANT_NAME_LENGTH = 63 - "etcd-".length - Math.max(...CHILD_SUFFIXES.map((s) => s.length));

export const GROUP = "etcdproxy.dev";
export const API_VERSION = `${GROUP}/v1alpha1`;
export const KIND = "EtcdStorage";
export const BACKUP_KIND = "EtcdStorageBackup";
/**
 * The label of the pods that work on one EtcdStorageBackup's file: its backup Job's, its delete
 * Job's, and those of restores from it (customize asks for them: its finalize waits for readers).
 */
export const BACKUP_LABEL = `${GROUP}/backup`;
export const MANAGED_BY = "etcdstorage-hooks";
export const TENANT_LABEL = `${GROUP}/tenant`;

export interface TenantNames {
  tenant: string;
  /** Deployment, Service and PodDisruptionBudget of the proxy. */
  proxy: string;
  servingCa: string;
  clientCa: string;
  serverTls: string;
  trustedCa: string;
  cleanupJob: string;
  restoreJob: string;
  /**
   * The CronJob of spec.backup: etcd-<name> as the proxy's Deployment and Service (another kind).
   * A CronJob's name has at most 52 characters (its Jobs add 11), which a longer one would exceed.
   */
  backupCronJob: string;
}

export function tenantNames(tenant: string): TenantNames {
  const proxy = `etcd-${tenant}`;
  return {
    tenant,
    proxy,
    servingCa: `${proxy}-serving-ca`,
    clientCa: `${proxy}-client-ca`,
    serverTls: `${proxy}-server-tls`,
    trustedCa: `${proxy}-trusted-ca`,
    cleanupJob: `${proxy}-cleanup`,
    restoreJob: `${proxy}-restore`,
    backupCronJob: proxy,
  };
}

export type Component = "proxy" | "serving-ca" | "client-ca" | "server-tls" | "trusted-ca" | "cleanup" | "credentials" | "restore" | "backup";

/** Labels every child carries; Metacontroller adds controller-uid itself (generateSelector). */
export function childLabels(tenant: string, component: Component): Record<string, string> {
  return {
    "app.kubernetes.io/name": "etcd-proxy",
    "app.kubernetes.io/instance": tenant,
    "app.kubernetes.io/component": component,
    "app.kubernetes.io/managed-by": MANAGED_BY,
    [TENANT_LABEL]: tenant,
  };
}

/** Selects exactly the proxy pods of one tenant. */
export function proxySelector(tenant: string): Record<string, string> {
  return { [TENANT_LABEL]: tenant, "app.kubernetes.io/component": "proxy" };
}

/** The key prefix of a tenant: computed from the name alone, never read from anything a user writes. */
export function tenantPrefix(prefixRoot: string, tenant: string): string {
  return `${prefixRoot}${tenant}/`;
}

export function serviceHost(tenant: string, namespace: string): string {
  return `${tenantNames(tenant).proxy}.${namespace}.svc`;
}

/** The port of the tenant endpoint: the Service's and the gateway's. */
export const CLIENT_PORT = 2379;

/** status.prefix and status.endpoint: what an aggregated API server is configured with. */
export function tenantAddresses(tenant: string, config: { tenantPrefixRoot: string; proxyNamespace: string }) {
  return { prefix: tenantPrefix(config.tenantPrefixRoot, tenant), endpoint: `https://${serviceHost(tenant, config.proxyNamespace)}:${CLIENT_PORT}` };
}
