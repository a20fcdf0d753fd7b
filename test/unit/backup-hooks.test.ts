// The hooks of backup and restore as table tests: what the backup sync and the EtcdStorage sync
// answer for each state of the Job and of its pod's termination message (the program's JSON
// line), that a final status is never followed by a new Job, and what customize asks for.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { CronJob } from "kubernetes-models/batch/v1/CronJob";
import { Job } from "kubernetes-models/batch/v1/Job";
import { customizeBackup, finalizeBackup, readBackupSpec, syncBackup } from "../../hooks/backup.ts";
import { backupJobName, buildBackupJob, buildDeleteJob, buildRestoreJob, deleteJobName } from "../../hooks/children/backup-jobs.ts";
import { customize } from "../../hooks/customize.ts";
import { createMetrics } from "../../hooks/metrics.ts";
import type { Condition, HookRequest, KubeObject } from "../../hooks/observed.ts";
import { readSpec } from "../../hooks/spec.ts";
import { sync } from "../../hooks/sync.ts";
import { restrictedViolations } from "../support/pod-security.ts";
import { etcdStorage, namespacesRelated, observe, SAMPLE_SPEC, testConfig } from "../support/requests.ts";

const config = testConfig();
const now = new Date("2026-11-22T12:00:00Z");
const NS = config.proxyNamespace;

const backupParent = (status?: Record<string, unknown>, spec: Record<string, unknown> = { storage: "alpha", volumeClaim: "backups" }) => ({
  apiVersion: "etcdproxy.dev/v1alpha1",
  kind: "EtcdStorageBackup",
  metadata: { name: "nightly", uid: "uid-nightly", generation: 1 },
  spec,
  ...(status ? { status } : {}),
});

const SUMMARY = { backedUp: true, tenant: "alpha", prefix: "/etcdstorage/alpha/", revision: 812, keys: 40, leases: 2, bytes: 90_000, sha256: "a".repeat(64), file: "/backups/nightly.etcdbackup", fileBytes: 95_000, pages: 1 };

function jobWith(job: KubeObject, conditions: Array<{ type: string; reason?: string; message?: string }>, completionTime?: string): KubeObject {
  return { ...job, status: { conditions: conditions.map((c) => ({ status: "True", ...c })), ...(completionTime ? { completionTime } : {}) } };
}

function pod(labels: Record<string, string>, container: string, exitCode: number, message: unknown, finishedAt = "2026-11-22T11:59:30Z"): KubeObject {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name: `${container}-${exitCode}-${finishedAt}`, namespace: NS, labels },
    status: { containerStatuses: [{ name: container, state: { terminated: { exitCode, finishedAt, ...(message === undefined ? {} : { message: typeof message === "string" ? message : JSON.stringify(message) }) } } }] },
  };
}

const podsRelated = (pods: KubeObject[]) => ({ "Pod.v1": Object.fromEntries(pods.map((p) => [`${NS}/${p.metadata.name}`, p])) });
const storageRelated = { "EtcdStorage.etcdproxy.dev/v1alpha1": { alpha: etcdStorage("alpha", SAMPLE_SPEC) } };

function backupRequest(parent: ReturnType<typeof backupParent>, job?: KubeObject, pods: KubeObject[] = [], withStorage = true): HookRequest {
  return { parent, children: { "Job.batch/v1": job ? { [`${NS}/${job.metadata.name}`]: job } : {} }, related: { ...(withStorage ? storageRelated : {}), ...podsRelated(pods) } };
}

const conditionOf = (status: Record<string, unknown>, type: string) => (status.conditions as Condition[]).find((c) => c.type === type);

