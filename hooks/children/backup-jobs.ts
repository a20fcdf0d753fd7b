// The Jobs of backup, restore and a backup file's deletion, and the CronJob of a backup schedule:
// the project's backup program (gateway/backup/main.ts, compiled as the gateway is) run from the
// project's image under the restricted Pod Security profile, the backup volume claim mounted at
// /backups. Backup and restore have the cluster etcd's credentials as the cleanup Job has them;
// a schedule's run has none, only a token to create and delete EtcdStorageBackups. Each writes its
// outcome as one JSON line to its termination message (--result-file=/dev/termination-log), which
// the Pod's status carries and the hooks read back (hooks/job-outcome.ts).
import type { Config } from "../config.ts";
import { BACKUP_LABEL, childLabels, tenantNames } from "../names.ts";
import type { BackupSchedule } from "../spec.ts";
import type { KubeObject } from "../observed.ts";
import { cleanupPrefix } from "./cleanup-job.ts";
import { coreCredentialMounts, coreCredentialVolumes, coreEtcdFlags, restrictedContainerSecurity, restrictedPodSecurity } from "./pod.ts";

const NODE_BINARY = "/usr/local/bin/node";
const APP_DIR = "/app";
const PROGRAM = "dist/gateway/backup/main.js";
/** The service account of a schedule's runs (manifests/backup-scheduler.yaml): it may create, read and delete EtcdStorageBackups, nothing else. */
export const SCHEDULER_SERVICE_ACCOUNT = "etcdstorage-backup-scheduler";
const KUBE_API_ACCESS = "/var/run/secrets/kubernetes.io/serviceaccount";
export const BACKUPS_MOUNT = "/backups";
export const TERMINATION_LOG = "/dev/termination-log";
/** Exit codes of the program that no retry can change: 2 a bad setting, 3 refused (README, Backup format). */
const FINAL_EXIT_CODES = [2, 3];
const BACKUP_DEADLINE_SECONDS = 6 * 3600;
// Backup and restore: pages of at most the read budget (64 MiB) pass through; the file is streamed.
const PAGE_MEMORY = { request: "128Mi", limit: "512Mi" };
// Delete and a schedule's run: Node and a few small calls.
const SMALL_MEMORY = { request: "64Mi", limit: "128Mi" };

/** The file a backup writes at the root of its volume claim: named after the EtcdStorageBackup. */
export function backupFile(backup: string): string {
  return `${backup}.etcdbackup`;
}

export function backupJobName(backup: string): string {
  return `etcd-backup-${backup}`;
}

/** The Job that deletes the file of a backup deleted with deletionPolicy Delete. */
export function deleteJobName(backup: string): string {
  return `etcd-delete-${backup}`;
}

/** Labels of a backup Job and its pods: the tenant's, and the backup's own (customize selects its pods by it). */
export function backupPodLabels(backup: string, tenant: string): Record<string, string> {
  return { ...childLabels(tenant, "backup"), [BACKUP_LABEL]: backup };
}

/** Labels of a restore Job's pods: the tenant's, component restore, and the backup it reads (whose deletion waits for it). */
export function restorePodLabels(tenant: string, backup: string): Record<string, string> {
  return { ...childLabels(tenant, "restore"), [BACKUP_LABEL]: backup };
}

interface ProgramJob {
  name: string;
  namespace: string;
  labels: Record<string, string>;
  container: "backup" | "restore" | "schedule" | "delete";
  args: string[];
  /** The backup volume claim, mounted at /backups; a schedule's run has none. */
  claim?: { name: string; readOnly: boolean };
  /** What else the container mounts and the pod's volumes for it: the core credentials, or a schedule's API access. */
  mounts: object[];
  volumes: object[];
  serviceAccountName?: string;
  memory: { request: string; limit: string };
  deadlineSeconds: number;
  config: Config;
}

/** The core etcd credentials, as backup and restore mount them. */
function coreCredentials(config: Config): Pick<ProgramJob, "mounts" | "volumes"> {
  return { mounts: coreCredentialMounts(), volumes: coreCredentialVolumes(config) };
}

function programJob(job: ProgramJob): KubeObject {
  return {
    apiVersion: "batch/v1",
    kind: "Job",
    metadata: { name: job.name, namespace: job.namespace, labels: job.labels },
    spec: {
      // Exit 1 (core etcd unreachable, a compacted revision, a restore that failed midway and
      // emptied the prefix again) is retried with the Job's backoff; exit 2 or 3 (a bad setting,
      // a refusal: a full volume, a defective file, a non-empty prefix, over the quota) fails the
      // Job at once: running it again cannot succeed.
      backoffLimit: 3,
      podFailurePolicy: { rules: [{ action: "FailJob", onExitCodes: { containerName: job.container, operator: "In", values: FINAL_EXIT_CODES } }] },
      activeDeadlineSeconds: job.deadlineSeconds,
      template: {
        metadata: { labels: job.labels },
        spec: {
          restartPolicy: "Never",
          ...(job.serviceAccountName ? { serviceAccountName: job.serviceAccountName } : {}),
          // A schedule's token is mounted on purpose (kubeApiAccess), no other pod has one.
          automountServiceAccountToken: false,
          enableServiceLinks: false,
          securityContext: restrictedPodSecurity,
          containers: [
            {
              name: job.container,
              image: job.config.gatewayImage,
              imagePullPolicy: "IfNotPresent",
              command: [NODE_BINARY, PROGRAM, job.container],
              args: job.args,
              workingDir: APP_DIR,
              terminationMessagePath: TERMINATION_LOG,
              terminationMessagePolicy: "File",
              resources: { requests: { cpu: "50m", memory: job.memory.request }, limits: { memory: job.memory.limit } },
              securityContext: restrictedContainerSecurity,
              volumeMounts: [...job.mounts, ...(job.claim ? [{ name: "backups", mountPath: BACKUPS_MOUNT, ...(job.claim.readOnly ? { readOnly: true } : {}) }] : [])],
            },
          ],
          volumes: [...job.volumes, ...(job.claim ? [{ name: "backups", persistentVolumeClaim: { claimName: job.claim.name, ...(job.claim.readOnly ? { readOnly: true } : {}) } }] : [])],
        },
      },
    },
  };
}

