// backup: every key under the tenant's prefix at one revision, the revision of the first page, read
// in pages pinned to it (Range with revision and limit, continuing after the last key), so that
// writes while it runs never make it inconsistent. A page makes core etcd build at most the read
// budget in memory: etcd reads one object more than the limit (to tell whether there are more), so
// the limit is the budget over the largest object a page may hold (what a tenant can write through
// its gateway, 2 MiB, or a larger one already read), less one. Written to <file>.partial and
// renamed once complete and on disk: a failed backup leaves no file at <file>.
import { link, open, rename, rm, stat } from "node:fs/promises";
import path from "node:path";
import { DEFAULT_LIMITS } from "../tenant/limits.ts";
import { BackupWriter, type BackupTrailer } from "./format.ts";
import { CoreCallError, type TenantCalls } from "./calls.ts";
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
    let after: Buffer | undefined;
    for (;;) {
      const limit = pageLimit(options.readBudgetBytes, largest);
      let page;
      try {
        page = await calls.rangePage(after, revision, limit);
      } catch (error) {
        if (error instanceof CoreCallError && error.code === OUT_OF_RANGE && revision > 0) {
          throw new Failure(1, "Compacted", `backup failed: core etcd compacted revision ${revision} while the backup read it (${error.coreMessage}) after ${pages} pages: nothing was kept; take the backup again, or compact less often than a backup takes`);
        }
        throw error;
      }
      pages++;
      if (revision === 0) {
        revision = page.revision;
        await writer.header({ tenant: options.tenant, prefix: options.prefix, revision, createdAt: new Date().toISOString() });
      }
      for (const kv of page.kvs) {
        largest = Math.max(largest, calls.keyspace.prefix.length + kv.key.length + kv.value.length);
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
      if (!page.more || page.kvs.length === 0) break;
      after = page.kvs[page.kvs.length - 1]!.key;
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