describe("the backup Job", () => {
  const job = buildBackupJob("nightly", "alpha", "backups", config);
  test("runs the backup program from the project's image with the core credentials, the claim mounted, the file named after the backup, its outcome in the termination message", () => {
    assert.doesNotThrow(() => new Job(structuredClone(job) as never).validate());
    const spec = (job.spec as any).template.spec;
    const container = spec.containers[0];
    assert.equal(job.metadata.name, "etcd-backup-nightly");
    assert.equal(container.image, config.gatewayImage);
    assert.deepEqual(container.command, ["/usr/local/bin/node", "dist/gateway/backup/main.js", "backup"]);
    assert.deepEqual(container.args, [
      "--tenant=alpha",
      "--prefix=/etcdstorage/alpha/",
      "--endpoints=https://10.0.0.1:2379",
      "--cacert=/etc/etcd-proxy/core-ca/ca.crt",
      "--cert=/etc/etcd-proxy/core-client/tls.crt",
      "--key=/etc/etcd-proxy/core-client/tls.key",
      "--out=/backups/nightly.etcdbackup",
      "--result-file=/dev/termination-log",
    ]);
    assert.equal(container.terminationMessagePolicy, "File");
    assert.deepEqual(spec.volumes.at(-1), { name: "backups", persistentVolumeClaim: { claimName: "backups" } });
    assert.deepEqual(restrictedViolations(spec), []);
    // a refusal (exit 2 or 3) fails the Job at once; exit 1 is retried
    assert.deepEqual((job.spec as any).podFailurePolicy.rules, [{ action: "FailJob", onExitCodes: { containerName: "backup", operator: "In", values: [2, 3] } }]);
  });
  test("the restore Job reads the backup's file read-only, bounded by the tenant's storage quota", () => {
    const restore = buildRestoreJob("beta", "nightly", "backups", 268435456, config);
    assert.doesNotThrow(() => new Job(structuredClone(restore) as never).validate());
    const container = (restore.spec as any).template.spec.containers[0];
    assert.equal(restore.metadata.name, "etcd-beta-restore");
    assert.deepEqual(container.args.slice(0, 2), ["--tenant=beta", "--prefix=/etcdstorage/beta/"]);
    assert.deepEqual(container.args.slice(-3), ["--in=/backups/nightly.etcdbackup", "--quota-bytes=268435456", "--result-file=/dev/termination-log"]);
    assert.deepEqual(restrictedViolations((restore.spec as any).template.spec), []);
  });
});

