// A tenant restored from a backup (spec.dataSource.backup): before its gateway serves, a restore
// Job writes the backup's keys into the tenant's empty prefix. The condition Restored says how far
// it is; the gateway Deployment is held at 0 replicas until it is True. Pure: what the request
// observed (the EtcdStorageBackup and the restore Job's pods, which /customize asks for) comes in.
//   - Restored True in status: done for good; no Job (a second restore would find the prefix
//     full), the gateway serves.
//   - the backup missing or not complete: Restored False (BackupNotFound, BackupNotComplete).
//   - the Job running: Restoring; succeeded: Restored, with the program's summary.
//   - the Job failed: the program's reason (PrefixNotEmpty, OverQuota, InvalidFile, RestoreFailed,
//     CoreUnavailable...) and its message. Final: the failed Job is kept while it exists and never
//     replaced, so a refused restore is never run again into what the prefix holds.
import { buildRestoreJob, restorePodLabels } from "./children/backup-jobs.ts";
import type { Config } from "./config.ts";
import { desiredFromObserved } from "./echo.ts";
import { jobOutcome } from "./job-outcome.ts";
import { API_VERSION, BACKUP_KIND, tenantNames, tenantPrefix } from "./names.ts";
import { findObject, type Condition, type HookRequest, type KubeObject } from "./observed.ts";
import type { ConditionInput } from "./status.ts";

export const BACKUP_KEY = `${BACKUP_KIND}.${API_VERSION}`;
const POD_KEY = "Pod.v1";
const WAIT_SECONDS = 10;

export interface RestorePlan {
  condition: ConditionInput;
  /** The restore Job, while there is one to keep. */
  children: KubeObject[];
  /** Whether the gateway may serve: only once the restore completed. */
  serve: boolean;
  resyncAfterSeconds?: number;
}

/** Restored conditions that end the restore for good: True, or a failure status recorded. */
function finalRestored(previous: Condition[] | undefined): Condition | undefined {
  const restored = previous?.find((c) => c.type === "Restored");
  if (!restored) return undefined;
  if (restored.status === "True") return restored;
  return restored.status === "False" && !["Restoring", "BackupNotFound", "BackupNotComplete", "BackupBeingDeleted"].includes(restored.reason) ? restored : undefined;
}

export function planRestore(request: HookRequest, dataSource: { backup: string }, quotaBytes: number, config: Config): RestorePlan {
  const tenant = request.parent.metadata.name;
  const jobName = tenantNames(tenant).restoreJob;
  const observedJob = findObject(request.children, "Job", config.proxyNamespace, jobName);
  const keep = observedJob ? [desiredFromObserved(observedJob)] : [];
  const restored = (status: ConditionInput["status"], reason: string, message: string): ConditionInput => ({ type: "Restored", status, reason, message });

  const final = finalRestored(request.parent.status?.conditions);
  if (final) return { condition: restored(final.status, final.reason, final.message), children: final.status === "True" ? [] : keep, serve: final.status === "True" };

  const backup = request.related?.[BACKUP_KEY]?.[dataSource.backup];
  if (!backup) return { condition: restored("False", "BackupNotFound", `EtcdStorageBackup ${dataSource.backup} does not exist; the gateway serves once it is restored`), children: keep, serve: false, resyncAfterSeconds: 30 };
  const backupSpec = (backup.spec ?? {}) as { volumeClaim?: unknown };
  const complete = ((backup.status as { conditions?: Condition[] } | undefined)?.conditions ?? []).find((c) => c?.type === "Complete");
  if (complete?.status !== "True" || typeof backupSpec.volumeClaim !== "string") {
    return { condition: restored("False", "BackupNotComplete", `EtcdStorageBackup ${dataSource.backup} has not completed${complete ? ` (${complete.reason}: ${complete.message})` : ""}; the restore starts once it has`), children: keep, serve: false, resyncAfterSeconds: 30 };
  }
  // A backup being deleted may lose its file at any moment: a restore not begun waits (it fails
  // if the deletion goes through); one that has begun holds the deletion until it is done.
  if (backup.metadata.deletionTimestamp && !observedJob) {
    return { condition: restored("False", "BackupBeingDeleted", `EtcdStorageBackup ${dataSource.backup} is being deleted; the restore starts if that is undone, and cannot once its file is gone`), children: keep, serve: false, resyncAfterSeconds: 30 };
  }
  const job = buildRestoreJob(tenant, dataSource.backup, backupSpec.volumeClaim, quotaBytes, config);
  const labels = restorePodLabels(tenant, dataSource.backup);
  const pods = Object.values(request.related?.[POD_KEY] ?? {}).filter((pod) => Object.entries(labels).every(([key, value]) => pod?.metadata?.labels?.[key] === value));
  const outcome = jobOutcome(observedJob, pods, "restore");
  const prefix = tenantPrefix(config.tenantPrefixRoot, tenant);
  switch (outcome.state) {
    case "Missing":
    case "Running": {
      const retry = outcome.state === "Running" && outcome.lastFailure ? `; an attempt failed (${outcome.lastFailure.reason}: ${outcome.lastFailure.message}) and the Job retries` : "";
      return { condition: restored("False", "Restoring", `Job ${config.proxyNamespace}/${jobName} is restoring EtcdStorageBackup ${dataSource.backup} into ${prefix}${retry}`), children: [job], serve: false, resyncAfterSeconds: WAIT_SECONDS };
    }
    case "Succeeded": {
      const summary = outcome.result?.summary ?? {};
      const from = (summary.from ?? {}) as { revision?: unknown };
      const message = outcome.result
        ? `${String(summary.keys)} keys (${String(summary.bytes)} bytes, ${String(summary.leases)} leases) restored into ${prefix} from EtcdStorageBackup ${dataSource.backup} (revision ${String(from.revision)})`
        : `Job ${config.proxyNamespace}/${jobName} restored EtcdStorageBackup ${dataSource.backup} into ${prefix}`;
      return { condition: restored("True", "Restored", message), children: [job], serve: true };
    }
    case "Failed": {
      const reason = outcome.result?.reason ?? "RestoreFailed";
      const message = outcome.result
        ? `${outcome.result.message} (exit code ${outcome.result.exitCode}); not retried: fix the cause, then delete and recreate this EtcdStorage`
        : `Job ${config.proxyNamespace}/${jobName} failed (${outcome.reason}: ${outcome.message}); not retried`;
      return { condition: restored("False", reason, message), children: [job], serve: false };
    }
  }
}
