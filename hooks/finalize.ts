// The finalize hook: stop the proxy, then delete exactly the tenant's prefix with a Job, and say
// finalized only when the observed Job has succeeded.
//   proxy Deployment observed → desire no proxy;  proxy gone → desire the cleanup Job;
//   Job Complete → finalized;  Job Failed → keep the finalizer, report, replace the Job after a pause.
import { buildCleanupJob, UnsafePrefixError } from "./children/cleanup-job.ts";
import type { Config } from "./config.ts";
import { tenantAddresses, tenantNames, tenantPrefix } from "./names.ts";
import { findObject, type HookRequest, type KubeObject } from "./observed.ts";
import { objectList, withTransitionTimes, type ConditionInput } from "./status.ts";
import type { HookResult } from "./sync.ts";

/** How long a failed cleanup Job stays (and its failure shows in status) before a new one replaces it. */
export const CLEANUP_RETRY_DELAY_SECONDS = 60;
const WAIT_SECONDS = 10;

type JobCondition = { type: string; status: string; reason?: string; message?: string; lastTransitionTime?: string };

export async function finalize(request: HookRequest, config: Config, now: Date): Promise<HookResult> {
  const parent = request.parent;
  const tenant = parent.metadata.name;
  const names = tenantNames(tenant);
  // Built first: a name whose prefix is not strictly inside the root gets no Job and no addresses.
  let job: KubeObject | undefined;
  let unsafe: UnsafePrefixError | undefined;
  try {
    job = buildCleanupJob(tenant, config);
  } catch (error) {
    if (!(error instanceof UnsafePrefixError)) throw error;
    unsafe = error;
  }
  const answer = (cleanup: ConditionInput, children: KubeObject[], finalized: boolean, resyncAfterSeconds?: number): HookResult => ({
    response: {
      status: {
        observedGeneration: parent.metadata.generation,
        ...(unsafe ? {} : tenantAddresses(tenant, config)),
        conditions: withTransitionTimes(
          [{ type: "Ready", status: "False", reason: "Deleting", message: "the EtcdStorage is being deleted" }, cleanup],
          parent.status?.conditions,
          now,
          parent.metadata.generation,
        ),
      },
      children,
      finalized,
      ...(resyncAfterSeconds ? { resyncAfterSeconds } : {}),
    },
    report: { tenant, outcome: finalized ? "Finalized" : "Finalizing", events: [], certificates: [] },
  });
  const cleanup = (status: ConditionInput["status"], reason: string, message: string): ConditionInput => ({ type: "Cleanup", status, reason, message });

  // Idempotent: once the keys are gone (and the GC may have taken the Job), the answer stays "done".
  const done = parent.status?.conditions?.find((c) => c.type === "Cleanup" && c.status === "True");
  if (done) return answer(cleanup("True", String(done.reason ?? "KeysDeleted"), String(done.message ?? "")), [], true);

  const policy = deletionPolicy(parent.spec);
  if (policy === "Retain") return answer(cleanup("True", "Retained", `deletionPolicy is Retain: the keys under ${tenantPrefix(config.tenantPrefixRoot, tenant)} are kept`), [], true);
  if (policy === "Invalid") {
    return answer(cleanup("False", "InvalidDeletionPolicy", "spec.deletionPolicy must be Delete or Retain; set it to finish the deletion"), [], false);
  }

  // 1. No new writes: the proxy goes first.
  if (findObject(request.children, "Deployment", config.proxyNamespace, names.proxy)) {
    return answer(cleanup("False", "StoppingProxy", "waiting for the proxy Deployment to be deleted before deleting the keys"), [], false, WAIT_SECONDS);
  }

  if (!job) return answer(cleanup("False", "UnsafePrefix", unsafe!.message), [], false);

  // 2. The cleanup Job, then 3. finalized when it has succeeded.
  const observedJob = findObject(request.children, "Job", config.proxyNamespace, names.cleanupJob);
  const conditions = objectList<JobCondition>((observedJob?.status as { conditions?: unknown } | null | undefined)?.conditions).filter((c) => c.status === "True");
  const prefix = tenantPrefix(config.tenantPrefixRoot, tenant);
  if (conditions.some((c) => c.type === "Complete")) return answer(cleanup("True", "KeysDeleted", `every key under ${prefix} was deleted`), [job], true);
  const failed = conditions.find((c) => c.type === "Failed");
  if (failed) {
    const failedAt = Date.parse(String(failed.lastTransitionTime)) || now.getTime();
    const retryIn = Math.min(CLEANUP_RETRY_DELAY_SECONDS, Math.ceil((failedAt + CLEANUP_RETRY_DELAY_SECONDS * 1000 - now.getTime()) / 1000));
    const message = `deleting ${prefix} failed (${String(failed.reason ?? "Failed")}: ${String(failed.message ?? "no message")}); a new Job retries ${retryIn > 0 ? `in ${retryIn}s` : "now"}`;
    // Omitting the failed Job makes Metacontroller delete it; the next call creates a fresh one.
    return answer(cleanup("False", "CleanupFailed", message), retryIn > 0 ? [job] : [], false, Math.max(retryIn, 1));
  }
  return answer(cleanup("False", "CleanupRunning", `Job ${config.proxyNamespace}/${names.cleanupJob} is deleting ${prefix}`), [job], false, WAIT_SECONDS);
}

/** Retain only when the object says so; an unreadable policy deletes nothing. */
function deletionPolicy(spec: unknown): "Delete" | "Retain" | "Invalid" {
  const value = (spec as { deletionPolicy?: unknown } | null | undefined)?.deletionPolicy;
  if (value === undefined) return "Delete";
  return value === "Delete" || value === "Retain" ? value : "Invalid";
}
