// The backup format (gateway/backup/format.ts, README "Backup format"): what a writer streams reads
// back the same however the file is cut into chunks, and a reader refuses every defect with a
// message naming it: each truncation, each flipped byte, a newer version, and each rule of the
// layout broken by a file whose checksums are right.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { describe, test } from "node:test";
import { crc32 } from "node:zlib";
import fc from "fast-check";
import { BackupDefect, BackupWriter, MAGIC, MAX_RECORD_BYTES, readBackup, verifyBackup, type BackupEntry } from "../../gateway/backup/format.ts";

const HEADER = { tenant: "alpha", prefix: "/etcdstorage/alpha/", revision: 42, createdAt: "2025-01-01T00:00:00.000Z" };

interface Item {
  key: Buffer;
  value: Buffer;
  /** Index into the leases, or -1. */
  lease: number;
}

/** A backup of `items` (sorted, unique keys) and `ttls`, as one buffer. */
async function write(items: readonly Item[], ttls: readonly number[] = []): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const writer = new BackupWriter(async (chunk) => {
    chunks.push(Buffer.from(chunk));
  });
  await writer.header(HEADER);
  const numbers: number[] = [];
  for (const item of items) {
    if (item.lease >= 0 && numbers[item.lease] === undefined) {
      // Leases are declared in order of first use.
      for (let i = 0; i <= item.lease; i++) numbers[i] ??= await writer.lease(ttls[i]!);
    }
    await writer.key(item.key, item.lease >= 0 ? numbers[item.lease]! : 0, item.value);
  }
  await writer.finish();
  return Buffer.concat(chunks);
}

/** The file in chunks of the given sizes (cycled), as a stream would hand it over. */
async function* chunked(file: Buffer, sizes: readonly number[] = [file.length || 1]): AsyncGenerator<Buffer> {
  let at = 0;
  for (let i = 0; at < file.length; i++) {
    const size = Math.max(1, sizes[i % sizes.length]!);
    yield file.subarray(at, at + size);
    at += size;
  }
}

async function entries(file: Buffer, sizes?: readonly number[]): Promise<BackupEntry[]> {
  const all: BackupEntry[] = [];
  for await (const entry of readBackup(chunked(file, sizes))) all.push(entry);
  return all;
}

async function defect(file: Buffer): Promise<string> {
  try {
    await verifyBackup(chunked(file));
  } catch (error) {
    assert.ok(error instanceof BackupDefect, `not a BackupDefect: ${(error as Error).stack}`);
    return error.message;
  }
  assert.fail("the file was accepted");
}

const b = (text: string) => Buffer.from(text, "latin1");
const SAMPLE: Item[] = [
  { key: b("/registry/configmaps/a/one"), value: b("1"), lease: -1 },
  { key: b("/registry/events/a/e1"), value: b("event one"), lease: 0 },
  { key: b("/registry/events/a/e2"), value: b("event two"), lease: 0 },
  { key: b("/registry/events/a/e3"), value: b("event three"), lease: 1 },
  { key: b("/registry/secrets/a/\xff\x00"), value: Buffer.alloc(0), lease: -1 },
];

// A record as the format frames it, for files whose checksums are right but whose content is not.
function record(type: string, body: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head.write(type, 0, "latin1");
  head.writeUInt32BE(body.length, 1);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(Buffer.concat([head, body])));
  return Buffer.concat([head, body, crc]);
}
const json = (value: unknown) => Buffer.from(JSON.stringify(value));
const u32s = (...values: number[]) => Buffer.concat(values.map((v) => Buffer.from([v >>> 24, (v >>> 16) & 255, (v >>> 8) & 255, v & 255])));
const keyRecord = (key: string, lease = 0, value = "v") => record("K", Buffer.concat([u32s(lease, key.length), b(key), b(value)]));
const start = (version = 1) => Buffer.concat([MAGIC, Buffer.from([version >> 8, version & 255])]);
const header = (fields: Record<string, unknown> = {}) => record("H", json({ format: "etcdstorage-backup", version: 1, ...HEADER, ...fields }));

/** A file of `records` closed by a trailer whose counts and hash are those given, or else right. */
function assemble(records: Buffer[], counts: { keys: number; leases: number; bytes: number }, override: Record<string, unknown> = {}): Buffer {
  const before = Buffer.concat([start(), ...records]);
  const sha256 = createHash("sha256").update(before).digest("hex");
  return Buffer.concat([before, record("T", json({ ...counts, sha256, ...override }))]);
}

