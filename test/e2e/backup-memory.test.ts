// A backup of a tenant larger than the read budget keeps core etcd's peak memory within it (issue
// 21): etcd builds a Range's whole answer in memory before it sends it, so a backup in one Range
// would take the shared etcd's memory in multiples of the tenant's size. The backup program reads
// in pages of at most --read-budget-bytes (here 8 MiB, of a 48 MiB tenant of 512 KiB values, so the
// test stays fast), measured on core etcd's own peak resident memory (VmHWM, as reads.test.ts),
// and compared with one unpaged Range of the same prefix, which a backup without pages would be.
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { ensureBuilt } from "../support/build.ts";
import { connect, type EtcdClient } from "../support/etcd-client.ts";
import { spawnManaged, startCoreEtcd, stopAll, tempDir, type CoreEtcd } from "./harness.ts";

const REPO = fileURLToPath(new URL("../../", import.meta.url));
// The program as the image runs it: compiled (test/support/build.ts; npm test builds it first).
ensureBuilt();
const MiB = 1024 * 1024;
const BUDGET = 8 * MiB;
const VALUE_BYTES = 512 * 1024;
const OBJECTS = 96; // 48 MiB: six times the budget
const PREFIX = "/etcdstorage/big/";
// What one page may cost core etcd beyond the budget's worth of objects: the answer built, its
// encoding, gRPC's buffers; the bound the test holds it to is three budgets.
const BOUND_MiB = (3 * BUDGET) / MiB;

/** Core etcd's peak resident memory so far (VmHWM), in MiB. */
async function peakMiB(core: CoreEtcd): Promise<number> {
  const status = await readFile(`/proc/${core.pid()}/status`, "utf8");
  return Number(/^VmHWM:\s+(\d+) kB/m.exec(status)![1]) / 1024;
}

describe("a backup of a tenant larger than the read budget, and core etcd's peak memory", () => {
  let dir: string;
  let core: CoreEtcd;
  let client: EtcdClient;

  before(async () => {
    dir = await tempDir("backup-memory-");
    core = await startCoreEtcd(dir, { extraFlags: [`--quota-backend-bytes=${512 * MiB}`] });
    client = connect(core.endpoint, core.tls);
    for (let i = 0; i < OBJECTS; i += 8) {
      await Promise.all(Array.from({ length: 8 }, (_, k) => client.kv.put({ key: `${PREFIX}registry/blobs/b-${String(i + k).padStart(4, "0")}`, value: Buffer.alloc(VALUE_BYTES, (i + k) % 251) })));
    }
    // Core etcd restarted (the writes' own peak forgotten), then every object read once, one at
    // a time: the database's pages are resident before the measurements, which then see only what
    // a read builds.
    client.close();
    await core.stop();
    await core.start();
    client = connect(core.endpoint, core.tls);
    for (let i = 0; i < OBJECTS; i++) await client.kv.range({ key: `${PREFIX}registry/blobs/b-${String(i).padStart(4, "0")}` });
  });
  after(async () => {
    client?.close();
    await stopAll();
  });

  test(`a backup of ${(OBJECTS * VALUE_BYTES) / MiB} MiB with a read budget of ${BUDGET / MiB} MiB: core etcd's peak grows by less than ${BOUND_MiB} MiB; one unpaged Range of it grows it by more`, async (t) => {
    const before = await peakMiB(core);
    const file = path.join(dir, "big.etcdbackup");
    const args = ["backup", "--tenant=big", `--prefix=${PREFIX}`, `--endpoints=${core.endpoint}`, `--cacert=${core.caFile}`, `--cert=${core.certFile}`, `--key=${core.keyFile}`, `--out=${file}`, `--read-budget-bytes=${BUDGET}`];
    const child = spawnManaged(process.execPath, ["dist/gateway/backup/main.js", ...args], { cwd: REPO, env: { PATH: process.env.PATH ?? "/usr/bin:/bin" } });
    const { code } = await child.exited;
    assert.equal(code, 0, child.stderr());
    const summary = JSON.parse(child.stdout()) as { keys: number; bytes: number; pages: number };
    assert.equal(summary.keys, OBJECTS);
    assert.ok(summary.pages >= (OBJECTS * VALUE_BYTES) / BUDGET, `${summary.pages} pages`);
    const backupGrowth = (await peakMiB(core)) - before;

    const afterBackup = await peakMiB(core);
    const whole = await client.kv.range({ key: PREFIX, range_end: PREFIX.slice(0, -1) + "0" });
    assert.equal(whole.kvs.length, OBJECTS);
    const unpagedGrowth = (await peakMiB(core)) - afterBackup;
    t.diagnostic(`core etcd's peak: ${before.toFixed(0)} MiB before; +${backupGrowth.toFixed(1)} MiB for the backup (${summary.pages} pages), then +${unpagedGrowth.toFixed(1)} MiB for one unpaged Range`);
    assert.ok(backupGrowth < BOUND_MiB, `the backup grew core etcd's peak by ${backupGrowth.toFixed(1)} MiB, more than ${BOUND_MiB} MiB`);
    // Measured: +0 to +5 MiB for the backup, +42 to +61 MiB for the unpaged Range. Without pages
    // the backup would be this Range: the bound would not hold.
    assert.ok(unpagedGrowth > BOUND_MiB, `one unpaged Range grew core etcd's peak by only ${unpagedGrowth.toFixed(1)} MiB: the test could not tell paging from none`);
  });
});
