// The Jobs of backup and restore: the project's backup program (gateway/backup/main.ts) run from
// the project's image, with the cluster etcd's credentials as the cleanup Job has them, under the
// restricted Pod Security profile, the backup volume claim mounted at /backups. Each writes its
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
const PROGRAM = "gateway/backup/main.ts";
export const BACKUPS_MOUNT = "/backups";
export const TERMINATION_LOG = "/dev/termination-log";
/** Exit codes of the program that no retry can change: 2 a bad setting, 3 refused (README, Backup format). */
const FINAL_EXIT_CODES = [2, 3];

/** The file a backup writes at the root of its volume claim: named after the EtcdStorageBackup. */
export function backupFile(backup: string): string {
  return `${backup}.etcdbackup`;
}

export function backupJobName(backup: string): string {
  return `etcd-backup-${backup}`;
}

/** Labels of a backup Job and its pods: the tenant's, and the backup's own (customize selects its pods by it). */
export function backupPodLabels(backup: string, tenant: string): Record<string, string> {
  return { ...childLabels(tenant, "backup"), [BACKUP_LABEL]: backup };
}

/** Labels of a restore Job's pods: the tenant's, component restore. */
export function restorePodLabels(tenant: string): Record<string, string> {
  return childLabels(tenant, "restore");
}

interface ProgramJob {
  name: string;
  namespace: string;
  labels: Record<string, string>;
  container: "backup" | "restore";
  args: string[];
  claim: string;
  readOnlyClaim: boolean;
  deadlineSeconds: number;
  config: Config;
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
              // Pages of at most the read budget (64 MiB) pass through; the file is streamed.
              resources: { requests: { cpu: "50m", memory: "128Mi" }, limits: { memory: "512Mi" } },
              securityContext: restrictedContainerSecurity,
              volumeMounts: [...coreCredentialMounts(), { name: "backups", mountPath: BACKUPS_MOUNT, ...(job.readOnlyClaim ? { readOnly: true } : {}) }],
            },
          ],
          volumes: [...coreCredentialVolumes(job.config), { name: "backups", persistentVolumeClaim: { claimName: job.claim, ...(job.readOnlyClaim ? { readOnly: true } : {}) } }],
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
    claim,
    readOnlyClaim: false,
    deadlineSeconds: 6 * 3600,
    config,
  });
}

export function buildRestoreJob(tenant: string, backup: string, claim: string, quotaBytes: number, config: Config): KubeObject {
  return programJob({
    name: tenantNames(tenant).restoreJob,
    namespace: config.proxyNamespace,
    labels: restorePodLabels(tenant),
    container: "restore",
    args: [...tenantFlags(tenant, config), `--in=${BACKUPS_MOUNT}/${backupFile(backup)}`, `--quota-bytes=${quotaBytes}`, `--result-file=${TERMINATION_LOG}`],
    claim,
    readOnlyClaim: true,
    deadlineSeconds: 6 * 3600,
    config,
  });
}

/**
 * spec.backup: a CronJob running the backup program on the claim, each file named by the time it
 * starts (--out-dir), the tenant's older ones deleted but the newest `keep` once a backup is
 * complete (--keep). One at a time (Forbid): each backup makes core etcd build up to the read
 * budget in memory, a share of the shared etcd that two at once would double. Its schedule is in
 * UTC, whatever the controller manager's time zone.
 */
export function buildBackupCronJob(tenant: string, schedule: BackupSchedule, config: Config): KubeObject {
  const labels = childLabels(tenant, "backup");
  const job = programJob({
    name: tenantNames(tenant).backupCronJob,
    namespace: config.proxyNamespace,
    labels,
    container: "backup",
    args: [...tenantFlags(tenant, config), `--out-dir=${BACKUPS_MOUNT}`, `--keep=${schedule.keep}`, `--result-file=${TERMINATION_LOG}`],
    claim: schedule.volumeClaim,
    readOnlyClaim: false,
    deadlineSeconds: 6 * 3600,
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
