// Retention of a schedule's backups (gateway/backup/retention.ts): names that sort as the times do,
// and exactly the tenant's older backups named by time are deleted, never anything else.
import assert from "node:assert/strict";
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import { applyRetention, isTimedBackupOf, retentionVictims, timedBackupName, timeStamp } from "../../gateway/backup/retention.ts";

describe("backups named by time", () => {
  test("the name sorts as the time does, to the millisecond", () => {
    assert.equal(timedBackupName("alpha", new Date("2026-12-01T21:20:07.123Z")), "alpha.20261201T212007123Z.etcdbackup");
    const times = ["2026-01-02T00:00:00.000Z", "2026-01-01T23:59:59.999Z", "2025-12-31T00:00:00.001Z", "2026-01-02T00:00:00.010Z", "2026-01-02T00:00:00.002Z"].map((t) => new Date(t));
    const byName = times.map((t) => timeStamp(t)).sort();
    assert.deepEqual(byName, [...times].sort((a, b) => a.getTime() - b.getTime()).map(timeStamp));
  });
  test("a tenant's files are told from another tenant's, an on-demand backup's and a partial one", () => {
    assert.ok(isTimedBackupOf("a", "a.20261201T212007123Z.etcdbackup"));
    for (const name of ["a-b.20261201T212007123Z.etcdbackup", "ab.20261201T212007123Z.etcdbackup", "a.20261201T212007123Z.etcdbackup.partial", "nightly.etcdbackup", "a.etcdbackup", "a.2026.etcdbackup", "a.20261201T212007123Z.etcdbackup~", "x/a.20261201T212007123Z.etcdbackup"]) {
      assert.ok(!isTimedBackupOf("a", name), name);
    }
    assert.ok(!isTimedBackupOf("a-b", "a.20261201T212007123Z.etcdbackup"));
  });
  test("the victims: all but the newest N, the new one always kept", () => {
    const names = [1, 2, 3, 4, 5].map((d) => `a.2026120${d}T000000000Z.etcdbackup`);
    assert.deepEqual(retentionVictims("a", names, 3, names[4]!), names.slice(0, 2));
    assert.deepEqual(retentionVictims("a", names, 1, names[4]!), names.slice(0, 4));
    assert.deepEqual(retentionVictims("a", names, 9, names[4]!), []);
    // a clock that went back: the new file is the oldest by name, and still kept
    assert.deepEqual(retentionVictims("a", names, 2, names[0]!), names.slice(1, 4));
  });
});

describe("retention in a directory", () => {
  let dir: string;
  after(() => rm(dir, { recursive: true, force: true }));
  test("deletes only the tenant's older backups named by time", async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "retention-"));
    const ours = [1, 2, 3, 4].map((d) => `a.2026120${d}T000000000Z.etcdbackup`);
    const others = ["b.20261201T000000000Z.etcdbackup", "a-b.20261201T000000000Z.etcdbackup", "nightly.etcdbackup", "a.20261205T000000000Z.etcdbackup.partial", "notes.txt"];
    for (const name of [...ours, ...others]) await writeFile(path.join(dir, name), "x");
    await mkdir(path.join(dir, "a.20261200T000000000Z.etcdbackup"));
    assert.deepEqual(await applyRetention(dir, "a", 2, ours[3]!), ours.slice(0, 2));
    assert.deepEqual((await readdir(dir)).sort(), [...ours.slice(2), ...others, "a.20261200T000000000Z.etcdbackup"].sort());
  });
});
