// The seeds' demonstration extended to backup and restore, on real parts only (test/e2e/system.ts
// says what stands in for the kubelet, the controllers and Metacontroller; a local directory per
// PersistentVolumeClaim stands in for its volume): Flunders created through sample-apiserver, an
// EtcdStorageBackup reconciled by the second CompositeController, its Job run as a process from
// its exact command, its status read back through the API server; the EtcdStorage deleted (its
// keys gone); a new one with spec.dataSource restored from the backup before its gateway serves;
// sample-apiserver started against it serves every Flunder again, identical.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { load as loadYaml } from "js-yaml";
import { connect, type EtcdClient } from "../support/etcd-client.ts";
import { everyKey } from "./gateway-kit.ts";
import { httpGet, stopAll, tempDir } from "./harness.ts";
import type { KubeObject } from "./kube.ts";
import { CompositeControllerStandIn } from "./metacontroller.ts";
import { applyJson, collectGarbage, PROXY_NAMESPACE, REPO_ROOT, runJob as runJobOf, startSampleApiserver, startSystem, startTenant, type RunningSystem } from "./system.ts";

const TENANT = "sample-apiserver";
const PREFIX = `/etcdstorage/${TENANT}/`;
const BACKUP = "before-migration";
const CLAIM = "tenant-backups";
const FLUNDERS = "/apis/wardle.example.com/v1alpha1/namespaces/default/flunders";
const EXAMPLE = loadYaml(readFileSync(path.join(REPO_ROOT, "manifests/example-etcdstorage.yaml"), "utf8")) as KubeObject;
const text = (bytes: Uint8Array) => Buffer.from(bytes).toString("latin1");
type Condition = { type: string; status: string; reason: string; message: string };
const condition = (object: KubeObject | undefined, type: string) => ((object?.status as { conditions?: Condition[] } | undefined)?.conditions ?? []).find((c) => c.type === type);

