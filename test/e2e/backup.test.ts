// Backup and restore of one tenant (gateway/backup/, README "Backup format") on a real TLS core
// etcd, the programs run as processes exactly as a Job would run them (`node dist/gateway/backup/main.js`
// with the core credentials as files). The oracle is the tests' own etcd client: a backup taken
// while writes continue equals a Range of the prefix at the backup's revision, key for key and byte
// for byte; a restore gives exactly those keys, and leases with the TTL they had left; every
// refusal leaves every core key as it was; a restore that fails midway leaves the prefix empty;
// nothing outside the prefix is ever touched; the README's Python reader verifies a real file.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream, existsSync } from "node:fs";
import { readFile, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { BackupWriter, readBackup, type BackupEntry } from "../../gateway/backup/format.ts";
import { LeaseScope } from "../../gateway/tenant/leases.ts";
import { ensureBuilt } from "../support/build.ts";
import { connect, type EtcdClient } from "../support/etcd-client.ts";
import { spawnManaged, startCoreEtcd, stopAll, tempDir, waitFor, type CoreEtcd } from "./harness.ts";

const REPO = fileURLToPath(new URL("../../", import.meta.url));
// The program as the image runs it: compiled (test/support/build.ts; npm test builds it first).
ensureBuilt();
const KiB = 1024;
const MiB = 1024 * KiB;
const KEYS = 1_200;
const TTLS = [600, 900];

const prefixOf = (tenant: string) => `/etcdstorage/${tenant}/`;
const endOf = (prefix: string) => prefix.slice(0, -1) + "0";
const latin1 = (text: string) => Buffer.from(text, "latin1");

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** One run of `node dist/gateway/backup/main.js`, as a Job's container runs it. */
async function tool(args: readonly string[]): Promise<Run> {
  const child = spawnManaged(process.execPath, ["dist/gateway/backup/main.js", ...args], { cwd: REPO, env: { PATH: process.env.PATH ?? "/usr/bin:/bin" } });
  const { code } = await child.exited;
  return { code, stdout: child.stdout(), stderr: child.stderr() };
}

function summaryOf(run: Run): Record<string, unknown> {
  assert.equal(run.code, 0, `exit ${run.code}: ${run.stderr}`);
  const lines = run.stdout.trim().split("\n");
  assert.equal(lines.length, 1, run.stdout);
  return JSON.parse(lines[0]!) as Record<string, unknown>;
}

/** Every key of core etcd: key → its value's hash, lease and mod revision; and the store's revision. */
async function everything(client: EtcdClient): Promise<{ revision: string; keys: Map<string, string> }> {
  const answer = await client.kv.range({ key: Buffer.from([0]), range_end: Buffer.from([0]) });
  const keys = new Map<string, string>();
  for (const kv of answer.kvs) keys.set(kv.key.toString("latin1"), `${createHash("sha256").update(kv.value).digest("hex")} lease=${kv.lease} mod=${kv.mod_revision}`);
  return { revision: answer.header!.revision, keys };
}

/** The keys of a snapshot outside the given prefixes. */
function outside(snapshot: Map<string, string>, ...prefixes: string[]): Map<string, string> {
  return new Map([...snapshot].filter(([key]) => !prefixes.some((prefix) => key.startsWith(prefix))));
}

async function entriesOf(file: string): Promise<BackupEntry[]> {
  const all: BackupEntry[] = [];
  for await (const entry of readBackup(createReadStream(file))) all.push(entry);
  return all;
}

/** The keys of a backup file with their values and the TTL of their lease (undefined: none). */
async function keysOf(file: string): Promise<{ key: Buffer; value: Buffer; lease: number; ttl?: number }[]> {
  const ttls = new Map<number, number>();
  const keys = [];
  for (const entry of await entriesOf(file)) {
    if (entry.kind === "lease") ttls.set(entry.number, entry.ttl);
    if (entry.kind === "key") keys.push({ key: entry.key, value: entry.value, lease: entry.lease, ...(entry.lease ? { ttl: ttls.get(entry.lease)! } : {}) });
  }
  return keys;
}

/** The README's reader, as printed there. */
async function readmePythonReader(): Promise<string> {
  const readme = await readFile(path.join(REPO, "README.md"), "utf8");
  const section = readme.slice(readme.indexOf("### Backup format"));
  const script = /```python\n([\s\S]*?)```/.exec(section.slice(0, section.indexOf("\n## ")))?.[1];
  assert.ok(script, "README's Backup format section holds a ```python block");
  return script;
}

function python(script: string, file: string): Promise<Run> {
  return new Promise((resolve) => {
    execFile("python3", [script, file], { encoding: "utf8", env: { PATH: process.env.PATH ?? "/usr/bin:/bin" } }, (error, stdout, stderr) =>
      resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

/** An offset in the middle of alpha's 1 MiB value in a backup file: a byte of a value, not of a record's frame. */
function insideTheBlob(file: Buffer): number {
  const at = file.indexOf(Buffer.alloc(64 * KiB, "b"));
  assert.ok(at > 0, "the file holds the 1 MiB value");
  return at + 32 * KiB;
}

/** A backup file made with the format's writer (keys without the prefix, ascending). */
async function writeFile_(file: string, keys: { key: Buffer; value: Buffer }[]): Promise<void> {
  const chunks: Buffer[] = [];
  const writer = new BackupWriter(async (chunk) => {
    chunks.push(chunk);
  });
  await writer.header({ tenant: "made", prefix: prefixOf("made"), revision: 1, createdAt: new Date().toISOString() });
  for (const { key, value } of keys) await writer.key(key, 0, value);
  await writer.finish();
  await writeFile(file, Buffer.concat(chunks));
}

describe("backup and restore of one tenant, on real etcd", () => {
  let dir: string;
  let core: CoreEtcd;
  let client: EtcdClient;
  let flags: (tenant: string) => string[];
  /** The backup taken while writes continued, and its revision. */
  let file: string;
  let revision: number;

  before(async () => {
    dir = await tempDir("backup-");
    core = await startCoreEtcd(dir);
    client = connect(core.endpoint, core.tls);
    flags = (tenant) => [`--tenant=${tenant}`, `--prefix=${prefixOf(tenant)}`, `--endpoints=${core.endpoint}`, `--cacert=${core.caFile}`, `--cert=${core.certFile}`, `--key=${core.keyFile}`];

    // The host's keys and other tenants' around alpha's prefix: none may ever change.
    const neighbours = ["/registry/pods/default/web", "/etcdstorage/alph", "/etcdstorage/alpha", "/etcdstorage/alpha0", "/etcdstorage/alpha.", "/etcdstorage/alphabet/x", "/etcdstorage/beta0", "/etcdstorage/gamma", "/etcdstorage/zeta/registry/x"];
    const hostLease = await client.lease.grant({ TTL: 3000 });
    await Promise.all(neighbours.map((key, i) => client.kv.put({ key, value: `host ${i}`, ...(i === 0 ? { lease: hostLease.ID } : {}) })));

    // alpha: objects of many sizes, one of 1 MiB, a key that is not UTF-8, and Events on two leases.
    const alpha = prefixOf("alpha");
    for (let i = 0; i < KEYS; i += 100) {
      await Promise.all(
        Array.from({ length: 100 }, (_, k) => {
          const n = i + k;
          return client.kv.put({ key: `${alpha}registry/configmaps/ns-${n % 7}/cm-${String(n).padStart(5, "0")}`, value: Buffer.alloc((n * 37) % (8 * KiB), n % 251) });
        }),
      );
    }
    await client.kv.put({ key: `${alpha}registry/blobs/big`, value: Buffer.alloc(MiB, "b") });
    await client.kv.put({ key: Buffer.concat([latin1(`${alpha}registry/bin/`), Buffer.from([0xff, 0xfe, 0x00])]), value: Buffer.from([0, 1, 2]) });
    await client.kv.put({ key: `${alpha}registry/empty`, value: "" });
    for (const [l, ttl] of TTLS.entries()) {
      const lease = await client.lease.grant({ TTL: ttl });
      for (let e = 0; e < 5; e++) await client.kv.put({ key: `${alpha}registry/events/ns-${l}/e-${e}`, value: `event ${l}.${e}`, lease: lease.ID });
    }
  });
  after(async () => {
    client?.close();
    await stopAll();
  });

  test("a backup taken while writes continue equals a Range of the prefix at its revision, key for key and byte for byte; the README's Python reader verifies it", async (t) => {
    const alpha = prefixOf("alpha");
    file = path.join(dir, "alpha.bak");
    // Writes inside the prefix (overwrites, deletes, creates) and outside it, until the backup ends.
    let writing = true;
    const revisions: number[] = [];
    const writer = (async () => {
      for (let n = 0; writing; n++) {
        const key = n % 9 === 0 ? `/registry/outside/w-${n}` : n % 5 === 0 ? `${alpha}registry/new/n-${n}` : `${alpha}registry/configmaps/ns-${n % 7}/cm-${String((n * 13) % KEYS).padStart(5, "0")}`;
        const answer = n % 11 === 0 ? await client.kv.deleteRange({ key: `${alpha}registry/configmaps/ns-${n % 7}/cm-${String((n * 17) % KEYS).padStart(5, "0")}` }) : await client.kv.put({ key, value: `written at ${n}` });
        revisions.push(Number(answer.header!.revision));
      }
    })();
    const started = Date.now();
    // A budget of 4 MiB: one key a page (etcd reads two), some 1,300 pages while the writes go on.
    const run = await tool(["backup", ...flags("alpha"), `--out=${file}`, `--read-budget-bytes=${4 * MiB}`]);
    writing = false;
    await writer;
    const summary = summaryOf(run);
    revision = summary.revision as number;
    const during = revisions.filter((r) => r > revision).length;
    t.diagnostic(`backup: ${summary.keys} keys, ${summary.bytes} bytes in ${summary.pages} pages, ${Date.now() - started} ms; ${during} writes after its revision while it ran`);
    assert.ok(during > 20, `writes went on during the backup (${during} after its revision)`);

    // The oracle: the prefix at the backup's revision, in one Range.
    const atRevision = await client.kv.range({ key: alpha, range_end: endOf(alpha), revision });
    const now = await client.kv.range({ key: alpha, range_end: endOf(alpha) });
    assert.notDeepEqual(now.kvs.map((kv) => kv.mod_revision), atRevision.kvs.map((kv) => kv.mod_revision), "the prefix changed since the backup's revision");
    const keys = await keysOf(file);
    assert.equal(keys.length, atRevision.kvs.length);
    for (const [i, kv] of atRevision.kvs.entries()) {
      assert.ok(keys[i]!.key.equals(kv.key.subarray(alpha.length)), `key ${i}`);
      assert.ok(keys[i]!.value.equals(kv.value), `value of key ${i}`);
      assert.equal(keys[i]!.ttl !== undefined, kv.lease !== "0");
    }
    // The summary is the trailer's; the SHA-256 is that of every byte before the trailer.
    const bytes = await readFile(file);
    const trailer = (await entriesOf(file)).at(-1) as Extract<BackupEntry, { kind: "trailer" }>;
    const trailerLength = 5 + JSON.stringify(trailer.trailer).length + 4;
    assert.deepEqual(
      { keys: summary.keys, leases: summary.leases, bytes: summary.bytes, sha256: summary.sha256, fileBytes: summary.fileBytes },
      { keys: atRevision.kvs.length, leases: 2, bytes: atRevision.kvs.reduce((sum, kv) => sum + kv.key.length - alpha.length + kv.value.length, 0), sha256: createHash("sha256").update(bytes.subarray(0, bytes.length - trailerLength)).digest("hex"), fileBytes: bytes.length },
    );
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    assert.ok(!existsSync(`${file}.partial`));

    // Each Event's lease TTL as it was when read: the source lease has at most the seconds since left less.
    for (const kv of atRevision.kvs.filter((kv) => kv.lease !== "0")) {
      const recorded = keys.find((k) => k.key.equals(kv.key.subarray(alpha.length)))!.ttl!;
      const left = Number((await client.lease.timeToLive({ ID: kv.lease })).TTL);
      assert.ok(left <= recorded && recorded - left <= (Date.now() - started) / 1000 + 1, `recorded TTL ${recorded}, ${left} left now`);
    }

    // The README's reader, with nothing of this project: the same keys, sizes and TTLs.
    const script = path.join(dir, "read-backup.py");
    await writeFile(script, await readmePythonReader());
    const read = await python(script, file);
    assert.equal(read.code, 0, read.stderr);
    const lines = read.stdout.trim().split("\n");
    assert.deepEqual(JSON.parse(lines[0]!), { format: "etcdstorage-backup", version: 1, tenant: "alpha", prefix: alpha, revision, createdAt: (await entriesOf(file)).find((e) => e.kind === "header")!.header.createdAt });
    assert.equal(lines.at(-1), `verified ${JSON.stringify(trailer.trailer)}`);
    const pythonKey = (key: Buffer) => {
      try {
        return new TextDecoder("utf-8", { fatal: true }).decode(key);
      } catch {
        return [...key].map((byte) => (byte < 0x80 ? String.fromCharCode(byte) : `\\x${byte.toString(16)}`)).join("");
      }
    };
    assert.deepEqual(
      lines.slice(1, -1),
      keys.map((k) => `${JSON.stringify(pythonKey(k.key)).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`)} ${k.value.length} ${k.ttl ?? "-"}`),
    );
    const flipped = Buffer.from(bytes);
    flipped[insideTheBlob(bytes)]! ^= 0x10;
    await writeFile(path.join(dir, "flipped-for-python.bak"), flipped);
    const refused = await python(script, path.join(dir, "flipped-for-python.bak"));
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /^checksum: the record ending at byte \d+/);
  });

  test("restore into an empty prefix (a clone): exactly the backup's keys, and leases of the TTL they had left", async () => {
    const beta = prefixOf("beta");
    const before = await everything(client);
    const restoredAt = Date.now();
    const result = path.join(dir, "beta.result");
    const summary = summaryOf(await tool(["restore", ...flags("beta"), `--in=${file}`, `--quota-bytes=${64 * MiB}`, `--result-file=${result}`]));
    assert.deepEqual(JSON.parse(await readFile(result, "utf8")), summary, "the outcome in --result-file too");
    assert.equal(summary.restored, true);
    const keys = await keysOf(file);
    assert.equal(summary.keys, keys.length);
    assert.equal(summary.expiredKeys, 0);
    assert.equal(summary.leases, 2);
    assert.deepEqual(summary.from, { tenant: "alpha", prefix: prefixOf("alpha"), revision, createdAt: (summary.from as { createdAt: string }).createdAt });

    const restored = await client.kv.range({ key: beta, range_end: endOf(beta) });
    assert.equal(restored.kvs.length, keys.length);
    assert.equal(summary.bytes, restored.kvs.reduce((sum, kv) => sum + kv.key.length + kv.value.length, 0));
    const scope = new LeaseScope(beta);
    const leaseOf = new Map<number, string>();
    for (const [i, kv] of restored.kvs.entries()) {
      const k = keys[i]!;
      assert.ok(kv.key.equals(Buffer.concat([latin1(beta), k.key])), `key ${i}`);
      assert.ok(kv.value.equals(k.value), `value of key ${i}`);
      if (k.ttl === undefined) {
        assert.equal(kv.lease, "0");
        continue;
      }
      // Keys that shared a lease share the new one, granted under the tenant's own ID.
      if (!leaseOf.has(k.lease)) leaseOf.set(k.lease, kv.lease);
      assert.equal(kv.lease, leaseOf.get(k.lease));
      assert.equal(scope.confine(BigInt(kv.lease)), BigInt(kv.lease), "a lease ID of beta's");
      const lease = await client.lease.timeToLive({ ID: kv.lease });
      assert.equal(Number(lease.grantedTTL), k.ttl);
      assert.ok(k.ttl - Number(lease.TTL) <= (Date.now() - restoredAt) / 1000 + 1, `TTL ${lease.TTL} left of ${k.ttl}`);
    }
    assert.equal(leaseOf.size, 2);
    const after = await everything(client);
    assert.deepEqual(outside(after.keys, beta), before.keys, "nothing outside beta's prefix changed");
  });

  test("refused before anything is written: a non-empty prefix, a file over the quota, a truncated file, a flipped byte, a newer format version; every core key stays as it was", async () => {
    const bytes = await readFile(file);
    const blob = insideTheBlob(bytes);
    const keys = await keysOf(file);
    const gammaBytes = keys.reduce((sum, k) => sum + prefixOf("gamma").length + k.key.length + k.value.length, 0);
    const variant = async (name: string, change: (copy: Buffer) => Buffer) => {
      const target = path.join(dir, name);
      await writeFile(target, change(Buffer.from(bytes)));
      return target;
    };
    const cases: [string, string[], RegExp, string][] = [
      ["a non-empty prefix", ["restore", ...flags("alpha"), `--in=${file}`, `--quota-bytes=${64 * MiB}`], /^restore refused: the prefix \/etcdstorage\/alpha\/ holds \d+ keys; a restore writes only into an empty prefix, never over live data; nothing was written$/, "PrefixNotEmpty"],
      [
        "a file over the quota (by one byte)",
        ["restore", ...flags("gamma"), `--in=${file}`, `--quota-bytes=${gammaBytes - 1}`],
        new RegExp(`^restore refused: the backup restores ${gammaBytes} bytes \\(${keys.length} keys with the prefix /etcdstorage/gamma/, and their values\\), more than the tenant's storage quota of ${gammaBytes - 1} bytes \\(--quota-bytes\\); nothing was written$`),
        "OverQuota",
      ],
      ["a truncated file", ["restore", ...flags("gamma"), `--in=${await variant("truncated.bak", (copy) => copy.subarray(0, blob))}`, `--quota-bytes=${64 * MiB}`], /^restore refused: .*truncated.bak: truncated: the file ends at byte \d+, inside record \d+ \(key, at byte \d+, of \d+ bytes\); nothing was written$/, "InvalidFile"],
      [
        "a flipped byte",
        ["restore", ...flags("gamma"), `--in=${await variant("flipped.bak", (copy) => ((copy[blob]! ^= 0x04), copy))}`, `--quota-bytes=${64 * MiB}`],
        /^restore refused: .*flipped.bak: corrupt: record \d+ \(key\) at byte \d+ fails its checksum \(CRC-32 [0-9a-f]{8} stored, [0-9a-f]{8} computed\); nothing was written$/,
        "InvalidFile",
      ],
      ["a newer format version", ["restore", ...flags("gamma"), `--in=${await variant("newer.bak", (copy) => (copy.writeUInt16BE(2, 8), copy))}`, `--quota-bytes=${64 * MiB}`], /^restore refused: .*newer.bak: format version 2 is newer than this program reads \(version 1\)/, "InvalidFile"],
    ];
    for (const [what, args, expected, reason] of cases) {
      const before = await everything(client);
      const result = path.join(dir, "refused.result");
      const run = await tool([...args, `--result-file=${result}`]);
      assert.equal(run.code, 3, `${what}: exit ${run.code}: ${run.stderr}`);
      assert.match(run.stderr.trim(), expected, what);
      assert.equal(run.stdout, "", what);
      assert.deepEqual(JSON.parse(await readFile(result, "utf8")), { failed: true, reason, exitCode: 3, message: run.stderr.trim() }, what);
      const after = await everything(client);
      assert.deepEqual(after, before, `${what}: every key and the store's revision as they were`);
    }
    // The same file at exactly the quota is restored.
    const summary = summaryOf(await tool(["restore", ...flags("gamma"), `--in=${file}`, `--quota-bytes=${gammaBytes}`]));
    assert.equal(summary.bytes, gammaBytes);
  });

  test("after the tenant's keys were deleted (as the cleanup Job deletes them), a restore into the same prefix gives them back", async () => {
    const alpha = prefixOf("alpha");
    const deleted = await core.etcdctl(["del", "--prefix=true", alpha]);
    assert.equal(deleted.code, 0, deleted.stderr);
    const before = await everything(client);
    summaryOf(await tool(["restore", ...flags("alpha"), `--in=${file}`, `--quota-bytes=${64 * MiB}`]));
    const restored = await client.kv.range({ key: alpha, range_end: endOf(alpha) });
    const atRevision = await client.kv.range({ key: alpha, range_end: endOf(alpha), revision });
    assert.deepEqual(
      restored.kvs.map((kv) => [kv.key, kv.value, kv.lease !== "0"]),
      atRevision.kvs.map((kv) => [kv.key, kv.value, kv.lease !== "0"]),
    );
    assert.deepEqual(outside((await everything(client)).keys, alpha), before.keys);
  });

  test("a restore that fails midway (core etcd refuses a Txn over its request size) deletes what it wrote: the prefix is empty again", async () => {
    // A file from a core etcd with a larger --max-request-bytes: core etcd's own limit (1.5 MiB by
    // default) is known only when it refuses a write, after 300 keys went in.
    const made = path.join(dir, "large-value.bak");
    const keys = Array.from({ length: 300 }, (_, i) => ({ key: Buffer.from(`/registry/a/k-${String(i).padStart(4, "0")}`), value: Buffer.alloc(KiB, i) }));
    await writeFile_(made, [...keys, { key: Buffer.from("/registry/z/large"), value: Buffer.alloc(1.7 * MiB, "z") }]);
    const delta = prefixOf("delta");
    const before = await everything(client);
    const run = await tool(["restore", ...flags("delta"), `--in=${made}`, `--quota-bytes=${64 * MiB}`]);
    assert.equal(run.code, 1, run.stderr);
    assert.match(run.stderr.trim(), /^restore failed after writing 300 of 301 keys: core etcd Txn: .*request is too large; deleted what it wrote \(300 keys\): the prefix \/etcdstorage\/delta\/ is empty again$/);
    const after = await everything(client);
    assert.equal(outside(after.keys, delta).size, after.keys.size, "the prefix is empty");
    assert.deepEqual(after.keys, before.keys, "every key as it was");
  });

  test("a restore that fails midway (core etcd killed while it writes, then back) deletes what it wrote once core etcd is back: the prefix is empty again", async (t) => {
    const made = path.join(dir, "many.bak");
    await writeFile_(made, Array.from({ length: 20_000 }, (_, i) => ({ key: Buffer.from(`/registry/pods/ns/p-${String(i).padStart(6, "0")}`), value: Buffer.alloc(200, i % 251) })));
    const epsilon = prefixOf("epsilon");
    const before = await everything(client);
    const restoring = tool(["restore", ...flags("epsilon"), `--in=${made}`, `--quota-bytes=${64 * MiB}`, "--cleanup-timeout-seconds=60"]);
    // Polled closely: the restore writes 200 Txns.
    let seen = 0;
    for (const deadline = Date.now() + 20_000; seen === 0 && Date.now() < deadline; await new Promise((resolve) => setTimeout(resolve, 5))) {
      seen = Number((await client.kv.range({ key: epsilon, range_end: endOf(epsilon), count_only: true })).count);
    }
    await core.kill();
    t.diagnostic(`core etcd killed with ${seen}+ of 20000 keys written`);
    await core.start();
    const run = await restoring;
    assert.equal(run.code, 1, run.stderr);
    // Before it, the connection's warnings (JSON lines): the session lost, the endpoint refusing.
    const message = run.stderr.trim().split("\n").at(-1)!;
    assert.match(message, /^restore failed after writing \d+ of 20000 keys: core etcd Txn: UNAVAILABLE: .*; deleted what it wrote \(\d+ keys\): the prefix \/etcdstorage\/epsilon\/ is empty again$/);
    t.diagnostic(message);
    // The tests' client reconnects on its own schedule.
    const after = await waitFor("core etcd answering the tests' client again", () => everything(client));
    assert.deepEqual(outside(after.keys, epsilon), after.keys, "the prefix is empty");
    assert.deepEqual(after.keys, before.keys, "every key as it was");
  });

  test("a backup whose revision is compacted before its last page fails naming the revision, and leaves no file", async () => {
    const out = path.join(dir, "compacted.bak");
    const before = await everything(client);
    // One key a page: the backup reads for a while.
    const result = path.join(dir, "compacted.result");
    const backingUp = tool(["backup", ...flags("alpha"), `--out=${out}`, `--read-budget-bytes=${2 * MiB}`, `--result-file=${result}`]);
    // The first MiB is written once pages past the backup's revision were read: compact then.
    await waitFor("the backup's first bytes on disk", async () => ((await stat(`${out}.partial`).catch(() => undefined))?.size ?? 0) > 0 || undefined, 20_000);
    const put = await client.kv.put({ key: "/registry/outside/compact-marker", value: "x" });
    await client.kv.compact({ revision: put.header!.revision, physical: true });
    const run = await backingUp;
    assert.equal(run.code, 1, run.stderr);
    const match = /^backup failed: core etcd compacted revision (\d+) while the backup read it \(etcdserver: mvcc: required revision has been compacted\) after \d+ pages: nothing was kept/.exec(run.stderr.trim());
    assert.ok(match, run.stderr);
    assert.ok(Number(match[1]) < Number(put.header!.revision));
    assert.deepEqual(JSON.parse(await readFile(result, "utf8")), { failed: true, reason: "Compacted", exitCode: 1, message: run.stderr.trim() });
    assert.ok(!existsSync(out) && !existsSync(`${out}.partial`), "no file, not even the partial one");
    // A backup reads: every key but the test's marker as it was.
    assert.deepEqual(outside((await everything(client)).keys, "/registry/outside/compact-marker"), before.keys);
  });
});
