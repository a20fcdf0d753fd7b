// Scheduled backups (EtcdStorage spec.backup) on real parts: kube-apiserver accepts the CronJob the
// sync returns; each run is its Job's container run from its exact command (test/e2e/system.ts
// says what stands in for the kubelet, the CronJob and Job controllers, and Metacontroller), with a
// service account token the API server issued. Each run creates an EtcdStorageBackup through the
// API server with that token (RBAC of manifests/backup-scheduler.yaml), which the backup
// CompositeController's stand-in reconciles; the run waits for it, then deletes the older
// scheduled ones beyond `keep`, whose finalize deletes their files. After N+2 runs, exactly the
// newest N objects and files remain, each verified and holding what the tenant had by then; an
// on-demand backup, another tenant's scheduled one and other files are never touched; a scheduled
// backup restores like any other.
import assert from "node:assert/strict";
import { mkdir, readdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { connect, type EtcdClient } from "../support/etcd-client.ts";
import { spawnManaged, stopAll, tempDir, waitFor } from "./harness.ts";
import type { KubeObject } from "./kube.ts";
import { CompositeControllerStandIn } from "./metacontroller.ts";
import { applyJson, markJobFailed, PROXY_NAMESPACE, REPO_ROOT, runJob as runJobOf, runPod, startSystem, type RunningSystem } from "./system.ts";

const TENANT = "sched";
const PREFIX = `/etcdstorage/${TENANT}/`;
const KEEP = 2;
const RUNS = KEEP + 2;
const CLAIM = "tenant-backups";
const SCHEDULED_FOR = "etcdproxy.dev/scheduled-for";
const BACKUPS = "/apis/etcdproxy.dev/v1alpha1/etcdstoragebackups";
type Condition = { type: string; status: string; reason: string; message: string };
const condition = (object: KubeObject | undefined, type: string) => ((object?.status as { conditions?: Condition[] } | undefined)?.conditions ?? []).find((c) => c.type === type);

describe("real Kubernetes: scheduled backups are EtcdStorageBackups, and retention deletes the oldest with their files", () => {
  let dir: string;
  let system: RunningSystem;
  let core: EtcdClient;
  let backups: CompositeControllerStandIn;
  let claimDir: string;
  let cronJob: KubeObject;

  before(async () => {
    dir = await tempDir("backup-schedule-");
    system = await startSystem(dir, { line: "3.6" });
    core = connect(system.host.core.endpoint, { ...system.host.core.tls, servername: "localhost" });
    backups = await CompositeControllerStandIn.load(system.host.api, "etcdstoragebackup", system.hooksUrl);
    claimDir = path.join(dir, "claims", CLAIM);
    await mkdir(claimDir, { recursive: true });
    await applyJson(system.host, { apiVersion: "v1", kind: "PersistentVolumeClaim", metadata: { name: CLAIM, namespace: PROXY_NAMESPACE }, spec: { accessModes: ["ReadWriteMany"], resources: { requests: { storage: "1Gi" } } } });
    await applyJson(system.host, { apiVersion: "v1", kind: "Namespace", metadata: { name: "sched-system" } });
  });

  after(async () => {
    core?.close();
    system?.host.api.close();
    await stopAll();
  });

  const list = async (selector: string) => (await system.host.api.call<{ items: KubeObject[] }>("GET", `${BACKUPS}?labelSelector=${encodeURIComponent(selector)}`)).items;

  const runJob = (name: string, container: string, where: string) => runJobOf(system.host, path.join(dir, where), name, container, { [CLAIM]: claimDir });


  /** The CronJob controller's part: the Job of one scheduled time, from the jobTemplate, owned by the CronJob. */
  async function createScheduledJob(minutes: number): Promise<string> {
    const template = cronJob.spec as { jobTemplate: { metadata: { labels: Record<string, string> }; spec: Record<string, unknown> } };
    const name = `${cronJob.metadata.name}-${minutes}`;
    await system.host.api.call("POST", system.host.api.resourcePath("batch/v1", "jobs", PROXY_NAMESPACE), {
      apiVersion: "batch/v1",
      kind: "Job",
      metadata: { name, namespace: PROXY_NAMESPACE, labels: template.jobTemplate.metadata.labels, ownerReferences: [{ apiVersion: "batch/v1", kind: "CronJob", name: cronJob.metadata.name, uid: cronJob.metadata.uid, controller: true, blockOwnerDeletion: true }] },
      spec: template.jobTemplate.spec,
    });
    return name;
  }

  /** Backup reconciled until its Job ran and status says Complete (the backup CompositeController and its Job). */
  async function completeBackup(name: string, run: number) {
    const first = await backups.reconcile(name);
    assert.deepEqual(first.changes, [`Job ${PROXY_NAMESPACE}/etcd-backup-${name}: created`]);
    const job = await runJob(`etcd-backup-${name}`, "backup", `backup-${run}`);
    assert.equal(job.exit.code, 0, job.logs);
    await backups.reconcile(name);
  }

  /** A deleted backup's finalize, reconciled to its end: the backup's Job stopped, the delete Job run, the finalizer removed. */
  async function finalizeDeleted(name: string) {
    const stopping = await backups.reconcile(name);
    assert.equal(condition(stopping.answer as never, "FileDeleted")?.reason, "StoppingBackup");
    const deleting = await backups.reconcile(name);
    assert.deepEqual(deleting.changes, [`Job ${PROXY_NAMESPACE}/etcd-delete-${name}: created`]);
    const job = await runJob(`etcd-delete-${name}`, "delete", `delete-${name}`);
    assert.equal(job.exit.code, 0, job.logs);
    const done = await backups.reconcile(name);
    assert.equal(done.answer.finalized, true);
    assert.equal(await system.host.api.get("etcdproxy.dev/v1alpha1", "EtcdStorageBackup", name), undefined, "the object is gone once its file is");
  }

  async function verify(file: string) {
    const child = spawnManaged(process.execPath, ["dist/gateway/backup/main.js", "verify", `--in=${file}`], { cwd: REPO_ROOT, env: { PATH: process.env.PATH ?? "/usr/bin:/bin" } });
    const { code } = await child.exited;
    assert.equal(code, 0, child.stderr());
    return JSON.parse(child.stdout().trim().split("\n").at(-1)!) as { verified: boolean; keys: number };
  }

  test("the sync's CronJob is accepted by the API server, under the restricted profile, without warnings", async () => {
    const tenant = { apiVersion: "etcdproxy.dev/v1alpha1", kind: "EtcdStorage", metadata: { name: TENANT }, spec: { clientCertSecret: [{ name: "etcd-client", namespace: "sched-system" }], backup: { schedule: "*/5 * * * *", keep: KEEP, volumeClaim: CLAIM } } };
    await applyJson(system.host, tenant);
    const reconciled = await system.metacontroller.reconcile(TENANT);
    assert.ok(reconciled.changes.includes(`CronJob ${PROXY_NAMESPACE}/etcd-${TENANT}: created`), reconciled.changes.join("; "));
    assert.deepEqual(system.host.api.warnings, []);
    cronJob = (await system.host.api.get("batch/v1", "CronJob", `etcd-${TENANT}`, PROXY_NAMESPACE))!;
    assert.equal((cronJob.spec as { schedule: string }).schedule, "*/5 * * * *");
  });

  let scheduled: { name: string; keys: number }[] = [];

  test(`${RUNS} runs: each creates one EtcdStorageBackup and waits for it; exactly the newest ${KEEP} objects and files remain, each verified; nothing else is touched`, async (t) => {
    // What must survive: an on-demand backup of the tenant (Retain), another tenant's scheduled one, other files.
    await applyJson(system.host, { apiVersion: "etcdproxy.dev/v1alpha1", kind: "EtcdStorageBackup", metadata: { name: "on-demand" }, spec: { storage: TENANT, volumeClaim: CLAIM } });
    await applyJson(system.host, { apiVersion: "etcdproxy.dev/v1alpha1", kind: "EtcdStorageBackup", metadata: { name: "other-20200101-000000", labels: { [SCHEDULED_FOR]: "other" } }, spec: { storage: "other", volumeClaim: CLAIM, deletionPolicy: "Delete" } });
    const others = ["other-20200101-000000.etcdbackup", "on-demand.etcdbackup", "README.txt"];
    for (const name of others) await writeFile(path.join(claimDir, name), "not a backup of sched");

    const base = Math.floor(Date.now() / 60_000);
    for (let run = 1; run <= RUNS; run++) {
      await core.kv.put({ key: `${PREFIX}registry/widgets/w-${run}`, value: Buffer.from(`widget ${run}`) });
      const known = new Set(scheduled.map((s) => s.name));
      const job = await createScheduledJob(base + run);
      const runner = await runPod(system.host, path.join(dir, `schedule-${run}`), { apiVersion: "batch/v1", kind: "Job", namespace: PROXY_NAMESPACE, name: job }, "schedule", {});
      const created = await waitFor(`run ${run}'s EtcdStorageBackup`, async () => (await list(`${SCHEDULED_FOR}=${TENANT}`)).find((b) => !known.has(b.metadata.name)), 20_000, () => runner.logs());
      const name = created.metadata.name;
      assert.match(name, /^sched-\d{8}-\d{6}$/);
      assert.deepEqual(created.spec, { storage: TENANT, volumeClaim: CLAIM, deletionPolicy: "Delete" });
      await completeBackup(name, run);

      const exit = await runner.exited;
      assert.equal(exit.code, 0, runner.logs());
      const outcome = JSON.parse(await runner.terminationMessage()) as { scheduled: boolean; backup: string; keys: number; deleted: string[] };
      assert.deepEqual([outcome.scheduled, outcome.backup, outcome.keys], [true, name, run], "every key written so far, at one revision");
      const expected = run > KEEP ? [scheduled[run - 1 - KEEP]!.name] : [];
      assert.deepEqual(outcome.deleted, expected, `run ${run} deletes the oldest once more than ${KEEP}`);
      for (const victim of outcome.deleted) await finalizeDeleted(victim);
      scheduled.push({ name, keys: outcome.keys });
      t.diagnostic(`run ${run}: ${name}${outcome.deleted.length ? `, deleted ${outcome.deleted.join(", ")}` : ""}`);
    }

    const newest = scheduled.slice(-KEEP);
    assert.deepEqual((await list(`${SCHEDULED_FOR}=${TENANT}`)).map((b) => b.metadata.name).sort(), newest.map((s) => s.name).sort(), "exactly the newest objects");
    assert.deepEqual((await readdir(claimDir)).sort(), [...newest.map((s) => `${s.name}.etcdbackup`), ...others].sort(), "exactly their files, and everything else");
    for (const { name, keys } of newest) {
      const verified = await verify(path.join(claimDir, `${name}.etcdbackup`));
      assert.deepEqual([verified.verified, verified.keys], [true, keys]);
      const object = await system.host.api.get("etcdproxy.dev/v1alpha1", "EtcdStorageBackup", name);
      assert.deepEqual([condition(object, "Complete")?.status, (object!.status as { keys: number }).keys], ["True", keys]);
    }
    for (const name of ["on-demand", "other-20200101-000000"]) assert.ok(await system.host.api.get("etcdproxy.dev/v1alpha1", "EtcdStorageBackup", name), `${name} is not deleted`);
  });

  test("the runs' service account may create and delete EtcdStorageBackups, and read no Secret", async () => {
    const may = async (verb: string, resource: string, group = "") => {
      const review = await system.host.api.call<{ status: { allowed: boolean } }>("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", {
        apiVersion: "authorization.k8s.io/v1",
        kind: "SubjectAccessReview",
        spec: { user: `system:serviceaccount:${PROXY_NAMESPACE}:etcdstorage-backup-scheduler`, groups: ["system:serviceaccounts", `system:serviceaccounts:${PROXY_NAMESPACE}`], resourceAttributes: { namespace: PROXY_NAMESPACE, verb, group, resource } },
      });
      return review.status.allowed;
    };
    assert.deepEqual(await Promise.all([may("create", "etcdstoragebackups", "etcdproxy.dev"), may("delete", "etcdstoragebackups", "etcdproxy.dev"), may("get", "secrets"), may("update", "etcdstorages", "etcdproxy.dev")]), [true, true, false, false]);
  });

  test("a failed backup fails the run (exit 3, not retried) and deletes nothing", async () => {
    const before = (await list(`${SCHEDULED_FOR}=${TENANT}`)).map((b) => b.metadata.name).sort();
    const job = await createScheduledJob(Math.floor(Date.now() / 60_000) + 100);
    const runner = await runPod(system.host, path.join(dir, "schedule-failing"), { apiVersion: "batch/v1", kind: "Job", namespace: PROXY_NAMESPACE, name: job }, "schedule", {});
    const created = await waitFor("the failing run's EtcdStorageBackup", async () => (await list(`${SCHEDULED_FOR}=${TENANT}`)).find((b) => !before.includes(b.metadata.name)), 20_000, () => runner.logs());
    const name = created.metadata.name;
    await backups.reconcile(name);
    // The backup's output exists already: the program refuses to overwrite it (exit 3), the Job fails.
    await writeFile(path.join(claimDir, `${name}.etcdbackup`), "in the way");
    const failed = await runJob(`etcd-backup-${name}`, "backup", "backup-failing");
    assert.equal(failed.exit.code, 2, failed.logs);
    await markJobFailed(system.host, PROXY_NAMESPACE, `etcd-backup-${name}`, failed.started, "Container backup for pod failed with exit code 2 matching FailJob rule at index 0");
    await backups.reconcile(name);
    assert.equal(condition(await system.host.api.get("etcdproxy.dev/v1alpha1", "EtcdStorageBackup", name), "Failed")?.status, "True");

    const exit = await runner.exited;
    assert.equal(exit.code, 3, runner.logs());
    const outcome = JSON.parse(await runner.terminationMessage()) as { failed: boolean; reason: string; message: string };
    assert.deepEqual([outcome.failed, outcome.reason], [true, "BackupFailed"]);
    assert.match(outcome.message, new RegExp(`EtcdStorageBackup ${name} failed .*no older backup was deleted`));
    assert.deepEqual((await list(`${SCHEDULED_FOR}=${TENANT}`)).map((b) => b.metadata.name).sort(), [...before, name].sort(), "nothing deleted");
  });

  test("deleting the on-demand backup (Retain) lets the object go and leaves its file", async () => {
    await backups.reconcile("on-demand"); // Metacontroller's finalizer on it, as on every EtcdStorageBackup
    await system.host.api.delete({ apiVersion: "etcdproxy.dev/v1alpha1", kind: "EtcdStorageBackup", metadata: { name: "on-demand" } } as KubeObject);
    const done = await backups.reconcile("on-demand");
    assert.deepEqual([done.answer.finalized, done.answer.children], [true, []]);
    assert.equal(await system.host.api.get("etcdproxy.dev/v1alpha1", "EtcdStorageBackup", "on-demand"), undefined);
    assert.ok((await readdir(claimDir)).includes("on-demand.etcdbackup"));
  });

  test("a scheduled backup restores like any other: a clone's dataSource names it", async () => {
    const newest = scheduled.at(-1)!;
    await applyJson(system.host, { apiVersion: "etcdproxy.dev/v1alpha1", kind: "EtcdStorage", metadata: { name: "clone" }, spec: { clientCertSecret: [{ name: "etcd-client-clone", namespace: "sched-system" }], dataSource: { backup: newest.name } } });
    const first = await system.metacontroller.reconcile("clone");
    assert.ok(first.changes.includes(`Job ${PROXY_NAMESPACE}/etcd-clone-restore: created`), first.changes.join("; "));
    const restore = await runJob("etcd-clone-restore", "restore", "restore-clone");
    assert.equal(restore.exit.code, 0, restore.logs);
    await system.metacontroller.reconcile("clone");
    const clone = await system.host.api.get("etcdproxy.dev/v1alpha1", "EtcdStorage", "clone");
    assert.equal(condition(clone, "Restored")?.status, "True", JSON.stringify(clone?.status));
    const keys = async (prefix: string) => (await core.kv.range({ key: Buffer.from(prefix), range_end: Buffer.from(prefix.slice(0, -1) + "0") })).kvs.map((kv) => [Buffer.from(kv.key).toString().slice(prefix.length), Buffer.from(kv.value).toString()]);
    assert.deepEqual(await keys("/etcdstorage/clone/"), (await keys(PREFIX)).slice(0, newest.keys));
  });
});
