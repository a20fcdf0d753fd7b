// Prometheus metrics of the hook server, fed from the hooks' reports (never from request bodies).
// Each app has its own Registry: tests build many apps in one process, and a global registry would
// mix their counts and refuse the second registration of a name.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { BackupReport } from "./backup.ts";
import type { SyncReport } from "./sync.ts";

export type HookName = "sync" | "finalize" | "customize" | "backup-sync" | "backup-finalize" | "backup-customize";
/** A report's outcome, "Customized", "BadRequest" (4xx) or "Error" (500). */
export type CallOutcome = SyncReport["outcome"] | BackupReport["outcome"] | "Customized" | "BadRequest" | "Error";

export interface Metrics {
  registry: Registry;
  /** One hook call; `seconds` is absent when the call was rejected before a handler ran (bad JSON, body too large). */
  hookCall(hook: HookName, outcome: CallOutcome, seconds?: number): void;
  /** What a sync or finalize call did: certificates issued, CA rotations, the tenant's earliest expiry. */
  report(report: SyncReport): void;
  /** What a backup sync saw: a completed backup moves its tenant's last successful backup time. */
  backup(report: BackupReport): void;
}

export function createMetrics(): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });

  const calls = new Counter({
    name: "etcdstorage_hook_calls_total",
    help: "Hook calls by hook (sync, finalize, customize, backup-sync, backup-finalize, backup-customize) and outcome (Synced, InvalidSpec, Finalizing, Finalized, Customized, BackupPending, BackupRunning, BackupComplete, BackupFailed, BadRequest, Error).",
    labelNames: ["hook", "outcome"] as const,
    registers: [registry],
  });
  const duration = new Histogram({
    name: "etcdstorage_hook_duration_seconds",
    help: "Time from the parsed request to the answer, by hook and outcome. A steady-state sync takes well under a millisecond; issuing a tenant's PKI tens of milliseconds.",
    labelNames: ["hook", "outcome"] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [registry],
  });
  const issued = new Counter({
    name: "etcdstorage_certificates_issued_total",
    help: "Certificates issued, by kind (serving-ca, client-ca, serving, client) and reason (Issued or SuccessorPublished for CAs; Missing, NearingExpiry, KeyMismatch, ... for leaves).",
    labelNames: ["kind", "reason"] as const,
    registers: [registry],
  });
  const rotations = new Counter({
    name: "etcdstorage_ca_rotations_total",
    help: "CA rotations, counted when a published successor CA is promoted to issuing CA (leaves move to it). Publishing the successor is counted in etcdstorage_certificates_issued_total{reason=\"SuccessorPublished\"}.",
    labelNames: ["kind"] as const,
    registers: [registry],
  });
  const expiry = new Gauge({
    name: "etcdstorage_tenant_certificate_expiry_timestamp_seconds",
    help: "Earliest notAfter (unix seconds) of the tenant's certificates (CAs, including retired ones still in the trust bundle, and leaves), as of its last sync. Removed when the tenant is finalized.",
    labelNames: ["tenant"] as const,
    registers: [registry],
  });

  const lastBackup = new Gauge({
    name: "etcdstorage_tenant_last_backup_timestamp_seconds",
    help: "When the newest successful backup of the tenant completed (unix seconds), as this hook server has seen it: an EtcdStorageBackup's status, or the lastSuccessfulTime of the tenant's scheduled backups' CronJob (each seen again at every resync). Alert on time() minus its max by tenant.",
    labelNames: ["tenant"] as const,
    registers: [registry],
  });
  const lastBackups = new Map<string, number>();
  const backedUp = (tenant: string | undefined, at: Date | undefined) => {
    if (tenant === undefined || at === undefined) return;
    const seconds = at.getTime() / 1000;
    if (!Number.isFinite(seconds) || seconds <= (lastBackups.get(tenant) ?? -Infinity)) return;
    lastBackups.set(tenant, seconds);
    lastBackup.set({ tenant }, seconds);
  };

  return {
    registry,
    backup(report) {
      backedUp(report.tenant, report.completedAt);
    },
    hookCall(hook, outcome, seconds) {
      calls.inc({ hook, outcome });
      if (seconds !== undefined) duration.observe({ hook, outcome }, seconds);
    },
    report(report) {
      // A scheduled backup (spec.backup's CronJob) counts as one taken on demand.
      backedUp(report.tenant, report.lastBackupAt);
      for (const event of report.events) {
        // Promotion hands the issuer role to a CA that already exists: a rotation, not an issuance.
        if (event.what === "Promoted") rotations.inc({ kind: event.certificate });
        else issued.inc({ kind: event.certificate, reason: event.what });
      }
      if (report.outcome === "Finalized") {
        expiry.remove({ tenant: report.tenant });
      } else if (report.certificates.length > 0) {
        const earliest = Math.min(...report.certificates.map((cert) => Date.parse(cert.notAfter)));
        expiry.set({ tenant: report.tenant }, earliest / 1000);
      }
    },
  };
}