describe("the backup sync, by what it observes", () => {
  const job = buildBackupJob("nightly", "alpha", "backups", config);
  const labels = (job.spec as any).template.metadata.labels as Record<string, string>;
  const cases: Array<{ name: string; request: HookRequest; complete: [string, string]; failed?: string; children: number; fields?: Record<string, unknown>; outcome: string }> = [
    { name: "no Job yet: the Job is created", request: backupRequest(backupParent()), complete: ["False", "Running"], children: 1, outcome: "BackupRunning" },
    { name: "the EtcdStorage does not exist: no Job", request: backupRequest(backupParent(), undefined, [], false), complete: ["False", "StorageNotFound"], children: 0, outcome: "BackupPending" },
    { name: "running, an attempt failed with exit 1: still running, the failure named", request: backupRequest(backupParent(), job, [pod(labels, "backup", 1, { failed: true, reason: "CoreUnavailable", exitCode: 1, message: "core etcd unreachable" })]), complete: ["False", "Running"], children: 1, outcome: "BackupRunning" },
    {
      name: "complete, with the summary in the termination message",
      request: backupRequest(backupParent(), jobWith(job, [{ type: "Complete" }], "2026-11-22T11:59:31Z"), [pod(labels, "backup", 0, SUMMARY)]),
      complete: ["True", "Completed"],
      children: 1,
      fields: { file: "nightly.etcdbackup", revision: 812, keys: 40, leases: 2, bytes: 90_000, fileBytes: 95_000, size: "92.8KiB", sha256: "a".repeat(64), completionTime: "2026-11-22T11:59:30Z" },
      outcome: "BackupComplete",
    },
    { name: "complete, the pod not observed yet: Unknown", request: backupRequest(backupParent(), jobWith(job, [{ type: "Complete" }])), complete: ["Unknown", "ReadingResult"], children: 1, outcome: "BackupRunning" },
    ...(["Compacted", "VolumeFull", "CoreUnavailable"] as const).map((reason) => ({
      name: `failed: ${reason}, with the program's message`,
      request: backupRequest(backupParent(), jobWith(job, [{ type: "Failed", reason: "PodFailurePolicy" }]), [pod(labels, "backup", 3, { failed: true, reason, exitCode: 3, message: `backup failed: ${reason}` })]),
      complete: ["False", reason] as [string, string],
      failed: reason,
      children: 1,
      outcome: "BackupFailed",
    })),
    { name: "failed without a readable message: the Job's reason", request: backupRequest(backupParent(), jobWith(job, [{ type: "Failed", reason: "DeadlineExceeded", message: "Job was active longer than specified deadline" }]), [pod(labels, "backup", 137, "OOMKilled?")]), complete: ["False", "DeadlineExceeded"], failed: "DeadlineExceeded", children: 1, outcome: "BackupFailed" },
    { name: "an invalid spec: no Job", request: backupRequest(backupParent(undefined, { storage: "Alpha", volumeClaim: "backups" })), complete: ["False", "InvalidSpec"], children: 0, outcome: "InvalidSpec" },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const { response, report } = syncBackup(c.request, config, now);
      const complete = conditionOf(response.status, "Complete")!;
      assert.deepEqual([complete.status, complete.reason], c.complete, complete.message);
      assert.equal(conditionOf(response.status, "Failed")?.reason, c.failed);
      assert.equal(response.children.length, c.children);
      if (c.children > 0) assert.equal(response.children[0]!.metadata.name, backupJobName("nightly"));
      for (const [field, value] of Object.entries(c.fields ?? {})) assert.deepEqual(response.status[field], value, field);
      assert.equal(report.outcome, c.outcome);
      if (c.failed) assert.match(complete.message, new RegExp(c.failed === "DeadlineExceeded" ? "deadline" : `backup failed: ${c.failed}`));
    });
  }

  test("once status is final, the answer stays: the Job is kept while it exists, never created again, transition times carried", () => {
    const first = syncBackup(backupRequest(backupParent(), jobWith(job, [{ type: "Complete" }]), [pod(labels, "backup", 0, SUMMARY)]), config, now);
    const later = new Date(now.getTime() + 3600_000);
    const kept = syncBackup(backupRequest(backupParent(first.response.status), jobWith(job, [{ type: "Complete" }]), []), config, later);
    assert.deepEqual(kept.response.status, first.response.status, "the same status, its lastTransitionTime carried");
    assert.equal(kept.response.children.length, 1);
    const gone = syncBackup(backupRequest(backupParent(first.response.status)), config, later);
    assert.deepEqual(gone.response.children, [], "a deleted Job is not created again");
    assert.deepEqual(gone.response.status, first.response.status);
    assert.equal(gone.report.completedAt?.toISOString(), "2026-11-22T11:59:30.000Z");
    const failed = syncBackup(backupRequest(backupParent(), jobWith(job, [{ type: "Failed" }]), [pod(labels, "backup", 3, { failed: true, reason: "VolumeFull", exitCode: 3, message: "no space" })]), config, now);
    const stays = syncBackup(backupRequest(backupParent(failed.response.status)), config, later);
    assert.deepEqual([stays.response.children, stays.response.status], [[], failed.response.status], "nor after a failure");
  });

  test("the spec is the schema's: CEL messages, the name bounded by its Job's", () => {
    assert.deepEqual(readBackupSpec(backupParent()), { valid: true, spec: { storage: "alpha", volumeClaim: "backups", deletionPolicy: "Retain" } });
    assert.deepEqual(readBackupSpec(backupParent(undefined, { storage: "alpha", volumeClaim: "backups", deletionPolicy: "Delete" })), { valid: true, spec: { storage: "alpha", volumeClaim: "backups", deletionPolicy: "Delete" } });
    const problems = (spec: Record<string, unknown>, name = "nightly") => {
      const read = readBackupSpec({ metadata: { name }, spec });
      return read.valid ? [] : read.problems;
    };
    assert.match(problems({ storage: "Alpha", volumeClaim: "b" }).join(), /must name an EtcdStorage/);
    assert.match(problems({ storage: "a", volumeClaim: "B_" }).join(), /must name a PersistentVolumeClaim/);
    assert.match(problems({ storage: "a" }).join(), /volumeClaim/);
    assert.match(problems({ storage: "a", volumeClaim: "b", deletionPolicy: "Keep" }).join(), /deletionPolicy.*Retain, Delete|allowed values/);
    assert.match(problems({ storage: "a", volumeClaim: "b" }, "x".repeat(51)).join(), /at most 50 characters|must NOT have more than 50/);
  });

  test("customize asks for the EtcdStorage and the Job's pods, by label", () => {
    assert.deepEqual(customizeBackup(backupParent() as never, config).relatedResources, [
      { apiVersion: "etcdproxy.dev/v1alpha1", resource: "etcdstorages", names: ["alpha"] },
      { apiVersion: "v1", resource: "pods", namespace: NS, labelSelector: { matchLabels: { "etcdproxy.dev/backup": "nightly" } } },
    ]);
  });

  test("/metrics: each tenant's last successful backup time, only ever moving forward", async () => {
    const metrics = createMetrics();
    metrics.backup({ backup: "a", tenant: "alpha", outcome: "BackupComplete", completedAt: new Date("2026-11-22T10:00:00Z") });
    metrics.backup({ backup: "b", tenant: "alpha", outcome: "BackupComplete", completedAt: new Date("2026-11-21T10:00:00Z") });
    metrics.backup({ backup: "c", tenant: "beta", outcome: "BackupFailed" });
    const text = await metrics.registry.metrics();
    assert.match(text, /etcdstorage_tenant_last_backup_timestamp_seconds\{tenant="alpha"\} 1795341600\b/);
    assert.doesNotMatch(text, /etcdstorage_tenant_last_backup_timestamp_seconds\{tenant="beta"\}/);
  });
});

