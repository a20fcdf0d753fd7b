// The pages a backup reads core etcd in (gateway/backup/backup.ts): how many keys a page asks for,
// so that core etcd never builds more than the read budget for one, and the windows that keep
// etcd's count of the rest of a range short. The windows are checked against a model of etcd's
// Range: up to `limit` keys of [start, end) in order, `more` when the range holds more, and the
// walk over every key of the range that etcd makes to count them.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { PageWindows, pageLimit } from "../../gateway/backup/backup.ts";

const MiB = 1024 * 1024;

/** Every key a backup reads from `keys` (sorted, unique) in pages of `limit`, with the pages and etcd's walk. */
function page(keys: readonly Buffer[], limit: number): { read: Buffer[]; pages: number; walked: number } {
  const lower = (key: Buffer) => {
    let low = 0;
    let high = keys.length;
    while (low < high) {
      const middle = (low + high) >> 1;
      if (Buffer.compare(keys[middle]!, key) < 0) low = middle + 1;
      else high = middle;
    }
    return low;
  };
  const windows = new PageWindows();
  const read: Buffer[] = [];
  let pages = 0;
  let walked = 0;
  for (;;) {
    const from = lower(windows.start);
    const to = windows.end === undefined ? keys.length : lower(windows.end);
    const found = keys.slice(from, Math.min(to, from + limit));
    read.push(...found);
    pages++;
    walked += to - from;
    assert.ok(pages <= 4 * keys.length + 64, "the windows do not advance");
    if (!windows.advance(found, to - from > limit)) return { read, pages, walked };
  }
}

function sortedUnique(keys: Buffer[]): Buffer[] {
  return keys.sort(Buffer.compare).filter((key, i, all) => i === 0 || !key.equals(all[i - 1]!));
}

/** Names as a tenant's API server writes them: resources, namespaces, objects of random names. */
function apiServerKeys(count: number): Buffer[] {
  let seed = 1;
  const random = () => (seed = (seed * 48271) % 0x7fffffff) / 0x7fffffff;
  const name = (length: number) => Array.from({ length }, () => "abcdefghijklmnopqrstuvwxyz0123456789"[Math.floor(random() * 36)]).join("");
  const resources = ["flunders", "fischers", "events", "leases", "configmaps"];
  return sortedUnique(Array.from({ length: count }, (_, i) => Buffer.from(`registry/wardle.example.com/${resources[i % resources.length]}/ns-${i % 40}/${name(5)}-${name(5)}`)));
}

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

  test("whatever the keys and the page size, the windows read every key once, in order", () => {
    const key = fc.oneof(
      fc.uint8Array({ minLength: 1, maxLength: 12 }),
      // Keys longer than the bytes a window end is computed on, differing only beyond them.
      fc.uint8Array({ minLength: 1, maxLength: 4 }).map((tail) => Buffer.concat([Buffer.alloc(600, 0x61), tail])),
      fc.stringMatching(/^[a-c0-9/]{1,10}$/).map((text) => Buffer.from(text)),
    );
    fc.assert(
      fc.property(fc.array(key.map((bytes) => Buffer.from(bytes)), { maxLength: 300 }), fc.integer({ min: 1, max: 40 }), (drawn, limit) => {
        const keys = sortedUnique(drawn);
        assert.deepEqual(page(keys, limit).read, keys);
      }),
      { numRuns: 300 },
    );
  });

  test("pages of more keys than a window is sized for (a read budget of gigabytes) still advance a page at a time", () => {
    const keys = sortedUnique(Array.from({ length: 20_000 }, (_, i) => Buffer.from(`registry/objects/o-${String(i).padStart(6, "0")}`)));
    const { read, pages } = page(keys, 5_000);
    assert.equal(read.length, keys.length);
    assert.ok(pages <= 20, `${pages} pages`);
  });

  test("100,000 keys of an API server, 31 a page: pages within 30% of the fewest, and etcd walks a few thousand keys a page, not half of them", () => {
    const keys = apiServerKeys(100_000);
    const { read, pages, walked } = page(keys, 31);
    assert.equal(read.length, keys.length);
    const fewest = Math.ceil(keys.length / 31);
    assert.ok(pages <= 1.3 * fewest, `${pages} pages, at least ${fewest}`);
    assert.ok(walked / pages < 4096, `etcd walked ${Math.round(walked / pages)} keys a page`);
  });
});
