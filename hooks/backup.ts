// The hooks of the second CompositeController (manifests/compositecontroller-backup.yaml): one
// EtcdStorageBackup, one backup Job. Pure: the request and the clock come in.
//   finalize: with deletionPolicy Delete, the file is deleted before the object goes: the
//   backup's Job is stopped first, then a Job deletes the file; Retain lets the object go at once.
//   customize: the EtcdStorage named by spec.storage, and the pods of the backup's Job;
//   sync: the Job while the backup has no final status; the status from the Job's conditions and
//   its pod's termination message (the program's JSON line): the revision, keys, bytes, SHA-256,
//   file and completion time, or the reason and message of a failure. Once status records
//   Complete or Failed, that is the answer for good: the Job is kept while it exists (its pod's
//   log with it), never created again.
import { backupFile, backupJobName, buildBackupJob, buildDeleteJob, deleteJobName } from "./children/backup-jobs.ts";
import { UnsafePrefixError } from "./children/cleanup-job.ts";
import type { Config } from "./config.ts";
import { desiredFromObserved, echoChildren } from "./echo.ts";
import { humanBytes, jobOutcome } from "./job-outcome.ts";
import { API_VERSION, BACKUP_LABEL, KIND, tenantPrefix } from "./names.ts";
import { allObjects, findObject, type Condition, type EtcdStorageObject, type HookRequest, type HookResponse, type KubeObject } from "./observed.ts";
import { describeErrors, etcdStorageBackupSchema, kubernetesAjv } from "./schema.ts";
import { conditionInputs, withTransitionTimes, type ConditionInput } from "./status.ts";
import { rfc3339 } from "./time.ts";

export interface BackupSpec {
  storage: string;
  volumeClaim: string;
  /** What deleting the EtcdStorageBackup does to its file. */
  deletionPolicy: "Retain" | "Delete";
}

export type BackupOutcome = "BackupPending" | "BackupRunning" | "BackupComplete" | "BackupFailed" | "InvalidSpec" | "Finalizing" | "Finalized";

/** What a backup sync did, for logs and metrics. */
export interface BackupReport {
  backup: string;
  /** The EtcdStorage backed up, when the spec names one. */
  tenant?: string;
  outcome: BackupOutcome;
  /** When the backup completed, once it has. */
  completedAt?: Date;
}

export interface BackupResult {
  response: HookResponse;
  report: BackupReport;
}

const validate = kubernetesAjv({ useDefaults: false }).compile(etcdStorageBackupSchema);
const ETCDSTORAGE_KEY = `${KIND}.${API_VERSION}`;
const POD_KEY = "Pod.v1";
const WAIT_SECONDS = 10;
const STORAGE_WAIT_SECONDS = 30;

export function readBackupSpec(parent: { metadata: { name: string }; spec?: unknown }): { valid: true; spec: BackupSpec } | { valid: false; problems: string[] } {
  const candidate = structuredClone({ metadata: { name: parent.metadata.name }, spec: parent.spec });
  if (!validate(candidate)) return { valid: false, problems: describeErrors(validate.errors, candidate, { quoteValues: true }) };
  const spec = candidate.spec as BackupSpec;
  return { valid: true, spec: { storage: spec.storage, volumeClaim: spec.volumeClaim, deletionPolicy: spec.deletionPolicy ?? "Retain" } };
}

export function customizeBackup(parent: EtcdStorageObject, config: Config) {
  const read = readBackupSpec(parent);
  if (!read.valid) return { relatedResources: [] };
  return {
    relatedResources: [
      { apiVersion: API_VERSION, resource: "etcdstorages", names: [read.spec.storage] },
      // The Job's pods carry the program's outcome in their termination message.
      { apiVersion: "v1", resource: "pods", namespace: config.proxyNamespace, labelSelector: { matchLabels: { [BACKUP_LABEL]: parent.metadata.name } } },
    ],
  };
}

const FINAL = (c: Condition) => (c.type === "Complete" && c.status === "True") || (c.type === "Failed" && c.status === "True");

