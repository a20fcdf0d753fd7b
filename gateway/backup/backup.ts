// backup: every key under the tenant's prefix at one revision, the revision of the first page, read
// in pages pinned to it (Range with revision and limit, continuing after the last key), so that
// writes while it runs never make it inconsistent. A page makes core etcd build at most the read
// budget in memory: etcd reads one object more than the limit (to tell whether there are more), so
// the limit is the budget over the largest object a page may hold (what a tenant can write through
// its gateway, 2 MiB, or a larger one already read), less one. Written to <file>.partial and
// renamed once complete and on disk: a failed backup leaves no file at <file>.
//
// etcd also walks its index over the whole rest of a Range to count it, for every page
// (mvcc/index.go, Revisions): paged to the prefix's end, a backup's pages cost O(keys²) (131,072
// small keys: 43 ms a page at first, 54 to 70 s in all). So each page reads a window of the prefix
// [start, end) estimated to hold about WINDOW_KEYS keys (PageWindows), which bounds that walk.
// The windows only estimate: any end beyond the start keeps every key read once and in order, so
// a wrong guess costs requests, never a key.
import { link, open, rename, rm, stat } from "node:fs/promises";
import path from "node:path";
import { DEFAULT_LIMITS } from "../tenant/limits.ts";
import { BackupWriter, type BackupTrailer } from "./format.ts";
import { CoreCallError, type RangePage, type TenantCalls } from "./calls.ts";
import { Failure } from "./failure.ts";

const MAX_PAGE_KEYS = 10_000;
// etcd's answer when the revision asked for was compacted (ErrGRPCCompacted: OUT_OF_RANGE).
const OUT_OF_RANGE = 11;

export interface BackupOptions {
  tenant: string;
  prefix: string;
  out: string;
  readBudgetBytes: number;
}

export interface BackupSummary extends BackupTrailer {
  tenant: string;
  prefix: string;
  revision: number;
  file: string;
  fileBytes: number;
  pages: number;
}

// Window ends are computed on a key's first WINDOW_KEY_BYTES bytes, taken as a number: keys that
// differ only beyond them (longer than Kubernetes' keys) share a window end, and are read in pages
// to the end of that window as without windows.
const WINDOW_KEY_BYTES = 512;
const KEY_SPACE = 1n << BigInt(8 * WINDOW_KEY_BYTES);
// What a window is sized to hold: windows much wider than a page come back with full pages across
// the gaps in a key space of names (a decimal carry, the next namespace), and etcd's walk over
// 2,048 keys takes half a millisecond to a millisecond.
const WINDOW_KEYS = 2048n;
const AFTER = Buffer.from([0]);

function keyNumber(key: Buffer): bigint {
  const bytes = Buffer.alloc(WINDOW_KEY_BYTES);
  key.copy(bytes, 0, 0, WINDOW_KEY_BYTES);
  return BigInt(`0x${bytes.toString("hex")}`);
}

function numberKey(value: bigint): Buffer {
  return Buffer.from(value.toString(16).padStart(2 * WINDOW_KEY_BYTES, "0"), "hex");
}

/**
 * The windows a backup reads the prefix in: where the next page starts and ends, from the density
 * of keys the last page found, taking a key's first bytes as a number. The first page reads to
 * the prefix's end; after a full page, the next window starts after its last key, as wide as
 * WINDOW_KEYS keys at the density of that page's; after a window with less than a page (the end of
 * a group of keys), the next starts at its end, as wide as WINDOW_KEYS keys at its density (at
 * least one key's).
 */
export class PageWindows {
  /** Where the next page starts (a tenant key, included). */
  start: Buffer = Buffer.alloc(0);
  /** Where it ends (excluded); undefined: at the prefix's end. */
  end: Buffer | undefined = undefined;
  /** The width of the current window; undefined: to the prefix's end. */
  private width: bigint | undefined = undefined;
  private empty = 0;

  /** After the page of the current window: its keys, and whether the window holds more. False when every key was read. */
  advance(keys: readonly Buffer[], more: boolean): boolean {
    if (more) {
      // The spacing of the page's own keys: its start may lie before a gap.
      const last = keys[keys.length - 1]!;
      const [from, gaps] = keys.length > 1 ? [keys[0]!, keys.length - 1] : [this.start, 1];
      this.width = bigMax(1n, ((keyNumber(last) - keyNumber(from)) * WINDOW_KEYS) / BigInt(gaps));
      this.start = Buffer.concat([last, AFTER]);
    } else {
      if (this.end === undefined) return false;
      // Empty windows in a row: a gap far wider than the keys before it (keys that differ early
      // after a run that differed late). Each next window is wider by the square of the last
      // growth, so that any gap is crossed in a few requests.
      this.empty = keys.length === 0 ? this.empty + 1 : 0;
      const wider = this.empty === 0 ? (this.width! * WINDOW_KEYS) / BigInt(keys.length) : this.width! * WINDOW_KEYS ** (1n << BigInt(this.empty - 1));
      // A page of more keys than WINDOW_KEYS narrows it, never below one.
      this.width = bigMin(KEY_SPACE, bigMax(1n, wider));
      this.start = this.end;
    }
    const end = keyNumber(this.start) + this.width;
    this.end = end >= KEY_SPACE ? undefined : numberKey(end);
    return true;
  }
}