describe("backup format: round trip", () => {
  test("entries read back as written: header, leases before their first key, keys and values byte for byte, the trailer's counts and hash", async () => {
    const file = await write(SAMPLE, [599, 7]);
    const read = await entries(file);
    assert.deepEqual(read[0], { kind: "header", header: { format: "etcdstorage-backup", version: 1, ...HEADER } });
    assert.deepEqual(
      read.slice(1, -1).map((e) => (e.kind === "key" ? ["K", e.key.toString("latin1"), e.lease, e.value.toString("latin1")] : e.kind === "lease" ? ["L", e.number, e.ttl] : [e.kind])),
      [
        ["K", "/registry/configmaps/a/one", 0, "1"],
        ["L", 1, 599],
        ["K", "/registry/events/a/e1", 1, "event one"],
        ["K", "/registry/events/a/e2", 1, "event two"],
        ["L", 2, 7],
        ["K", "/registry/events/a/e3", 2, "event three"],
        ["K", "/registry/secrets/a/\xff\x00", 0, ""],
      ],
    );
    const trailer = read.at(-1)!;
    assert.equal(trailer.kind, "trailer");
    const trailerStart = file.length - (5 + JSON.stringify(trailer.trailer).length + 4);
    assert.deepEqual(trailer.trailer, {
      keys: 5,
      leases: 2,
      bytes: SAMPLE.reduce((sum, item) => sum + item.key.length + item.value.length, 0),
      sha256: createHash("sha256").update(file.subarray(0, trailerStart)).digest("hex"),
    });
  });

  test("any keys, values, leases and chunking: the same entries back, and the writer's trailer is the reader's", async () => {
    const items = fc
      .uniqueArray(fc.record({ key: fc.uint8Array({ minLength: 1, maxLength: 40 }), value: fc.uint8Array({ maxLength: 3000 }), lease: fc.integer({ min: -1, max: 3 }) }), {
        selector: (item) => Buffer.from(item.key).toString("hex"),
        maxLength: 40,
      })
      .map((list) => list.map((item) => ({ key: Buffer.from(item.key), value: Buffer.from(item.value), lease: item.lease })).sort((x, y) => Buffer.compare(x.key, y.key)));
    await fc.assert(
      fc.asyncProperty(items, fc.array(fc.integer({ min: 1, max: 5000 }), { minLength: 1, maxLength: 8 }), async (list, sizes) => {
        const file = await write(list, [1, 0, 3660, 2 ** 32 - 1]);
        const read = await entries(file, sizes);
        const keys = read.filter((e) => e.kind === "key");
        assert.equal(keys.length, list.length);
        for (const [i, entry] of keys.entries()) {
          assert.ok(entry.key.equals(list[i]!.key) && entry.value.equals(list[i]!.value));
          assert.equal(entry.lease === 0, list[i]!.lease === -1);
        }
      }),
      { seed: 21, numRuns: 150 },
    );
  });

  test("an empty tenant is a header and a trailer", async () => {
    const read = await entries(await write([]));
    assert.deepEqual(read.map((e) => e.kind), ["header", "trailer"]);
    assert.deepEqual(read[1], { kind: "trailer", trailer: { keys: 0, leases: 0, bytes: 0, sha256: (read[1] as { trailer: { sha256: string } }).trailer.sha256 } });
  });

  test("the writer refuses what a reader would: keys out of order or repeated, an undeclared lease, a record after the trailer", async () => {
    const writer = new BackupWriter(async () => {});
    await assert.rejects(writer.key(b("/a"), 0, b("")), /between the header and the trailer/);
    await writer.header(HEADER);
    await writer.key(b("/b"), 0, b(""));
    await assert.rejects(writer.key(b("/a"), 0, b("")), /ascending order/);
    await assert.rejects(writer.key(b("/b"), 0, b("")), /ascending order/);
    await assert.rejects(writer.key(b("/c"), 1, b("")), /lease 1, which was not declared/);
    await assert.rejects(writer.key(b(""), 0, b("")), /empty key/);
    await writer.finish();
    await assert.rejects(writer.lease(5), /between the header and the trailer/);
  });
});

