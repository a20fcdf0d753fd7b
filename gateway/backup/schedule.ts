// One run of a tenant's backup schedule (EtcdStorage spec.backup; its CronJob runs `schedule`):
// the backup is an EtcdStorageBackup like any other, so that each scheduled backup can be seen,
// alerted on and named in a restore's spec.dataSource. The run
//   1. creates the EtcdStorageBackup <tenant>-<UTC time>, labelled as the tenant's scheduled one,
//      with deletionPolicy Delete; or, when one of them has not ended (a retried run, or a run
//      that overlapped the last), waits for that one instead: one backup of a tenant at a time;
//   2. waits until its status says Complete or Failed (the backup's own Job does the work);
//   3. once it is complete, deletes the tenant's scheduled backups but the newest `keep` complete
//      ones. Their deletionPolicy Delete makes the hooks delete each one's file too. A failed
//      backup deletes nothing: the older ones are all there is.
// Only EtcdStorageBackups carrying the tenant's schedule label are ever deleted: never an
// on-demand one, never another tenant's.
import { Failure } from "./failure.ts";
import type { KubeApi } from "./kube-api.ts";

/** The label of the scheduled backups of one tenant: its value is the tenant. */
export const SCHEDULED_FOR_LABEL = "etcdproxy.dev/scheduled-for";
const BACKUPS = "/apis/etcdproxy.dev/v1alpha1/etcdstoragebackups";
/** An EtcdStorageBackup's name: at most 50 characters (its Job etcd-backup-<name> is a DNS label). */
const MAX_NAME = 50;

interface Condition {
  type?: unknown;
  status?: unknown;
  reason?: unknown;
  message?: unknown;
}

export interface BackupObject {
  metadata: { name: string; creationTimestamp?: string; deletionTimestamp?: string; labels?: Record<string, string> };
  spec?: Record<string, unknown>;
  status?: { conditions?: Condition[] } & Record<string, unknown>;
}

export interface ScheduleSettings {
  tenant: string;
  volumeClaim: string;
  keep: number;
  pollMs: number;
}

type State = "Complete" | "Failed" | "Running";

export function stateOf(backup: BackupObject): State {
  const conditions = Array.isArray(backup.status?.conditions) ? backup.status.conditions : [];
  const holds = (type: string) => conditions.some((c) => c?.type === type && c.status === "True");
  return holds("Complete") ? "Complete" : holds("Failed") ? "Failed" : "Running";
}

/** 2026-12-01T03:00:07Z → 20261201-030007: a DNS label's characters, sorting as the times do. */
function stamp(at: Date): string {
  const iso = at.toISOString();
  return `${iso.slice(0, 10).replaceAll("-", "")}-${iso.slice(11, 19).replaceAll(":", "")}`;
}

/**
 * <tenant>-<UTC time>. A tenant name too long for that (over 34 characters) is cut and followed by
 * a hash of the whole name, so that two tenants that share a beginning never share a name.
 */
export function scheduledBackupName(tenant: string, at: Date): string {
  const suffix = `-${stamp(at)}`;
  if (tenant.length + suffix.length <= MAX_NAME) return `${tenant}${suffix}`;
  let hash = 0x811c9dc5; // FNV-1a
  for (const char of tenant) hash = Math.imul(hash ^ char.charCodeAt(0), 0x01000193) >>> 0;
  const tag = `-${hash.toString(16).padStart(8, "0").slice(0, 6)}`;
  return `${tenant.slice(0, MAX_NAME - suffix.length - tag.length)}${tag}${suffix}`;
}

const newestFirst = (a: BackupObject, b: BackupObject) => (b.metadata.creationTimestamp ?? "").localeCompare(a.metadata.creationTimestamp ?? "") || b.metadata.name.localeCompare(a.metadata.name);

/**
 * What retention deletes once `kept` completed: every ended scheduled backup of the tenant but
 * the newest `keep` complete ones (`kept` always among them, whatever the clocks did); failed ones
 * go too, the complete ones that followed them being what counts. Running ones are left alone.
 */
export function retentionVictims(backups: readonly BackupObject[], tenant: string, keep: number, kept: string): string[] {
  const ended = backups.filter((b) => b.metadata.labels?.[SCHEDULED_FOR_LABEL] === tenant && !b.metadata.deletionTimestamp && stateOf(b) !== "Running");
  const complete = ended.filter((b) => stateOf(b) === "Complete" && b.metadata.name !== kept).sort(newestFirst);
  const keptNames = new Set([kept, ...complete.slice(0, keep - 1).map((b) => b.metadata.name)]);
  return ended.filter((b) => !keptNames.has(b.metadata.name)).sort(newestFirst).map((b) => b.metadata.name);
}

async function scheduledBackups(api: KubeApi, tenant: string): Promise<BackupObject[]> {
  const selector = encodeURIComponent(`${SCHEDULED_FOR_LABEL}=${tenant}`);
  return (await api.call<{ items: BackupObject[] }>("GET", `${BACKUPS}?labelSelector=${selector}`)).items;
}

/** Runs one scheduled backup to its end, then retention; returns the summary the program prints. */
export async function runSchedule(api: KubeApi, settings: ScheduleSettings, now: () => Date, wait: (ms: number) => Promise<void>): Promise<Record<string, unknown>> {
  const { tenant, volumeClaim, keep } = settings;
  const unfinished = (await scheduledBackups(api, tenant)).filter((b) => !b.metadata.deletionTimestamp && stateOf(b) === "Running").sort(newestFirst)[0];
  const name = unfinished?.metadata.name ?? scheduledBackupName(tenant, now());
  if (!unfinished) {
    await api.call("POST", BACKUPS, {
      apiVersion: "etcdproxy.dev/v1alpha1",
      kind: "EtcdStorageBackup",
      metadata: { name, labels: { [SCHEDULED_FOR_LABEL]: tenant } },
      spec: { storage: tenant, volumeClaim, deletionPolicy: "Delete" },
    });
  }

  let backup = await api.call<BackupObject>("GET", `${BACKUPS}/${name}`);
  while (stateOf(backup) === "Running") {
    await wait(settings.pollMs);
    backup = await api.call<BackupObject>("GET", `${BACKUPS}/${name}`);
  }
  if (stateOf(backup) === "Failed") {
    const failed = backup.status?.conditions?.find((c) => c?.type === "Failed");
    // Not retried: the backup's own Job has retried what a retry could change. The next scheduled run tries again.
    throw new Failure(3, "BackupFailed", `EtcdStorageBackup ${name} failed (${String(failed?.reason)}: ${String(failed?.message)}); no older backup was deleted`);
  }

  const deleted: string[] = [];
  for (const victim of retentionVictims(await scheduledBackups(api, tenant), tenant, keep, name)) {
    await api.call("DELETE", `${BACKUPS}/${victim}`).catch((error: { status?: number }) => {
      if (error.status !== 404) throw error;
    });
    deleted.push(victim);
  }
  const { conditions: _conditions, observedGeneration: _generation, ...status } = backup.status ?? {};
  return { backup: name, ...status, keep, deleted };
}
