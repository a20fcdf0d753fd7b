// Scheduled backups (EtcdStorage spec.backup) on real etcd: the CronJob the sync hook returns, its
// Job template's container run exactly as a kubelet would run it (runContainer; the claim a local
// directory), N+2 times while the tenant keeps writing through its gateway. Exactly the newest N of
// the tenant's files remain, each verified by the image's `verify` and holding what the tenant had
// written by then; another tenant's files, an on-demand backup and anything else on the claim are
// never deleted.
import assert from "node:assert/strict";
import { mkdir, readdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import type { KubeObject } from "../../hooks/observed.ts";
import { type EtcdClient } from "../support/etcd-client.ts";
import { testConfig } from "../support/requests.ts";
import { podSpecOf, runContainer, spawnManaged, startCoreEtcd, stopAll, tempDir, type CoreEtcd, type K8sObject } from "./harness.ts";
import { connectTenant, objectsOf, startTenant, type RunningTenant } from "./tenant.ts";

const REPO = fileURLToPath(new URL("../../", import.meta.url));
const KEEP = 3;
const RUNS = KEEP + 2;
const CLAIM = "tenant-backups";

describe("scheduled backups with retention, on real etcd", () => {
  let dir: string;
  let core: CoreEtcd;
  let tenant: RunningTenant;
  let client: EtcdClient;
  let cronJob: KubeObject;
  const config = () => testConfig({ CORE_ETCD_ENDPOINTS: core.endpoint });

  before(async () => {
    dir = await tempDir("backup-schedule-");
    core = await startCoreEtcd(dir);
    const spec = { clientCertSecret: [{ name: "etcd-client", namespace: "sched-system" }], replicas: 1, backup: { schedule: "*/5 * * * *", keep: KEEP, volumeClaim: CLAIM } };
    tenant = await startTenant(config(), core, "sched", spec, path.join(dir, "sched"));
    client = await connectTenant(tenant);
    cronJob = tenant.response.children.find((c) => c.kind === "CronJob")!;
    assert.ok(cronJob, "the sync answers a CronJob for spec.backup");
  });
  after(async () => {
    client?.close();
    await stopAll();
  });

  /** One run of the CronJob's Job: its container, as the kubelet runs it, with the claim at `claimDir`. */
  async function runScheduledJob(claimDir: string, run: number) {
    const container = await runContainer({
      podSpec: podSpecOf(cronJob as K8sObject),
      containerName: "backup",
      namespace: config().proxyNamespace,
      objects: objectsOf(tenant.request, tenant.response),
      dir: path.join(dir, `job-${run}`),
      binaries: { "/usr/local/bin/node": process.execPath },
      extraPaths: { "/app": REPO },
      ports: {},
      claims: { [CLAIM]: claimDir },
    });
    const exit = await container.exited;
    return { code: exit.code, logs: container.logs(), message: await container.terminationMessage() };
  }

  async function verify(file: string) {
    const child = spawnManaged(process.execPath, ["gateway/backup/main.ts", "verify", `--in=${file}`], { cwd: REPO, env: { PATH: process.env.PATH ?? "/usr/bin:/bin" } });
    const { code } = await child.exited;
    assert.equal(code, 0, child.stderr());
    return JSON.parse(child.stdout().trim().split("\n").at(-1)!) as { verified: boolean; keys: number };
  }

  test(`${RUNS} runs of the CronJob's Job keep exactly the newest ${KEEP} of the tenant's files, each verified; nothing else on the claim is touched`, async (t) => {
    const claimDir = path.join(dir, "claims", CLAIM);
    await mkdir(claimDir, { recursive: true });
    const others = ["other.20200101T000000000Z.etcdbackup", "sched-b.20200101T000000000Z.etcdbackup", "nightly.etcdbackup", "sched.20200101T000000000Z.etcdbackup.partial", "README.txt"];
    for (const name of others) await writeFile(path.join(claimDir, name), "not a backup of sched");

    const written: { file: string; keys: number }[] = [];
    for (let run = 1; run <= RUNS; run++) {
      await client.kv.put({ key: `/registry/widgets/w-${run}`, value: Buffer.from(`widget ${run}`) });
      const started = Date.now();
      const result = await runScheduledJob(claimDir, run);
      assert.equal(result.code, 0, result.logs);
      const outcome = JSON.parse(result.message) as { backedUp: boolean; file: string; keys: number; keep: number; deleted: number };
      assert.equal(outcome.backedUp, true);
      assert.equal(outcome.keys, run, "every key written so far, at one revision");
      assert.equal(outcome.keep, KEEP);
      assert.equal(outcome.deleted, run > KEEP ? 1 : 0, `run ${run} deletes the oldest once more than ${KEEP}`);
      assert.match(path.basename(outcome.file), /^sched\.\d{8}T\d{9}Z\.etcdbackup$/);
      written.push({ file: path.basename(outcome.file), keys: outcome.keys });
      t.diagnostic(`run ${run}: ${path.basename(outcome.file)} in ${Date.now() - started} ms`);
    }
    assert.deepEqual([...written.map((w) => w.file)].sort(), written.map((w) => w.file), "names sort as the runs ran");
    const remaining = (await readdir(claimDir)).sort();
    const newest = written.slice(-KEEP);
    assert.deepEqual(remaining, [...newest.map((w) => w.file), ...others].sort(), "exactly the newest files of the tenant, and everything else");
    for (const { file, keys } of newest) {
      const verified = await verify(path.join(claimDir, file));
      assert.equal(verified.verified, true);
      assert.equal(verified.keys, keys);
    }
  });

  test("a failed run (core etcd down) deletes nothing", async () => {
    const claimDir = path.join(dir, "claims", "failed");
    await mkdir(claimDir, { recursive: true });
    const first = await runScheduledJob(claimDir, 100);
    assert.equal(first.code, 0, first.logs);
    const before = (await readdir(claimDir)).sort();
    await core.kill();
    const failed = await runScheduledJob(claimDir, 101);
    assert.equal(failed.code, 1, failed.logs);
    assert.equal((JSON.parse(failed.message) as { reason: string }).reason, "CoreUnavailable");
    assert.deepEqual((await readdir(claimDir)).sort(), before, "the earlier backup stays, no partial file is left");
  });
});
