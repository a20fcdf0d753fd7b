// The prefix invariant (gateway/keys.ts): how tenant keys and ranges become core ones, and the
// last check every keyed request passes before it is sent.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { assertConfined, HOST_COMPACTION_KEY, KEYED_REQUESTS, OutsidePrefix, TenantKeyspace } from "../../gateway/keys.ts";
import type { Writer } from "../../gateway/wire/protobuf.ts";
import { framedMessage as message, nested } from "../support/protobuf.ts";

const keyspace = new TenantKeyspace("/etcdstorage/a/");
const b = (text: string) => Buffer.from(text, "latin1");
const text = (buffer: Buffer | undefined) => buffer?.toString("latin1");

describe("TenantKeyspace", () => {
  test("the prefix's end is the prefix with its last byte plus one: every key under the prefix sorts below it", () => {
    assert.equal(text(keyspace.prefixEnd), "/etcdstorage/a0");
    assert.ok(Buffer.compare(b("/etcdstorage/a/\xff\xff\xff"), keyspace.prefixEnd) < 0);
  });

  // [tenant range_end, as Range/DeleteRange/Compare read it, as Watch reads it]
  const cases: [string, Buffer | undefined, string | undefined, string | undefined][] = [
    ["absent: one key", undefined, undefined, undefined],
    ["present but empty", b(""), "/etcdstorage/a0", undefined],
    ['"\\0": every key from here on', b("\0"), "/etcdstorage/a0", "/etcdstorage/a0"],
    ["an explicit end", b("/registry/z"), "/etcdstorage/a//registry/z", "/etcdstorage/a//registry/z"],
    ['"\\0\\0" is an explicit end, not "\\0"', b("\0\0"), "/etcdstorage/a/\0\0", "/etcdstorage/a/\0\0"],
  ];
  for (const [what, end, toTheEnd, watch] of cases) {
    test(`range end ${what}`, () => {
      const range = keyspace.range(b("/registry/a"), end, "to-the-end");
      assert.equal(text(range.key), "/etcdstorage/a//registry/a");
      assert.equal(text(range.rangeEnd), toTheEnd);
      assert.equal(text(keyspace.range(b("/registry/a"), end, "single-key").rangeEnd), watch);
    });
  }

  test("strip gives back the tenant's key; a key from outside the prefix is never handed over", () => {
    assert.equal(text(keyspace.strip(b("/etcdstorage/a//registry/x"))), "/registry/x");
    assert.equal(text(keyspace.strip(b("/etcdstorage/a/"))), "");
    for (const outside of ["/etcdstorage/ab/x", "/etcdstorage/a", "/registry/secrets/x", ""]) assert.throws(() => keyspace.strip(b(outside)), OutsidePrefix, outside);
  });

  test("the host's compaction record: a Range or Watch of exactly compact_rev_key reads the host's, any other use is the tenant's own", () => {
    assert.equal(text(HOST_COMPACTION_KEY), "compact_rev_key");
    assert.deepEqual(keyspace.readRange(b("compact_rev_key"), undefined, "to-the-end"), { key: b("compact_rev_key") });
    assert.deepEqual(keyspace.readRange(b("compact_rev_key"), b(""), "single-key"), { key: b("compact_rev_key") }, "a Watch's empty range end is one key");
    assert.equal(text(keyspace.readRange(b("compact_rev_key"), b(""), "to-the-end").key), "/etcdstorage/a/compact_rev_key", "a Range's empty range end is a range: the tenant's own");
    assert.equal(text(keyspace.readRange(b("compact_rev_key"), b("compact_rev_kez"), "to-the-end").key), "/etcdstorage/a/compact_rev_key");
    assert.equal(text(keyspace.readRange(b("compact_rev_key2"), undefined, "to-the-end").key), "/etcdstorage/a/compact_rev_key2");
    assert.equal(text(keyspace.range(b("compact_rev_key"), undefined, "single-key").key), "/etcdstorage/a/compact_rev_key", "writes never name the host's");
    assert.equal(text(keyspace.strip(b("compact_rev_key"))), "compact_rev_key", "the tenant sees it under its own name");
    assert.throws(() => keyspace.strip(b("compact_rev_key2")), OutsidePrefix);
  });

  test("prefixes are printable ASCII, start and end with '/', and are not '/'", () => {
    for (const bad of ["/", "etcdstorage/a/", "/etcdstorage/a", "/etcd storage/a/", "/etcdstorage/\u00e9/"]) assert.throws(() => new TenantKeyspace(bad), Error, bad);
  });
});

