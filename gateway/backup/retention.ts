// Backups named by time, and their retention: a schedule writes <tenant>.<UTC time>.etcdbackup into
// a directory (--out-dir), a name whose order is the order of the times (a fixed-width UTC stamp to
// the millisecond), and with --keep=N deletes the tenant's older such files there but the newest N,
// once the new one is complete. Nothing else is ever deleted: not another tenant's files (a tenant
// name is a DNS label, it holds no '.'), not an on-demand backup (<EtcdStorageBackup>.etcdbackup),
// not a .partial of a backup still being written, not a directory.
import { readdir, rm } from "node:fs/promises";
import path from "node:path";
import { Failure } from "./failure.ts";

const STAMP = /^\d{8}T\d{9}Z$/;
const SUFFIX = ".etcdbackup";

/** 2026-12-01T21:20:07.123Z → 20261201T212007123Z: sorts as the times do (years 0000-9999). */
export function timeStamp(at: Date): string {
  return at.toISOString().replace(/[-:.]/g, "");
}

export function timedBackupName(tenant: string, at: Date): string {
  return `${tenant}.${timeStamp(at)}${SUFFIX}`;
}

/** Whether a file name is one of the tenant's backups named by time. */
export function isTimedBackupOf(tenant: string, name: string): boolean {
  if (!name.startsWith(`${tenant}.`) || !name.endsWith(SUFFIX)) return false;
  return STAMP.test(name.slice(tenant.length + 1, -SUFFIX.length));
}

/**
 * The tenant's backups named by time in `dir` that retention deletes: all but the newest `keep`
 * by name; the one just written (`kept`) is always among those kept, whatever the clock did.
 */
export function retentionVictims(tenant: string, names: readonly string[], keep: number, kept: string): string[] {
  const ours = names.filter((name) => isTimedBackupOf(tenant, name) && name !== kept).sort();
  return ours.slice(0, Math.max(0, ours.length - (keep - 1)));
}

/** Deletes what retentionVictims names, regular files only; returns their names. */
export async function applyRetention(dir: string, tenant: string, keep: number, kept: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true });
  const files = entries.filter((entry) => entry.isFile()).map((entry) => entry.name);
  const victims = retentionVictims(tenant, files, keep, kept);
  for (const name of victims) {
    try {
      await rm(path.join(dir, name));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") continue;
      throw new Failure(1, "RetentionFailed", `backup completed (${kept}), but retention could not delete ${name}: ${(error as Error).message}`);
    }
  }
  return victims;
}
