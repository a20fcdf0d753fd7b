// The sync hook: "if the observed state were like this, what would the desired state be?"
// Pure but for the PKI's randomness: the request, the configuration and the clock come in.
import { planCertificates, type IssuanceEvent } from "./children/certificates.ts";
import { buildBackupCronJob } from "./children/backup-jobs.ts";
import { buildDeployment } from "./children/deployment.ts";
import { buildPodDisruptionBudget } from "./children/pod-disruption-budget.ts";
import { buildService } from "./children/service.ts";
import type { Config } from "./config.ts";
import { checkCoreCredentials } from "./core-credentials.ts";
import { checkDestinations } from "./destinations.ts";
import { echoChildren } from "./echo.ts";
import { tenantAddresses, tenantNames } from "./names.ts";
import { findObject, type HookRequest, type HookResponse, type KubeObject } from "./observed.ts";
import { planRestore } from "./restore.ts";
import { readSpec, type BackupSchedule, type Quota } from "./spec.ts";
import { carriesEveryTransition, proxyAvailable, ready, withTransitionTimes, type ConditionInput } from "./status.ts";

/** What the hook did besides answering, for logs and metrics; never part of the response. */
export interface SyncReport {
  tenant: string;
  outcome: "Synced" | "InvalidSpec" | "Finalizing" | "Finalized";
  events: IssuanceEvent[];
  certificates: { name: string; secret: string; notAfter: string }[];
  /**
   * Until when the same request gets the same answer, if it does: nothing was issued, no condition
   * changed, and no certificate step or expiry comes before then. Set only by sync.
   */
  stableUntil?: Date;
  /** When the newest scheduled backup (spec.backup's CronJob) succeeded, as its status says. */
  lastBackupAt?: Date;
}

export interface HookResult {
  response: HookResponse;
  report: SyncReport;
}

// An answer that depends on nothing but the request stays valid forever.
const NEVER = new Date(8.64e15);

// Wake up for the next certificate step even if Metacontroller's resync period is longer; at most
// daily so a lost timer costs a day, never a certificate.
const MAX_RESYNC_SECONDS = 24 * 3600;