function bigMax(a: bigint, b: bigint): bigint {
  return a > b ? a : b;
}

function bigMin(a: bigint, b: bigint): bigint {
  return a < b ? a : b;
}

/**
 * How many keys a page may ask for, so that core etcd builds at most `budget` bytes for it: etcd
 * reads limit + 1 objects (etcdserver/txn/range.go, rangeLimit). At least 1, whatever the budget.
 */
export function pageLimit(budget: number, largestSeen: number): number {
  const largest = Math.max(DEFAULT_LIMITS.maxRequestBytes, largestSeen);
  return Math.max(1, Math.min(MAX_PAGE_KEYS, Math.floor(budget / largest) - 1));
}

export async function backup(calls: TenantCalls, options: BackupOptions): Promise<BackupSummary> {
  const { out } = options;
  const partial = `${out}.partial`;
  if (await exists(out)) throw new Failure(1, "OutputExists", `backup failed: --out: ${out} exists; a backup never overwrites one`);
  const file = await open(partial, "w", 0o600);
  let done = false;
  try {
    const writer = new BackupWriter(async (chunk) => {
      try {
        for (let at = 0; at < chunk.length; ) at += (await file.write(chunk, at)).bytesWritten;
      } catch (error) {
        throw writeFailure(partial, error);
      }
    });
    const leases = new Map<bigint, number>();
    let revision = 0;
    let largest = 0;
    let pages = 0;
    const windows = new PageWindows();
    const read = (limit: number): Promise<RangePage> =>
      calls.rangePage(windows.start, windows.end, revision, limit).catch((error: unknown) => {
        if (error instanceof CoreCallError && error.code === OUT_OF_RANGE && revision > 0) {
          throw new Failure(1, "Compacted", `backup failed: core etcd compacted revision ${revision} while the backup read it (${error.coreMessage}) after ${pages} pages: nothing was kept; take the backup again, or compact less often than a backup takes`);
        }
        throw error;
      });
    let page = await read(pageLimit(options.readBudgetBytes, largest));
    revision = page.revision;
    await writer.header({ tenant: options.tenant, prefix: options.prefix, revision, createdAt: new Date().toISOString() });
    for (;;) {
      pages++;
      for (const kv of page.kvs) largest = Math.max(largest, calls.keyspace.prefix.length + kv.key.length + kv.value.length);
      // The next page is asked for before this one is written: core etcd builds it while the file
      // is written. It is asked for once this one was received whole, so core etcd still holds one
      // page at a time (this process holds two).
      let next: Promise<RangePage> | undefined;
      if (windows.advance(page.kvs.map((kv) => kv.key), page.more && page.kvs.length > 0)) {
        next = read(pageLimit(options.readBudgetBytes, largest));
        // Its failure is thrown where it is awaited; a failure to write this page comes first.
        next.catch(() => {});
      }
      for (const kv of page.kvs) {
        let lease = 0;
        if (kv.lease !== 0n) {
          if (!leases.has(kv.lease)) {
            // The TTL left now; a lease that expired since the revision is kept as 0 (README).
            const ttl = await calls.leaseTimeToLive(kv.lease);
            leases.set(kv.lease, await writer.lease(Math.max(0, ttl)));
          }
          lease = leases.get(kv.lease)!;
        }
        await writer.key(kv.key, lease, kv.value);
      }
      if (next === undefined) break;
      page = await next;
    }
    const trailer = await writer.finish();
    const size = await file
      .sync()
      .then(() => file.stat())
      .then(({ size }) => file.close().then(() => size))
      .catch((error: unknown) => Promise.reject(writeFailure(partial, error)));
    await publish(partial, out);
    done = true;
    return { tenant: options.tenant, prefix: options.prefix, revision, ...trailer, file: out, fileBytes: size, pages };
  } finally {
    if (!done) {
      await file.close().catch(() => {});
      await rm(partial, { force: true });
    }
  }
}

function writeFailure(file: string, error: unknown): Failure {
  const full = (error as NodeJS.ErrnoException).code === "ENOSPC";
  return new Failure(1, full ? "VolumeFull" : "WriteFailed", `backup failed: cannot write ${file}: ${(error as Error).message}`);
}

/** Moves the complete file into place without replacing one that appeared meanwhile, and makes the name durable. */
async function publish(partial: string, out: string): Promise<void> {
  try {
    await link(partial, out);
    await rm(partial);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "EEXIST") throw new Failure(1, "OutputExists", `backup failed: --out: ${out} appeared while the backup ran; a backup never overwrites one`);
    // A volume without hard links: a rename, after the check at the start.
    if (code !== "EPERM" && code !== "ENOTSUP" && code !== "EOPNOTSUPP" && code !== "EXDEV") throw error;
    await rename(partial, out);
  }
  const dir = await open(path.dirname(out), "r");
  try {
    await dir.sync();
  } catch {
    // Some volumes cannot sync a directory; the file itself is on disk.
  } finally {
    await dir.close();
  }
}

async function exists(file: string): Promise<boolean> {
  try {
    await stat(file);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw error;
  }
}