/** Throws UnsafePrefixError for a tenant whose prefix is not strictly inside the root (as the cleanup Job). */
function tenantFlags(tenant: string, config: Config): string[] {
  return [`--tenant=${tenant}`, `--prefix=${cleanupPrefix(tenant, config)}`, ...coreEtcdFlags(config)];
}

export function buildBackupJob(backup: string, tenant: string, claim: string, config: Config): KubeObject {
  return programJob({
    name: backupJobName(backup),
    namespace: config.proxyNamespace,
    labels: backupPodLabels(backup, tenant),
    container: "backup",
    args: [...tenantFlags(tenant, config), `--out=${BACKUPS_MOUNT}/${backupFile(backup)}`, `--result-file=${TERMINATION_LOG}`],
    claim: { name: claim, readOnly: false },
    ...coreCredentials(config),
    memory: PAGE_MEMORY,
    deadlineSeconds: BACKUP_DEADLINE_SECONDS,
    config,
  });
}

/** Deletes a backup's file (and a .partial of it) from its claim: a Job of the backup's finalize. */
export function buildDeleteJob(backup: string, tenant: string, claim: string, config: Config): KubeObject {
  return programJob({
    name: deleteJobName(backup),
    namespace: config.proxyNamespace,
    labels: backupPodLabels(backup, tenant),
    container: "delete",
    args: [`--file=${BACKUPS_MOUNT}/${backupFile(backup)}`],
    claim: { name: claim, readOnly: false },
    mounts: [],
    volumes: [],
    memory: SMALL_MEMORY,
    deadlineSeconds: 600,
    config,
  });
}

export function buildRestoreJob(tenant: string, backup: string, claim: string, quotaBytes: number, config: Config): KubeObject {
  return programJob({
    name: tenantNames(tenant).restoreJob,
    namespace: config.proxyNamespace,
    labels: restorePodLabels(tenant, backup),
    container: "restore",
    args: [...tenantFlags(tenant, config), `--in=${BACKUPS_MOUNT}/${backupFile(backup)}`, `--quota-bytes=${quotaBytes}`, `--result-file=${TERMINATION_LOG}`],
    claim: { name: claim, readOnly: true },
    ...coreCredentials(config),
    memory: PAGE_MEMORY,
    deadlineSeconds: BACKUP_DEADLINE_SECONDS,
    config,
  });
}

/**
 * spec.backup: a CronJob whose each run creates one EtcdStorageBackup of the tenant on the claim
 * (deletionPolicy Delete), waits for it, and once it is complete deletes the tenant's scheduled
 * ones but the newest `keep` (gateway/backup/schedule.ts). One at a time (Forbid; a run also waits
 * for an unfinished one rather than start another): each backup makes core etcd build up to the
 * read budget in memory, a share of the shared etcd that two at once would double. The run mounts
 * a token of its own service account and the cluster's CA, as a pod's automounted token would
 * be; its schedule is in UTC, whatever the controller manager's time zone.
 */
export function buildBackupCronJob(tenant: string, schedule: BackupSchedule, config: Config): KubeObject {
  const labels = childLabels(tenant, "backup");
  const job = programJob({
    name: tenantNames(tenant).backupCronJob,
    namespace: config.proxyNamespace,
    labels,
    container: "schedule",
    args: [`--tenant=${tenant}`, `--volume-claim=${schedule.volumeClaim}`, `--keep=${schedule.keep}`, `--kube-ca-file=${KUBE_API_ACCESS}/ca.crt`, `--token-file=${KUBE_API_ACCESS}/token`, `--result-file=${TERMINATION_LOG}`],
    ...kubeApiAccess(),
    serviceAccountName: SCHEDULER_SERVICE_ACCOUNT,
    memory: SMALL_MEMORY,
    // A run lasts as long as its backup, which its own Job bounds by the same deadline.
    deadlineSeconds: BACKUP_DEADLINE_SECONDS + 600,
    config,
  });
  return {
    apiVersion: "batch/v1",
    kind: "CronJob",
    metadata: job.metadata,
    spec: {
      schedule: schedule.schedule,
      timeZone: "Etc/UTC",
      concurrencyPolicy: "Forbid",
      // A run missed by more than an hour (the controller down, the previous one still running)
      // is skipped, not caught up.
      startingDeadlineSeconds: 3600,
      successfulJobsHistoryLimit: 3,
      failedJobsHistoryLimit: 3,
      jobTemplate: { metadata: { labels }, spec: job.spec },
    },
  };
}

/** A bound token of the scheduler's service account (an hour, rotated by the kubelet) and the cluster's CA, as the kubelet's automount projects them. */
function kubeApiAccess(): Pick<ProgramJob, "mounts" | "volumes"> {
  const name = "kube-api-access";
  return {
    mounts: [{ name, mountPath: KUBE_API_ACCESS, readOnly: true }],
    volumes: [
      {
        name,
        projected: {
          defaultMode: 0o444,
          sources: [{ serviceAccountToken: { path: "token", expirationSeconds: 3600 } }, { configMap: { name: "kube-root-ca.crt", items: [{ key: "ca.crt", path: "ca.crt" }] } }],
        },
      },
    ],
  };
}