describe("deleting an EtcdStorageBackup: its deletionPolicy", () => {
  const deleting = (spec: Record<string, unknown>, job?: KubeObject, pods: KubeObject[] = []) => {
    const parent = backupParent({ file: "nightly.etcdbackup", conditions: [{ type: "Complete", status: "True", reason: "Completed", message: "done", lastTransitionTime: "2026-11-22T11:00:00Z" }] }, spec);
    return backupRequest({ ...parent, metadata: { ...parent.metadata, deletionTimestamp: "2026-11-22T11:59:00Z" } } as never, job, pods);
  };
  const deleteSpec = { storage: "alpha", volumeClaim: "backups", deletionPolicy: "Delete" };

  test("Retain (the default): finalized at once, the file left alone", () => {
    const { response } = finalizeBackup(deleting({ storage: "alpha", volumeClaim: "backups" }), config, now);
    assert.deepEqual([response.finalized, response.children], [true, []]);
  });

  test("Delete: the backup's Job is stopped first; then a Job deletes the file; finalized once it completed", () => {
    const backupJob = buildBackupJob("nightly", "alpha", "backups", config);
    const stopping = finalizeBackup(deleting(deleteSpec, backupJob), config, now);
    assert.deepEqual([stopping.response.finalized, stopping.response.children], [false, []], "no delete Job while the backup's Job may still write");
    assert.equal((stopping.response.status.conditions as Condition[]).find((c) => c.type === "FileDeleted")?.reason, "StoppingBackup");
    assert.equal((stopping.response.status.conditions as Condition[]).find((c) => c.type === "Complete")?.status, "True", "what the backup was stays in status");

    // The Job gone but its pod still terminating: it could write the file again.
    const backupPod = (phase: string): KubeObject => ({ apiVersion: "v1", kind: "Pod", metadata: { name: "etcd-backup-nightly-x1", namespace: NS, labels: { "etcdproxy.dev/backup": "nightly", "batch.kubernetes.io/job-name": "etcd-backup-nightly" } }, status: { phase } });
    const terminating = finalizeBackup(deleting(deleteSpec, undefined, [backupPod("Running")]), config, now);
    assert.deepEqual([terminating.response.finalized, terminating.response.children], [false, []]);
    assert.equal((terminating.response.status.conditions as Condition[]).find((c) => c.type === "FileDeleted")?.reason, "StoppingBackup");

    const deleteJob = buildDeleteJob("nightly", "alpha", "backups", config);
    const started = finalizeBackup(deleting(deleteSpec, undefined, [backupPod("Succeeded")]), config, now);
    assert.deepEqual([started.response.finalized, started.response.children], [false, [deleteJob]]);
    assert.equal(deleteJob.metadata.name, deleteJobName("nightly"));
    const container = (deleteJob.spec as any).template.spec.containers[0];
    assert.deepEqual([container.command, container.args], [["/usr/local/bin/node", "dist/gateway/backup/main.js", "delete"], ["--file=/backups/nightly.etcdbackup"]]);
    assert.deepEqual(restrictedViolations((deleteJob.spec as any).template.spec), []);
    assert.doesNotThrow(() => new Job(structuredClone(deleteJob) as never).validate());

    const done = finalizeBackup(deleting(deleteSpec, jobWith(deleteJob, [{ type: "Complete" }])), config, now);
    assert.equal(done.response.finalized, true);
  });

  test("Delete: a restore reading the file holds its deletion until the restore has ended", () => {
    const restorePod = (phase: string): KubeObject => ({ apiVersion: "v1", kind: "Pod", metadata: { name: "etcd-beta-restore-x1", namespace: NS, labels: (buildRestoreJob("beta", "nightly", "backups", 1, config).spec as any).template.metadata.labels }, status: { phase } });
    const reading = finalizeBackup(deleting(deleteSpec, undefined, [restorePod("Running")]), config, now);
    assert.deepEqual([reading.response.finalized, reading.response.children], [false, []]);
    const condition = (reading.response.status.conditions as Condition[]).find((c) => c.type === "FileDeleted")!;
    assert.equal(condition.reason, "RestoreReading");
    assert.match(condition.message, /pod .*\/etcd-beta-restore-x1 is restoring from nightly.etcdbackup/);
    const ended = finalizeBackup(deleting(deleteSpec, undefined, [restorePod("Succeeded")]), config, now);
    assert.deepEqual(ended.response.children, [buildDeleteJob("nightly", "alpha", "backups", config)]);
  });

  test("Delete: a delete Job that failed holds the object, saying why and what to do", () => {
    const failedJob = jobWith(buildDeleteJob("nightly", "alpha", "backups", config), [{ type: "Failed", reason: "DeadlineExceeded", message: "Job was active longer than specified deadline" }]);
    const held = finalizeBackup(deleting(deleteSpec, failedJob), config, now);
    assert.equal(held.response.finalized, false);
    const condition = (held.response.status.conditions as Condition[]).find((c) => c.type === "FileDeleted")!;
    assert.deepEqual([condition.status, condition.reason], ["False", "DeadlineExceeded"]);
    assert.match(condition.message, /could not delete nightly.etcdbackup on PersistentVolumeClaim .*\/backups .*delete the Job to try again, or remove the finalizer/);
  });
});