describe("assertConfined: the last check before a request leaves", () => {
  const check = (fields: (typeof KEYED_REQUESTS)[keyof typeof KEYED_REQUESTS], bytes: Buffer) => () => assertConfined(keyspace, fields, bytes, 5);

  test("a key and range end inside the prefix pass, at any depth", () => {
    assert.doesNotThrow(check(KEYED_REQUESTS.RangeRequest, message((w) => (w.bytesField(1, b("/etcdstorage/a/x")), w.bytesField(2, keyspace.prefixEnd)))));
    const txn = message((w) => {
      nested(w, 1, (c) => (c.bytesField(3, b("/etcdstorage/a/k")), c.bytesField(64, b("/etcdstorage/a/l"))));
      nested(w, 2, (op) => nested(op, 4, (inner) => nested(inner, 3, (op2) => nested(op2, 3, (d) => d.bytesField(1, b("/etcdstorage/a/d"))))));
    });
    assert.doesNotThrow(check(KEYED_REQUESTS.TxnRequest, txn));
  });

  test("the host's compaction key passes alone in a Range or a Watch, and nowhere else", () => {
    assert.doesNotThrow(check(KEYED_REQUESTS.RangeRequest, message((w) => w.bytesField(1, HOST_COMPACTION_KEY))));
    assert.doesNotThrow(check(KEYED_REQUESTS.WatchRequest, message((w) => nested(w, 1, (c) => c.bytesField(1, HOST_COMPACTION_KEY)))));
  });

  const refused: [string, keyof typeof KEYED_REQUESTS, (w: Writer) => void][] = [
    ["a Put of the host's compaction key", "PutRequest", (w) => w.bytesField(1, HOST_COMPACTION_KEY)],
    ["a DeleteRange of the host's compaction key", "DeleteRangeRequest", (w) => w.bytesField(1, HOST_COMPACTION_KEY)],
    ["a Txn reading the host's compaction key", "TxnRequest", (w) => nested(w, 2, (op) => nested(op, 1, (r) => r.bytesField(1, HOST_COMPACTION_KEY)))],
    ["a range from the host's compaction key", "RangeRequest", (w) => (w.bytesField(1, HOST_COMPACTION_KEY), w.bytesField(2, keyspace.prefixEnd))],
    ["a key outside the prefix", "PutRequest", (w) => w.bytesField(1, b("/registry/pods/x"))],
    ["a sibling tenant's key", "RangeRequest", (w) => w.bytesField(1, b("/etcdstorage/ab/x"))],
    ["a present-but-empty range end (etcd: to the end of the keyspace)", "DeleteRangeRequest", (w) => (w.bytesField(1, b("/etcdstorage/a/x")), w.bytesField(2, b("")))],
    ['a range end of "\\0"', "RangeRequest", (w) => (w.bytesField(1, b("/etcdstorage/a/x")), w.bytesField(2, b("\0")))],
    ["a range end past the prefix", "DeleteRangeRequest", (w) => (w.bytesField(1, b("/etcdstorage/a/x")), w.bytesField(2, b("/etcdstorage/a1")))],
    ["no key (etcd reads a Watch without one as \\0, the start of the keyspace)", "WatchRequest", (w) => nested(w, 1, (c) => c.bytesField(2, b("/etcdstorage/a/z")))],
    ["two keys", "RangeRequest", (w) => (w.bytesField(1, b("/etcdstorage/a/x")), w.bytesField(1, b("/registry/x")))],
    ["a compare outside, deep in a Txn", "TxnRequest", (w) => nested(w, 3, (op) => nested(op, 4, (txn) => nested(txn, 1, (c) => c.bytesField(3, b("/registry/x")))))],
    ["a key field that is not length-delimited", "PutRequest", (w) => w.varintField(1, 5)],
  ];
  for (const [what, kind, write] of refused) {
    test(`refuses ${what}`, () => assert.throws(check(KEYED_REQUESTS[kind], message(write)), /outside the tenant's prefix|names \d keys|not length-delimited|range from the host's compaction key/));
  }
});