export async function sync(request: HookRequest, config: Config, now: Date): Promise<HookResult> {
  const parent = request.parent;
  const tenant = parent.metadata.name;
  const generation = parent.metadata.generation;
  const previous = parent.status?.conditions;
  const deployment = findObject(request.children, "Deployment", config.proxyNamespace, tenantNames(tenant).proxy);
  const proxy = proxyAvailable(deployment);

  const read = readSpec(parent, config);
  if (!read.valid) {
    const invalid: ConditionInput = { type: "Ready", status: "False", reason: "InvalidSpec", message: read.problems.join("; ") };
    const conditions = withTransitionTimes([invalid, proxy], previous, now, generation);
    return {
      response: {
        status: { observedGeneration: generation, ...(read.nameValid ? tenantAddresses(tenant, config) : {}), conditions },
        children: echoChildren(request.children),
      },
      report: { tenant, outcome: "InvalidSpec", events: [], certificates: [], ...(carriesEveryTransition(conditions, previous) ? { stableUntil: NEVER } : {}) },
    };
  }
  const spec = read.spec;

  const core = checkCoreCredentials(request.related, config, now);
  const destinations = checkDestinations(spec, request.related);
  const pki = await planCertificates(tenant, { ...spec, ...destinations.deliverable }, config, request.children, now);

  const coreCondition: ConditionInput = core.ready
    ? { type: "CoreCredentialsReady", status: "True", reason: "CoreCredentialsValid", message: core.message }
    : { type: "CoreCredentialsReady", status: "False", reason: core.reason, message: core.message };
  const certificatesCondition: ConditionInput =
    pki.degraded.length > 0
      ? { type: "CertificatesReady", status: "False", reason: "IssuingCADamaged", message: pki.degraded.join("; ") }
      : {
          type: "CertificatesReady",
          status: "True",
          reason: pki.rotating.length > 0 ? "CARotationInProgress" : "CertificatesValid",
          message: pki.rotating.length > 0 ? `successor CA published for ${pki.rotating.join(", ")}; leaves move after the overlap` : `${pki.certificates.length} certificates valid`,
        };
  // With spec.dataSource, the restore comes first: Ready carries its reason until it is done.
  const restore = spec.dataSource ? planRestore(request, spec.dataSource, spec.quota.storage.bytes, config) : undefined;
  const parts = [...(restore ? [restore.condition] : []), proxy, certificatesCondition, coreCondition, destinations.condition];
  const addresses = tenantAddresses(tenant, config);
  const scheduled = spec.backup ? scheduledBackupStatus(spec.backup, findObject(request.children, "CronJob", config.proxyNamespace, tenantNames(tenant).backupCronJob)) : undefined;
  const conditions = withTransitionTimes(
    [ready(parts, `etcd is served at ${addresses.endpoint} under ${addresses.prefix}`), ...parts],
    previous,
    now,
    generation,
  );
  // resyncAfterSeconds stays at its cap until a day before the next step; the core certificate's
  // verdict changes at its own bounds.
  const stableUntil = Math.min(pki.nextStepAt.getTime() - MAX_RESYNC_SECONDS * 1000, core.changesAt?.getTime() ?? Infinity);
  const stable = pki.events.length === 0 && carriesEveryTransition(conditions, previous) && stableUntil > now.getTime();

  return {
    response: {
      status: {
        observedGeneration: generation,
        ...addresses,
        quota: quotaStatus(spec.quota),
        conditions,
        certificates: pki.certificates,
        ...(scheduled ? { backup: scheduled.status } : {}),
      },
      children: [gateway(buildDeployment(tenant, spec, config), restore?.serve ?? true), buildService(tenant, config), buildPodDisruptionBudget(tenant, config), ...pki.children, ...(restore?.children ?? []), ...(spec.backup ? [buildBackupCronJob(tenant, spec.backup, config)] : [])],
      resyncAfterSeconds: Math.min(MAX_RESYNC_SECONDS, restore?.resyncAfterSeconds ?? Infinity, Math.max(1, Math.ceil((pki.nextStepAt.getTime() - now.getTime()) / 1000))),
    },
    report: {
      tenant,
      outcome: "Synced",
      events: pki.events,
      certificates: pki.certificates.map(({ name, secret, notAfter }) => ({ name, secret, notAfter })),
      ...(stable ? { stableUntil: new Date(stableUntil) } : {}),
      ...(scheduled?.lastBackupAt ? { lastBackupAt: scheduled.lastBackupAt } : {}),
    },
  };
}

/** status.backup: spec.backup in effect, and when its CronJob last started a backup and last had one succeed. */
function scheduledBackupStatus(schedule: BackupSchedule, cronJob: KubeObject | undefined): { status: Record<string, unknown>; lastBackupAt?: Date } {
  const observed = (cronJob?.status ?? {}) as { lastScheduleTime?: unknown; lastSuccessfulTime?: unknown };
  const time = (value: unknown) => (typeof value === "string" && !Number.isNaN(Date.parse(value)) ? value : undefined);
  const lastScheduleTime = time(observed.lastScheduleTime);
  const lastSuccessfulTime = time(observed.lastSuccessfulTime);
  return {
    status: { ...schedule, ...(lastScheduleTime ? { lastScheduleTime } : {}), ...(lastSuccessfulTime ? { lastSuccessfulTime } : {}) },
    ...(lastSuccessfulTime ? { lastBackupAt: new Date(lastSuccessfulTime) } : {}),
  };
}

/** The gateway Deployment, held at 0 replicas while a restore has not completed: it serves nothing before. */
function gateway(deployment: KubeObject, serve: boolean): KubeObject {
  return serve ? deployment : { ...deployment, spec: { ...(deployment.spec as object), replicas: 0 } };
}

/** status.quota: the limits in effect as spec.quota or the configured default writes them. */
function quotaStatus(quota: Quota) {
  return { storage: quota.storage.quantity, writeBytesPerSecond: quota.writeBytesPerSecond.quantity, requestsPerSecond: quota.requestsPerSecond };
}