export function syncBackup(request: HookRequest, config: Config, now: Date): BackupResult {
  const parent = request.parent;
  const name = parent.metadata.name;
  const generation = parent.metadata.generation;
  const previous = parent.status?.conditions;
  const answer = (conditions: ConditionInput[], fields: Record<string, unknown>, children: KubeObject[], report: Omit<BackupReport, "backup">, resyncAfterSeconds?: number): BackupResult => ({
    response: {
      status: { observedGeneration: generation, ...fields, conditions: withTransitionTimes(conditions, previous, now, generation) },
      children,
      ...(resyncAfterSeconds ? { resyncAfterSeconds } : {}),
    },
    report: { backup: name, ...report },
  });
  const complete = (status: ConditionInput["status"], reason: string, message: string): ConditionInput => ({ type: "Complete", status, reason, message });

  const read = readBackupSpec(parent);
  if (!read.valid) {
    return answer([complete("False", "InvalidSpec", read.problems.join("; "))], {}, echoChildren(request.children), { outcome: "InvalidSpec" });
  }
  const { storage, volumeClaim } = read.spec;
  const jobName = backupJobName(name);
  const observedJob = findObject(request.children, "Job", config.proxyNamespace, jobName);

  // Final: what status records stands; the Job stays while it exists and is never made again.
  if (previous?.some(FINAL)) {
    const { conditions: _conditions, observedGeneration: _generation, ...recorded } = parent.status ?? {};
    const carried = conditionInputs(previous.filter((c) => c.type === "Complete" || c.type === "Failed"));
    const done = previous.some((c) => c.type === "Complete" && c.status === "True");
    const completedAt = typeof recorded.completionTime === "string" ? new Date(recorded.completionTime) : undefined;
    return answer(carried, recorded, observedJob ? [desiredFromObserved(observedJob)] : [], { tenant: storage, outcome: done ? "BackupComplete" : "BackupFailed", ...(done && completedAt ? { completedAt } : {}) });
  }

  const tenant = request.related?.[ETCDSTORAGE_KEY]?.[storage];
  if (!tenant) {
    const message = `EtcdStorage ${storage} does not exist; the backup starts once it does`;
    return answer([complete("False", "StorageNotFound", message)], {}, observedJob ? [desiredFromObserved(observedJob)] : [], { tenant: storage, outcome: "BackupPending" }, STORAGE_WAIT_SECONDS);
  }
  let job: KubeObject;
  try {
    job = buildBackupJob(name, storage, volumeClaim, config);
  } catch (error) {
    if (!(error instanceof UnsafePrefixError)) throw error;
    return answer([complete("False", "InvalidSpec", error.message)], {}, [], { tenant: storage, outcome: "InvalidSpec" });
  }
  const pods = podsOfBackup(request, name);
  const outcome = jobOutcome(observedJob, pods, "backup");
  const file = backupFile(name);
  const where = `${tenantPrefix(config.tenantPrefixRoot, storage)} into ${file} on PersistentVolumeClaim ${config.proxyNamespace}/${volumeClaim}`;

  switch (outcome.state) {
    case "Missing":
    case "Running": {
      const retry = outcome.state === "Running" && outcome.lastFailure ? `; an attempt failed (${outcome.lastFailure.reason}: ${outcome.lastFailure.message}) and the Job retries` : "";
      return answer([complete("False", "Running", `Job ${config.proxyNamespace}/${jobName} is backing up ${where}${retry}`)], { file }, [job], { tenant: storage, outcome: "BackupRunning" }, WAIT_SECONDS);
    }
    case "Succeeded": {
      if (!outcome.result) {
        const message = `Job ${config.proxyNamespace}/${jobName} completed; its pod's termination message (the summary) is not observed yet`;
        return answer([complete("Unknown", "ReadingResult", message)], { file }, [job], { tenant: storage, outcome: "BackupRunning" }, WAIT_SECONDS);
      }
      const summary = outcome.result.summary;
      const number = (field: string) => (typeof summary[field] === "number" && Number.isSafeInteger(summary[field]) ? { [field]: summary[field] as number } : {});
      const finished = Date.parse(outcome.result.finishedAt ?? outcome.completionTime ?? "");
      const completedAt = Number.isNaN(finished) ? now : new Date(finished);
      const fileBytes = typeof summary.fileBytes === "number" ? summary.fileBytes : undefined;
      const fields: Record<string, unknown> = {
        file,
        ...number("revision"),
        ...number("keys"),
        ...number("leases"),
        ...number("bytes"),
        ...number("fileBytes"),
        ...(fileBytes !== undefined ? { size: humanBytes(fileBytes) } : {}),
        ...(typeof summary.sha256 === "string" && /^[0-9a-f]{64}$/.test(summary.sha256) ? { sha256: summary.sha256 } : {}),
        completionTime: rfc3339(completedAt),
      };
      const message = `${fields.keys ?? "?"} keys (${humanBytes(Number(fields.bytes ?? 0))}) of ${tenantPrefix(config.tenantPrefixRoot, storage)} at revision ${fields.revision ?? "?"} in ${file} on ${config.proxyNamespace}/${volumeClaim}`;
      return answer([complete("True", "Completed", message)], fields, [job], { tenant: storage, outcome: "BackupComplete", completedAt });
    }
    case "Failed": {
      const reason = outcome.result?.reason ?? outcome.reason;
      const message = outcome.result ? `${outcome.result.message} (exit code ${outcome.result.exitCode}; Job ${outcome.reason})` : `Job ${config.proxyNamespace}/${jobName}: ${outcome.message}`;
      return answer(
        [complete("False", reason, message), { type: "Failed", status: "True", reason, message }],
        {},
        [job],
        { tenant: storage, outcome: "BackupFailed" },
      );
    }
  }
}

