// The pages a backup reads core etcd in (gateway/backup/backup.ts): how many keys a page asks for,
// so that core etcd never builds more than the read budget for one.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { pageLimit } from "../../gateway/backup/backup.ts";

const MiB = 1024 * 1024;

describe("backup pages", () => {
  test("a page asks for the budget over the largest object it may hold (2 MiB, or a larger one already read), less the one more etcd reads", () => {
    assert.equal(pageLimit(64 * MiB, 0), 31);
    assert.equal(pageLimit(64 * MiB, 1024), 31);
    assert.equal(pageLimit(64 * MiB, 8 * MiB), 7);
    assert.equal(pageLimit(8 * MiB, 0), 3);
    assert.equal(pageLimit(4 * MiB, 0), 1);
    assert.equal(pageLimit(1, 0), 1);
    assert.equal(pageLimit(64 * MiB, 100 * MiB), 1);
    assert.equal(pageLimit(1024 * 1024 * MiB, 0), 10_000);
  });
});