describe("backup format: every defect refused, by name", () => {
  test("every truncation, at every byte, is refused as truncated", async () => {
    const file = await write(SAMPLE, [599, 7]);
    for (let length = 0; length < file.length; length++) {
      assert.match(await defect(file.subarray(0, length)), /^truncated: /, `cut at ${length} of ${file.length}`);
    }
  });

  test("every single flipped byte, anywhere, is refused", async () => {
    const file = await write(SAMPLE, [599, 7]);
    const reasons = new Map<string, number>();
    for (let at = 0; at < file.length; at++) {
      for (const mask of [0x01, 0x80]) {
        const flipped = Buffer.from(file);
        flipped[at]! ^= mask;
        const reason = /fails its checksum|not an etcdstorage backup|is newer than|is not a version|has type 0x|more than a record may hold|^truncated/.exec(await defect(flipped))?.[0] ?? "other";
        reasons.set(reason, (reasons.get(reason) ?? 0) + 1);
      }
    }
    // A flip in a record's type, length, body or checksum fails its CRC, unless the length now
    // reaches past the end (truncated) or past the largest record; in the magic or the version,
    // the file reads as what it became.
    assert.deepEqual([...reasons.keys()].sort(), ["fails its checksum", "has type 0x", "is newer than", "is not a version", "more than a record may hold", "not an etcdstorage backup", "truncated"].sort(), JSON.stringify([...reasons]));
  });

  test("a newer format version is refused with a message naming it", async () => {
    const file = await write(SAMPLE, [599, 7]);
    file.writeUInt16BE(2, MAGIC.length);
    assert.equal(await defect(file), "format version 2 is newer than this program reads (version 1): use the etcdstorage image that wrote it, or a newer one");
    file.writeUInt16BE(0, MAGIC.length);
    assert.match(await defect(file), /format version 0 is not a version of the format/);
  });

  test("another file is not a backup", async () => {
    assert.match(await defect(Buffer.from("ETCD snapshot, not a backup at all")), /^not an etcdstorage backup/);
  });

  test("bytes after the trailer", async () => {
    const file = Buffer.concat([await write(SAMPLE, [599, 7]), Buffer.from("extra")]);
    assert.match(await defect(file), /^corrupt: 5 bytes follow the trailer \(from byte \d+\)$/);
  });

  // Files whose every checksum is right, each breaking one rule.
  const ONE_KEY = { keys: 1, leases: 0, bytes: 5 };
  const cases: [string, Buffer, RegExp][] = [
    ["a valid hand-made file (the control)", assemble([header(), keyRecord("/k1", 0, "val")], { keys: 1, leases: 0, bytes: 6 }), /^$/],
    ["the first record is not the header", assemble([keyRecord("/k")], ONE_KEY), /record 1 \(key\) at byte 10: the first record must be the header/],
    ["a second header", assemble([header(), header()], { keys: 0, leases: 0, bytes: 0 }), /a second header/],
    ["a header of another version than the version bytes", assemble([header({ version: 2 })], { keys: 0, leases: 0, bytes: 0 }), /names version 2, the file's version bytes 1/],
    ["a header of another format", assemble([header({ format: "other" })], { keys: 0, leases: 0, bytes: 0 }), /names format "other"/],
    ["a header without a revision", assemble([header({ revision: 0 })], { keys: 0, leases: 0, bytes: 0 }), /has no revision/],
    ["a header that is not JSON", assemble([record("H", b("{nope"))], { keys: 0, leases: 0, bytes: 0 }), /is not JSON/],
    ["an unknown record type", assemble([header(), record("X", b("?"))], { keys: 0, leases: 0, bytes: 0 }), /has type 0x58, which version 1 does not define/],
    ["keys out of order", assemble([header(), keyRecord("/k2"), keyRecord("/k1")], { keys: 2, leases: 0, bytes: 8 }), /record 3 \(key\) at byte \d+: its key does not sort after the key before it/],
    ["a key twice", assemble([header(), keyRecord("/k1"), keyRecord("/k1")], { keys: 2, leases: 0, bytes: 8 }), /does not sort after the key before it/],
    ["an empty key", assemble([header(), keyRecord("")], { keys: 1, leases: 0, bytes: 1 }), /gives its key 0 bytes/],
    ["a key length beyond its record", assemble([header(), record("K", Buffer.concat([u32s(0, 99), b("/k")]))], ONE_KEY, {}), /gives its key 99 bytes of the 2 it holds/],
    ["a key on an undeclared lease", assemble([header(), keyRecord("/k", 1)], { keys: 1, leases: 0, bytes: 3 }), /puts its key on lease 1, which no lease record before it declares/],
    ["leases numbered out of turn", assemble([header(), record("L", u32s(2, 60))], { keys: 0, leases: 2, bytes: 0 }), /declares lease 2 where lease 1 comes next/],
    ["a lease record of the wrong size", assemble([header(), record("L", u32s(1))], { keys: 0, leases: 1, bytes: 0 }), /a lease record holds 8 bytes, this one 4/],
    ["a trailer counting other keys", assemble([header(), keyRecord("/k1")], { keys: 1, leases: 0, bytes: 4 }, { keys: 2 }), /the trailer \(record 3 \(trailer\) at byte \d+\) says keys 2, the file before it has 1/],
    ["a trailer counting other bytes", assemble([header(), keyRecord("/k1")], { keys: 1, leases: 0, bytes: 99 }), /says bytes 99, the file before it has 4/],
    ["a trailer with another hash", assemble([header()], { keys: 0, leases: 0, bytes: 0 }, { sha256: "0".repeat(64) }), /says sha256 0{64}, the file before it has [0-9a-f]{64}/],
    ["a record claiming more than a record may hold", Buffer.concat([start(), header(), Buffer.from([0x4b, 0xff, 0xff, 0xff, 0xff])]), new RegExp(`claims 4294967295 bytes, more than a record may hold \\(${MAX_RECORD_BYTES}\\)`)],
  ];
  for (const [what, file, expected] of cases) {
    test(what, async () => {
      if (expected.source === "^$") {
        await verifyBackup(chunked(file));
        return;
      }
      assert.match(await defect(file), expected);
    });
  }
});