describe("real Kubernetes: a tenant backed up, deleted, and restored from its EtcdStorageBackup", () => {
  let dir: string;
  let system: RunningSystem;
  let core: EtcdClient;
  let backups: CompositeControllerStandIn;
  let claimDir: string;
  let stored: KubeObject[];

  before(async () => {
    dir = await tempDir("kubernetes-backup-");
    system = await startSystem(dir, { line: "3.6" });
    core = connect(system.host.core.endpoint, { ...system.host.core.tls, servername: "localhost" });
    const established = await system.host.kubectl(["wait", "--for=condition=Established", "--timeout=30s", "crd/etcdstoragebackups.etcdproxy.dev"]);
    assert.equal(established.code, 0, established.stderr);
    backups = await CompositeControllerStandIn.load(system.host.api, "etcdstoragebackup", system.hooksUrl);
    claimDir = path.join(dir, "claims", CLAIM);
  });

  after(async () => {
    core?.close();
    system?.host.api.close();
    await stopAll();
  });

  const kubectl = (args: string[], input?: string) => system.host.kubectl(args, input);
  const flunder = (name: string, spec: Record<string, unknown> = {}) => ({ apiVersion: "wardle.example.com/v1alpha1", kind: "Flunder", metadata: { name, namespace: "default" }, spec });

  const runJob = (name: string, container: string, where: string) => runJobOf(system.host, path.join(dir, where), name, container, { [CLAIM]: claimDir });


  test("Flunders stored through sample-apiserver and the gateway", async () => {
    assert.equal((await kubectl(["create", "namespace", "sample-system"])).code, 0);
    assert.equal((await kubectl(["apply", "-f", path.join(REPO_ROOT, "manifests/example-etcdstorage.yaml")])).code, 0);
    const tenant = await startTenant(system, TENANT, path.join(dir, "gateway-1"));
    const sample = await startSampleApiserver(system, tenant, { namespace: "sample-system", secret: "etcd-client-cert", configMap: "etcd-serving-ca", dir: path.join(dir, "sample-apiserver-1") });
    await system.host.api.call("POST", FLUNDERS, flunder("first"));
    for (let i = 0; i < 20; i++) await system.host.api.call("POST", FLUNDERS, flunder(`flunder-${i}`, { reference: "first" }));
    stored = (await system.host.api.call<{ items: KubeObject[] }>("GET", FLUNDERS)).items;
    assert.equal(stored.length, 21);
    await sample.process.stop();
    await tenant.gateway.stop();
  });

  let summary: Record<string, unknown>;

  test("an EtcdStorageBackup: its Job runs the backup program onto the claim, and its status (read back through the API server) carries the termination message's summary", async () => {
    await applyJson(system.host, { apiVersion: "v1", kind: "PersistentVolumeClaim", metadata: { name: CLAIM, namespace: PROXY_NAMESPACE }, spec: { accessModes: ["ReadWriteMany"], resources: { requests: { storage: "1Gi" } } } });
    const created = await kubectl(["apply", "-f", "-"], JSON.stringify({ apiVersion: "etcdproxy.dev/v1alpha1", kind: "EtcdStorageBackup", metadata: { name: BACKUP }, spec: { storage: TENANT, volumeClaim: CLAIM } }));
    assert.equal(created.code, 0, created.stderr);
    assert.equal(created.stderr, "");

    const first = await backups.reconcile(BACKUP);
    assert.deepEqual(first.changes, [`Job ${PROXY_NAMESPACE}/etcd-backup-${BACKUP}: created`]);
    assert.deepEqual([condition(first.answer as never, "Complete")?.status, condition(first.answer as never, "Complete")?.reason], ["False", "Running"]);
    // sample-apiserver's own deprecation warning for Flunders aside.
    assert.deepEqual(system.host.api.warnings.filter((w) => !w.includes("Flunder is deprecated")), [], "PodSecurity's restricted profile has no word for the Job");

    const run = await runJob(`etcd-backup-${BACKUP}`, "backup", "backup-job");
    assert.equal(run.exit.code, 0, run.logs);
    summary = JSON.parse(run.message) as Record<string, unknown>;
    assert.equal(summary.backedUp, true);
    assert.equal(summary.keys, (await everyKey(core)).filter((kv) => text(kv.key).startsWith(PREFIX)).length, "every key of the prefix");

    const done = await backups.reconcile(BACKUP);
    assert.ok(done.statusWritten);
    const backup = await system.host.api.get("etcdproxy.dev/v1alpha1", "EtcdStorageBackup", BACKUP);
    const status = backup!.status as Record<string, unknown>;
    assert.deepEqual([condition(backup, "Complete")?.status, condition(backup, "Complete")?.reason], ["True", "Completed"], JSON.stringify(status));
    for (const field of ["revision", "keys", "leases", "bytes", "fileBytes", "sha256"]) assert.equal(status[field], summary[field], field);
    assert.equal(status.file, `${BACKUP}.etcdbackup`);
    assert.match(String(status.completionTime), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);

    // Level-triggered: the same observation changes nothing; the Job is not run again.
    const again = await backups.reconcile(BACKUP);
    assert.deepEqual([again.changes, again.statusWritten], [[], false]);

    const table = await kubectl(["get", "etcdstoragebackups"]);
    const [header, row] = table.stdout.trim().split("\n").map((line) => line.trim().split(/\s+/));
    assert.deepEqual(header, ["NAME", "STORAGE", "COMPLETE", "REASON", "REVISION", "KEYS", "SIZE", "COMPLETED", "AGE"]);
    assert.deepEqual(row!.slice(0, 6), [BACKUP, TENANT, "True", "Completed", String(summary.revision), String(summary.keys)]);

    const metrics = await httpGet(`${system.hooksUrl}/metrics`);
    const seconds = Date.parse(String(status.completionTime)) / 1000;
    assert.ok(metrics.body.includes(`etcdstorage_tenant_last_backup_timestamp_seconds{tenant="${TENANT}"} ${seconds}`), metrics.body.split("\n").filter((l) => l.includes("last_backup")).join("\n"));
  });

  test("the EtcdStorage deleted: the cleanup Job deletes its keys", async () => {
    assert.equal((await kubectl(["delete", "etcdstorage", TENANT, "--wait=false"])).code, 0);
    await system.metacontroller.reconcile(TENANT);
    await system.metacontroller.reconcile(TENANT);
    const cleanup = await runJob(`etcd-${TENANT}-cleanup`, "etcdctl", "cleanup");
    assert.equal(cleanup.exit.code, 0, cleanup.logs);
    const last = await system.metacontroller.reconcile(TENANT);
    assert.equal(last.answer.finalized, true);
    await collectGarbage(system, last.request.parent.metadata.uid!);
    assert.deepEqual((await everyKey(core)).filter((kv) => text(kv.key).startsWith(PREFIX)).map((kv) => text(kv.key)), [], "the data is gone");
  });

  test("a new EtcdStorage with dataSource: its gateway is held until the restore Job completed; dataSource is immutable; every Flunder is served again, identical", async () => {
    const restored = { ...EXAMPLE, spec: { ...(EXAMPLE.spec as object), dataSource: { backup: BACKUP } } };
    const applied = await kubectl(["apply", "-f", "-"], JSON.stringify(restored));
    assert.equal(applied.code, 0, applied.stderr);
    const first = await system.metacontroller.reconcile(TENANT);
    assert.ok(first.changes.includes(`Job ${PROXY_NAMESPACE}/etcd-${TENANT}-restore: created`), first.changes.join("; "));
    const held = await system.host.api.get("apps/v1", "Deployment", `etcd-${TENANT}`, PROXY_NAMESPACE);
    assert.equal((held!.spec as { replicas: number }).replicas, 0, "the gateway serves nothing before the restore");
    const restoring = await system.host.api.get("etcdproxy.dev/v1alpha1", "EtcdStorage", TENANT);
    assert.deepEqual([condition(restoring, "Restored")?.reason, condition(restoring, "Ready")?.reason], ["Restoring", "Restoring"]);

    // The transition rule: dataSource can be neither changed nor removed (nor added later).
    for (const patch of [{ spec: { dataSource: { backup: "another" } } }, { spec: { dataSource: null } }]) {
      const refused = await kubectl(["patch", "etcdstorage", TENANT, "--type=merge", "-p", JSON.stringify(patch)]);
      assert.notEqual(refused.code, 0, JSON.stringify(patch));
      assert.match(refused.stderr, /dataSource is immutable; it can only be set when the EtcdStorage is created/);
    }

    const run = await runJob(`etcd-${TENANT}-restore`, "restore", "restore-job");
    assert.equal(run.exit.code, 0, run.logs);
    const outcome = JSON.parse(run.message) as { restored: boolean; keys: number; from: { revision: number } };
    assert.deepEqual([outcome.restored, outcome.keys, outcome.from.revision], [true, summary.keys, summary.revision]);

    const tenant = await startTenant(system, TENANT, path.join(dir, "gateway-2"));
    const after = await system.host.api.get("etcdproxy.dev/v1alpha1", "EtcdStorage", TENANT);
    assert.deepEqual([condition(after, "Restored")?.status, condition(after, "Restored")?.reason], ["True", "Restored"]);
    assert.match(condition(after, "Restored")!.message, new RegExp(`${summary.keys} keys .* from EtcdStorageBackup ${BACKUP}`));
    assert.equal(condition(after, "Ready")?.status, "True", JSON.stringify(after!.status));
    const serving = await system.host.api.get("apps/v1", "Deployment", `etcd-${TENANT}`, PROXY_NAMESPACE);
    assert.equal((serving!.spec as { replicas: number }).replicas, 2);
    // Restored is final: the restore Job is gone and not made again.
    const again = await system.metacontroller.reconcile(TENANT);
    assert.equal(Object.keys(again.request.children["Job.batch/v1"] ?? {}).length, 0, "no restore Job once Restored");

    const sample = await startSampleApiserver(system, tenant, { namespace: "sample-system", secret: "etcd-client-cert", configMap: "etcd-serving-ca", dir: path.join(dir, "sample-apiserver-2") });
    const served = (await system.host.api.call<{ items: KubeObject[] }>("GET", FLUNDERS)).items;
    const identity = (f: KubeObject) => [f.metadata.name, f.metadata.uid, f.metadata.creationTimestamp, f.metadata.generation, JSON.stringify(f.spec), JSON.stringify(f.metadata.labels ?? {})];
    assert.deepEqual(served.map(identity), stored.map(identity));
    await sample.process.stop();
  });
});