describe("restore: spec.dataSource", () => {
  const spec = { ...SAMPLE_SPEC, dataSource: { backup: "nightly" }, quota: { storage: "64Mi" } };
  const completedBackup = { ...backupParent({ conditions: [{ type: "Complete", status: "True", reason: "Completed", message: "", lastTransitionTime: "2026-11-22T11:00:00Z" }] }) };
  const restoreJob = buildRestoreJob("beta", "nightly", "backups", 64 * 1024 * 1024, config);
  const labels = (restoreJob.spec as any).template.metadata.labels as Record<string, string>;

  async function restoreSync(options: { backup?: object; job?: KubeObject; pods?: KubeObject[]; conditions?: Condition[] }) {
    const parent = etcdStorage("beta", spec, options.conditions ? { status: { conditions: options.conditions } } : {});
    const children = observe(options.job ? [options.job] : []);
    const related = { ...namespacesRelated(["sample-system"]), ...(options.backup ? { "EtcdStorageBackup.etcdproxy.dev/v1alpha1": { nightly: options.backup as KubeObject } } : {}), ...podsRelated(options.pods ?? []) };
    const { response } = await sync({ parent, children, related }, config, now);
    const deployment = response.children.find((c) => c.kind === "Deployment")!;
    const job = response.children.find((c) => c.kind === "Job");
    return { response, replicas: (deployment.spec as { replicas: number }).replicas, job, restored: conditionOf(response.status, "Restored")!, ready: conditionOf(response.status, "Ready")! };
  }

  const cases: Array<{ name: string; options: Parameters<typeof restoreSync>[0]; restored: [string, string]; job: boolean; serves: boolean; message?: RegExp }> = [
    { name: "the backup does not exist", options: {}, restored: ["False", "BackupNotFound"], job: false, serves: false },
    { name: "the backup has not completed", options: { backup: backupParent() }, restored: ["False", "BackupNotComplete"], job: false, serves: false },
    { name: "the restore Job is created", options: { backup: completedBackup }, restored: ["False", "Restoring"], job: true, serves: false },
    { name: "the backup is being deleted: no restore begins (its file may go at any moment)", options: { backup: { ...completedBackup, metadata: { ...completedBackup.metadata, deletionTimestamp: "2026-11-22T11:59:00Z" } } }, restored: ["False", "BackupBeingDeleted"], job: false, serves: false },
    { name: "the backup is being deleted while its restore runs: the restore goes on (the deletion waits for it)", options: { backup: { ...completedBackup, metadata: { ...completedBackup.metadata, deletionTimestamp: "2026-11-22T11:59:00Z" } }, job: restoreJob }, restored: ["False", "Restoring"], job: true, serves: false },
    { name: "the Job completed: Restored, the gateway serves", options: { backup: completedBackup, job: jobWith(restoreJob, [{ type: "Complete" }]), pods: [pod(labels, "restore", 0, { restored: true, keys: 40, bytes: 9000, leases: 2, from: { revision: 812 } })] }, restored: ["True", "Restored"], job: true, serves: true, message: /40 keys .* from EtcdStorageBackup nightly \(revision 812\)/ },
    ...(["PrefixNotEmpty", "OverQuota", "InvalidFile"] as const).map((reason) => ({
      name: `refused: ${reason}, reported with the program's message, the gateway held`,
      options: { backup: completedBackup, job: jobWith(restoreJob, [{ type: "Failed", reason: "PodFailurePolicy" }]), pods: [pod(labels, "restore", 3, { failed: true, reason, exitCode: 3, message: `restore refused: ${reason}` })] },
      restored: ["False", reason] as [string, string],
      job: true,
      serves: false,
      message: new RegExp(`restore refused: ${reason}.*not retried`),
    })),
  ];
  for (const c of cases) {
    test(c.name, async () => {
      const { replicas, job, restored, ready } = await restoreSync(c.options);
      assert.deepEqual([restored.status, restored.reason], c.restored, restored.message);
      assert.equal(job !== undefined, c.job);
      assert.equal(replicas, c.serves ? 2 : 0, "the gateway is held at 0 replicas until restored");
      if (!c.serves) assert.deepEqual([ready.status, ready.reason], ["False", c.restored[1]], "Ready carries the restore's reason");
      if (c.message) assert.match(restored.message, c.message);
    });
  }

  test("the restore Job reads the named backup's file from its claim, with the tenant's quota", async () => {
    const { job } = await restoreSync({ backup: completedBackup });
    assert.deepEqual(job, restoreJob);
  });

  test("once Restored (or refused) is recorded, no Job is made again: the prefix is never written twice", async () => {
    const done = await restoreSync({ backup: completedBackup, job: jobWith(restoreJob, [{ type: "Complete" }]), pods: [pod(labels, "restore", 0, { restored: true, keys: 1 })] });
    const after = await restoreSync({ backup: completedBackup, conditions: done.response.status.conditions as Condition[] });
    assert.equal(after.job, undefined);
    assert.equal(after.replicas, 2);
    assert.equal(after.restored.lastTransitionTime, done.restored.lastTransitionTime);
    const refused = await restoreSync({ backup: completedBackup, job: jobWith(restoreJob, [{ type: "Failed" }]), pods: [pod(labels, "restore", 3, { failed: true, reason: "PrefixNotEmpty", exitCode: 3, message: "not empty" })] });
    const jobGone = await restoreSync({ backup: completedBackup, conditions: refused.response.status.conditions as Condition[] });
    assert.deepEqual([jobGone.job, jobGone.replicas, jobGone.restored.reason], [undefined, 0, "PrefixNotEmpty"]);
  });

  test("without dataSource nothing changes: no Restored condition, no restore Job", async () => {
    const { response } = await sync({ parent: etcdStorage("beta", SAMPLE_SPEC), children: observe([]), related: namespacesRelated(["sample-system"]) }, config, now);
    assert.equal(conditionOf(response.status, "Restored"), undefined);
    assert.equal(response.children.filter((c) => c.kind === "Job").length, 0);
  });

  test("customize asks for the backup and the restore Job's pods; dataSource is read from the spec", () => {
    const related = customize(etcdStorage("beta", spec), config).relatedResources;
    assert.deepEqual(related.slice(-2), [
      { apiVersion: "etcdproxy.dev/v1alpha1", resource: "etcdstoragebackups", names: ["nightly"] },
      { apiVersion: "v1", resource: "pods", namespace: NS, labelSelector: { matchLabels: labels } },
    ]);
    const read = readSpec(etcdStorage("beta", spec), config);
    assert.ok(read.valid);
    assert.deepEqual(read.spec.dataSource, { backup: "nightly" });
    const bad = readSpec(etcdStorage("beta", { ...spec, dataSource: { backup: "Nightly" } }), config);
    assert.ok(!bad.valid && bad.problems.some((p) => p.includes("must name an EtcdStorageBackup")));
  });
});

