// The pure parts of a schedule's run (gateway/backup/schedule.ts): the name of each scheduled
// EtcdStorageBackup, and which of the tenant's scheduled backups retention deletes. The run itself
// is tested against a real kube-apiserver in test/e2e/backup-schedule.test.ts.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { retentionVictims, SCHEDULED_FOR_LABEL, scheduledBackupName, stateOf, type BackupObject } from "../../gateway/backup/schedule.ts";

const DNS_1035 = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;

describe("the name of a scheduled backup", () => {
  test("<tenant>-<UTC time>, sorting as the times do", () => {
    assert.equal(scheduledBackupName("alpha", new Date("2026-12-01T03:00:07.999Z")), "alpha-20261201-030007");
    const times = ["2026-01-02T00:00:00Z", "2025-12-31T23:59:59Z", "2026-01-01T10:00:00Z"].map((t) => new Date(t));
    assert.deepEqual(times.map((t) => scheduledBackupName("a", t)).sort(), [...times].sort((x, y) => x.getTime() - y.getTime()).map((t) => scheduledBackupName("a", t)));
  });
  test("a long tenant name is cut and told apart by a hash: at most 50 characters, a DNS-1035 label", () => {
    const at = new Date("2026-12-01T03:00:00Z");
    const long = "a".repeat(40);
    const other = `${"a".repeat(39)}b`;
    for (const tenant of [long, other, "b".repeat(47), `${"c".repeat(34)}`, `x${"-y".repeat(23)}`]) {
      const name = scheduledBackupName(tenant, at);
      assert.ok(name.length <= 50, name);
      assert.match(name, DNS_1035);
      assert.ok(name.endsWith("-20261201-030000"), name);
    }
    assert.notEqual(scheduledBackupName(long, at), scheduledBackupName(other, at));
    assert.equal(scheduledBackupName("c".repeat(34), at), `${"c".repeat(34)}-20261201-030000`, "34 characters still fit whole");
  });
});

describe("retention of scheduled backups", () => {
  const backup = (name: string, created: string, state: "Complete" | "Failed" | "Running", labels: Record<string, string> = { [SCHEDULED_FOR_LABEL]: "a" }, extra: Partial<BackupObject["metadata"]> = {}): BackupObject => ({
    metadata: { name, creationTimestamp: created, labels, ...extra },
    status: state === "Running" ? { conditions: [{ type: "Complete", status: "False", reason: "Running" }] } : { conditions: [{ type: "Complete", status: state === "Complete" ? "True" : "False" }, ...(state === "Failed" ? [{ type: "Failed", status: "True" }] : [])] },
  });
  const days = [1, 2, 3, 4, 5].map((d) => backup(`a-2026120${d}`, `2026-12-0${d}T03:00:00Z`, "Complete"));

  test("the state of a backup from its conditions", () => {
    assert.deepEqual([days[0]!, backup("f", "", "Failed"), backup("r", "", "Running"), { metadata: { name: "new" } }].map(stateOf), ["Complete", "Failed", "Running", "Running"]);
  });
  test("all but the newest N complete ones, newest first; the new one always kept", () => {
    assert.deepEqual(retentionVictims(days, "a", 3, "a-20261205"), ["a-20261202", "a-20261201"]);
    assert.deepEqual(retentionVictims(days, "a", 1, "a-20261205"), ["a-20261204", "a-20261203", "a-20261202", "a-20261201"]);
    assert.deepEqual(retentionVictims(days, "a", 9, "a-20261205"), []);
    // A clock that went back: the new one is the oldest by creation time, and still kept.
    assert.deepEqual(retentionVictims(days, "a", 2, "a-20261201"), ["a-20261204", "a-20261203", "a-20261202"]);
  });
  test("failed ones go, running ones stay; on-demand, other tenants' and already deleted backups are never named", () => {
    const all = [
      ...days,
      backup("a-failed", "2026-12-03T12:00:00Z", "Failed"),
      backup("a-running", "2026-12-06T03:00:00Z", "Running"),
      backup("on-demand", "2026-11-01T00:00:00Z", "Complete", {}),
      backup("b-20261101", "2026-11-01T00:00:00Z", "Complete", { [SCHEDULED_FOR_LABEL]: "b" }),
      backup("a-20261101", "2026-11-01T00:00:00Z", "Complete", undefined, { deletionTimestamp: "2026-12-05T03:00:00Z" }),
    ];
    assert.deepEqual(retentionVictims(all, "a", 2, "a-20261205"), ["a-failed", "a-20261203", "a-20261202", "a-20261201"]);
  });
});