/**
 * An EtcdStorageBackup being deleted. Retain: finalized at once (the file stays; the garbage
 * collector takes the Job). Delete: the backup's Job is dropped first, and only once it and its
 * running pods are gone (no writer left) does a Job delete the file and what a stopped backup left of it; finalized
 * when that Job completed. A delete Job that failed (the claim gone, say) holds the object with
 * a FileDeleted condition saying why: the file is not known to be gone.
 */
export function finalizeBackup(request: HookRequest, config: Config, now: Date): BackupResult {
  const parent = request.parent;
  const name = parent.metadata.name;
  const read = readBackupSpec(parent);
  const done = (tenant?: string): BackupResult => ({ response: { status: parent.status ?? {}, finalized: true, children: [] }, report: { backup: name, ...(tenant ? { tenant } : {}), outcome: "Finalized" } });
  if (!read.valid || read.spec.deletionPolicy === "Retain") return done(read.valid ? read.spec.storage : undefined);

  const { storage, volumeClaim } = read.spec;
  const { conditions: previous, ...recorded } = parent.status ?? {};
  const waiting = (children: KubeObject[], status: ConditionInput["status"], reason: string, message: string, resyncAfterSeconds?: number): BackupResult => ({
    response: {
      status: { ...recorded, conditions: withTransitionTimes([...conditionInputs((previous ?? []).filter((c) => c.type !== "FileDeleted")), { type: "FileDeleted", status, reason, message }], previous, now, parent.metadata.generation) },
      children,
      finalized: false,
      ...(resyncAfterSeconds ? { resyncAfterSeconds } : {}),
    },
    report: { backup: name, tenant: storage, outcome: "Finalizing" },
  });
  const file = `${backupFile(name)} on PersistentVolumeClaim ${config.proxyNamespace}/${volumeClaim}`;
  const pods = podsOfBackup(request, name);
  const podsOf = (job: string) => pods.filter((pod) => pod.metadata.labels?.["batch.kubernetes.io/job-name"] === job);
  const running = (some: KubeObject[]) => some.filter((pod) => !["Succeeded", "Failed"].includes(String((pod.status as { phase?: unknown } | undefined)?.phase)));
  // A backup pod still terminating could write the file again after it was deleted.
  if (findObject(request.children, "Job", config.proxyNamespace, backupJobName(name)) || running(podsOf(backupJobName(name))).length > 0) {
    return waiting([], "False", "StoppingBackup", `deletionPolicy Delete: the backup's Job and its pods are being deleted; then a Job deletes ${file}`, WAIT_SECONDS);
  }
  // A restore reading the file (it reads it twice: to check it, then to write it) finishes first.
  const readers = running(pods.filter((pod) => pod.metadata.labels?.["app.kubernetes.io/component"] === "restore"));
  if (readers.length > 0) {
    return waiting([], "False", "RestoreReading", `deletionPolicy Delete: ${readers.map((pod) => `pod ${pod.metadata.namespace}/${pod.metadata.name}`).join(", ")} is restoring from ${file}; it is deleted once the restore has ended`, WAIT_SECONDS);
  }
  const jobName = deleteJobName(name);
  const job = buildDeleteJob(name, storage, volumeClaim, config);
  const outcome = jobOutcome(findObject(request.children, "Job", config.proxyNamespace, jobName), podsOf(jobName), "delete");
  switch (outcome.state) {
    case "Succeeded":
      return done(storage);
    case "Failed":
      return waiting([job], "False", outcome.reason, `Job ${config.proxyNamespace}/${jobName} could not delete ${file} (${outcome.message}); the EtcdStorageBackup stays until it can: fix the cause and delete the Job to try again, or remove the finalizer to keep the file`);
    default:
      return waiting([job], "False", "Deleting", `deletionPolicy Delete: Job ${config.proxyNamespace}/${jobName} is deleting ${file}`, WAIT_SECONDS);
  }
}

/** The related pods that work on this backup's file (customize selects them by its label): its Jobs' and its restores'. */
function podsOfBackup(request: HookRequest, name: string): KubeObject[] {
  return allObjects({ [POD_KEY]: request.related?.[POD_KEY] ?? {} }).filter((pod) => pod.metadata.labels?.[BACKUP_LABEL] === name);
}