describe("scheduled backups: spec.backup", () => {
  const schedule = { schedule: "0 3 * * *", keep: 5, volumeClaim: "backups" };
  const cronJobOf = async (spec: Record<string, unknown>) => {
    const { response } = await sync({ parent: etcdStorage("alpha", spec), children: observe([]), related: namespacesRelated(["sample-system"]) }, config, now);
    return { response, cronJob: response.children.find((c) => c.kind === "CronJob") };
  };

  test("the sync returns a CronJob: schema-valid, one at a time, in UTC, each run creating an EtcdStorageBackup through the API server with its own service account and no etcd credentials", async () => {
    const { cronJob } = await cronJobOf({ ...SAMPLE_SPEC, backup: schedule });
    assert.ok(cronJob);
    assert.doesNotThrow(() => new CronJob(structuredClone(cronJob) as never).validate());
    assert.deepEqual([cronJob.metadata.name, cronJob.metadata.namespace], ["etcd-alpha", NS]);
    assert.ok(cronJob.metadata.name.length <= 52, "a CronJob's name has at most 52 characters");
    const spec = cronJob.spec as any;
    assert.equal(spec.schedule, "0 3 * * *");
    assert.equal(spec.timeZone, "Etc/UTC");
    assert.equal(spec.concurrencyPolicy, "Forbid");
    const podSpec = spec.jobTemplate.spec.template.spec;
    assert.deepEqual(restrictedViolations(podSpec), []);
    const container = podSpec.containers[0];
    assert.deepEqual(container.command, ["/usr/local/bin/node", "dist/gateway/backup/main.js", "schedule"]);
    assert.deepEqual(container.args, [
      "--tenant=alpha",
      "--volume-claim=backups",
      "--keep=5",
      "--kube-ca-file=/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
      "--token-file=/var/run/secrets/kubernetes.io/serviceaccount/token",
      "--result-file=/dev/termination-log",
    ]);
    assert.equal(podSpec.serviceAccountName, "etcdstorage-backup-scheduler");
    assert.deepEqual(podSpec.volumes, [
      {
        name: "kube-api-access",
        projected: { defaultMode: 0o444, sources: [{ serviceAccountToken: { path: "token", expirationSeconds: 3600 } }, { configMap: { name: "kube-root-ca.crt", items: [{ key: "ca.crt", path: "ca.crt" }] } }] },
      },
    ], "a bound token and the cluster's CA; neither the core etcd credentials nor the claim");
    assert.deepEqual((spec.jobTemplate.spec as any).podFailurePolicy.rules, [{ action: "FailJob", onExitCodes: { containerName: "schedule", operator: "In", values: [2, 3] } }]);
    assert.equal(spec.jobTemplate.metadata.labels["app.kubernetes.io/component"], "backup");
    assert.equal(spec.jobTemplate.metadata.labels["etcdproxy.dev/backup"], undefined, "not selected as an EtcdStorageBackup's pods");
  });

  test("keep defaults to 7; without spec.backup there is no CronJob", async () => {
    const { cronJob } = await cronJobOf({ ...SAMPLE_SPEC, backup: { schedule: "@daily", volumeClaim: "backups" } });
    assert.ok((cronJob!.spec as any).jobTemplate.spec.template.spec.containers[0].args.includes("--keep=7"));
    assert.equal((await cronJobOf(SAMPLE_SPEC)).cronJob, undefined);
  });

  test("status.backup: the schedule in effect and what the CronJob last did; its last success feeds /metrics as an on-demand backup does", async () => {
    const { response: first } = await cronJobOf({ ...SAMPLE_SPEC, backup: schedule });
    assert.deepEqual(first.status.backup, schedule);
    const cronJob = first.children.find((c) => c.kind === "CronJob")!;
    const observed = { ...cronJob, status: { lastScheduleTime: "2026-11-22T03:00:00Z", lastSuccessfulTime: "2026-11-22T03:04:10Z" } };
    const { response, report } = await sync({ parent: etcdStorage("alpha", { ...SAMPLE_SPEC, backup: schedule }), children: observe([observed]), related: namespacesRelated(["sample-system"]) }, config, now);
    assert.deepEqual(response.status.backup, { ...schedule, lastScheduleTime: "2026-11-22T03:00:00Z", lastSuccessfulTime: "2026-11-22T03:04:10Z" });
    assert.deepEqual(report.lastBackupAt, new Date("2026-11-22T03:04:10Z"));
    const metrics = createMetrics();
    metrics.report(report);
    assert.match(await metrics.registry.metrics(), new RegExp(`etcdstorage_tenant_last_backup_timestamp_seconds\\{tenant="alpha"\\} ${Date.parse("2026-11-22T03:04:10Z") / 1000}\\b`));
  });

  const refusals: Array<[string, Record<string, unknown>, RegExp]> = [
    ["a schedule of four fields", { schedule: "0 3 * *", volumeClaim: "b" }, /spec\.backup\.schedule: must be a cron schedule of five fields/],
    ["a schedule with a time zone", { schedule: "TZ=Europe/Paris 0 3 * * *", volumeClaim: "b" }, /spec\.backup\.schedule: .*the time zone is always UTC/],
    ["an unknown macro", { schedule: "@sometimes", volumeClaim: "b" }, /spec\.backup\.schedule: must be a cron schedule/],
    ["keep 0", { schedule: "@daily", keep: 0, volumeClaim: "b" }, /spec\.backup\.keep: must be from 1 to 1000 backups to keep/],
    ["keep 1001", { schedule: "@daily", keep: 1001, volumeClaim: "b" }, /spec\.backup\.keep: must be from 1 to 1000/],
    ["a claim that is no name", { schedule: "@daily", volumeClaim: "Backups!" }, /spec\.backup\.volumeClaim: must name a PersistentVolumeClaim/],
    ["no claim", { schedule: "@daily" }, /spec\.backup.*volumeClaim/],
  ];
  for (const [what, backup, message] of refusals) {
    test(`refused: ${what}, with the schema's message`, () => {
      const read = readSpec(etcdStorage("alpha", { ...SAMPLE_SPEC, backup }), config);
      assert.equal(read.valid, false);
      assert.match(!read.valid ? read.problems.join("; ") : "", message);
    });
  }
  test("accepted: five fields with ranges, steps, lists and names; each macro", () => {
    for (const schedule of ["*/15 2-4 1,15 JAN-DEC MON-FRI", "0 3 * * *", "@hourly", "@weekly", "@monthly", "@yearly"]) {
      assert.equal(readSpec(etcdStorage("alpha", { ...SAMPLE_SPEC, backup: { schedule, volumeClaim: "b" } }), config).valid, true, schedule);
    }
  });
});
