// restore: a backup file into an empty prefix. Everything that can be checked before writing is
// checked first, and a refusal writes nothing: the whole file (framing, checksums, version, order,
// counts, SHA-256), the tenant's storage quota, then that the prefix is empty. Then the file is
// read again and written in Txns of bounded size, a few in flight, each guarded so that it only
// creates keys that do not exist; leases are granted under IDs of the tenant's (tenant/leases.ts),
// so that its gateway lets it keep them alive and revoke them. A restore that fails once it began
// writing deletes the prefix (a DeleteRange of exactly the prefix, made by keys.ts), once every Txn
// sent was answered, so that it is empty again, retrying while core etcd is unreachable, up to a
// deadline.
import { createReadStream } from "node:fs";
import { LeaseScope } from "../tenant/leases.ts";
import { readBackup, verifyBackup, type BackupHeader, type BackupTrailer } from "./format.ts";
import type { PutOp, TenantCalls } from "./calls.ts";
import { Failure } from "./failure.ts";

// etcd's defaults: --max-txn-ops 128, --max-request-bytes 1.5 MiB. A Txn stays below both; a key
// and value larger than MAX_TXN_BYTES go alone.
const MAX_TXN_KEYS = 100;
const MAX_TXN_BYTES = 1024 * 1024;
// Txns sent before the first is answered: core etcd commits the proposals that arrive together in
// one raft write (one fsync), where one at a time costs one each. Each Txn creates keys of its own
// range of the file, guarded on that range, so their order does not matter.
const TXNS_IN_FLIGHT = 4;
/** A key whose lease would run out within this is not sent (it would be gone by the time it is read). */
const LEASE_MARGIN_MS = 1_000;
const GRANT_ATTEMPTS = 5;
const READ_CHUNK = 1024 * 1024;

export interface RestoreOptions {
  in: string;
  quotaBytes: number;
  cleanupTimeoutSeconds: number;
}

export interface RestoreSummary {
  tenant: string;
  prefix: string;
  from: Pick<BackupHeader, "tenant" | "prefix" | "revision" | "createdAt">;
  keys: number;
  /** Keys not written because their lease ran out while the restore ran (they would have expired anyway). */
  expiredKeys: number;
  leases: number;
  /** What the restored keys count against the storage quota: keys with the prefix, and values. */
  bytes: number;
  sha256: string;
  /** Core etcd's revision after the last write. */
  revision: number;
}

export async function restore(calls: TenantCalls, tenant: string, options: RestoreOptions): Promise<RestoreSummary> {
  const prefix = calls.keyspace.prefix.toString("latin1");
  let verified: { header: BackupHeader; trailer: BackupTrailer };
  try {
    verified = await verifyBackup(createReadStream(options.in, { highWaterMark: READ_CHUNK }));
  } catch (error) {
    throw new Failure(3, "InvalidFile", `restore refused: ${options.in}: ${(error as Error).message}; nothing was written`);
  }
  const { header, trailer } = verified;
  const bytes = trailer.bytes + trailer.keys * calls.keyspace.prefix.length;
  if (bytes > options.quotaBytes) {
    throw new Failure(
      3,
      "OverQuota",
      `restore refused: the backup restores ${bytes} bytes (${trailer.keys} keys with the prefix ${prefix}, and their values), more than the tenant's storage quota of ${options.quotaBytes} bytes (--quota-bytes); nothing was written`,
    );
  }
  const present = await calls.count();
  if (present > 0) throw new Failure(3, "PrefixNotEmpty", `restore refused: the prefix ${prefix} holds ${present} keys; a restore writes only into an empty prefix, never over live data; nothing was written`);

  const scope = new LeaseScope(prefix);
  const ttls = new Map<number, number>();
  const granted = new Map<number, { id: bigint; until: number }>();
  let batch: { key: Buffer; value: Buffer; lease: number }[] = [];
  let batchBytes = 0;
  /** Txns sent and not yet answered, oldest first. */
  const inFlight: Promise<void>[] = [];
  let written = 0;
  let expired = 0;
  let revision = 0;

  const grant = async (number: number): Promise<{ id: bigint; until: number }> => {
    // etcd grants at least its minimum TTL; a lease that had expired when read (0) gets the shortest.
    const ttl = Math.max(1, ttls.get(number)!);
    for (let attempt = 1; ; attempt++) {
      const id = scope.newId();
      const sentAt = Date.now();
      try {
        const grantedTtl = await calls.leaseGrant(id, ttl);
        return { id, until: sentAt + grantedTtl * 1000 };
      } catch (error) {
        // An ID taken already (32 random bits): another one.
        if (attempt >= GRANT_ATTEMPTS || !/lease already exists/.test((error as Error).message)) throw error;
      }
    }
  };
  const flush = async (): Promise<void> => {
    if (batch.length === 0) return;
    const first = written + expired + 1;
    const puts: PutOp[] = [];
    for (const item of batch) {
      let lease = 0n;
      if (item.lease !== 0) {
        let held = granted.get(item.lease);
        if (!held) granted.set(item.lease, (held = await grant(item.lease)));
        if (held.until - Date.now() < LEASE_MARGIN_MS) {
          expired++;
          continue;
        }
        lease = held.id;
      }
      puts.push({ key: item.key, value: item.value, lease });
    }
    const batchSize = batch.length;
    batch = [];
    batchBytes = 0;
    if (puts.length === 0) return;
    const sent = calls.createAll(puts).then((answer) => {
      if (!answer.applied) throw new Error(`a key among the file's keys ${first} to ${first + batchSize - 1} exists already: something else writes into the prefix`);
      written += puts.length;
      revision = Math.max(revision, answer.revision);
    });
    // Its failure is thrown where it is awaited, in order.
    sent.catch(() => {});
    inFlight.push(sent);
    if (inFlight.length >= TXNS_IN_FLIGHT) await inFlight.shift();
  };

  try {
    for await (const entry of readBackup(createReadStream(options.in, { highWaterMark: READ_CHUNK }))) {
      if (entry.kind === "lease") ttls.set(entry.number, entry.ttl);
      else if (entry.kind === "key") {
        const size = calls.keyspace.prefix.length + entry.key.length + entry.value.length;
        if (batch.length >= MAX_TXN_KEYS || (batch.length > 0 && batchBytes + size > MAX_TXN_BYTES)) await flush();
        batch.push({ key: Buffer.from(entry.key), value: Buffer.from(entry.value), lease: entry.lease });
        batchBytes += size;
      } else if (entry.kind === "trailer") {
        await flush();
        while (inFlight.length > 0) await inFlight.shift();
        if (entry.trailer.sha256 !== trailer.sha256) throw new Error(`${options.in} changed while it was restored (SHA-256 ${entry.trailer.sha256}, was ${trailer.sha256})`);
      }
    }
  } catch (error) {
    const why = (error as Error).message;
    // No Txn may apply after the prefix was emptied.
    await Promise.allSettled(inFlight);
    const cleaned = await deleteWritten(calls, [...granted.values()].map((lease) => lease.id), options.cleanupTimeoutSeconds);
    const wrote = `restore failed after writing ${written} of ${trailer.keys} keys: ${why}`;
    if (cleaned.ok) throw new Failure(1, "RestoreFailed", `${wrote}; deleted what it wrote (${cleaned.deleted} keys): the prefix ${prefix} is empty again`);
    throw new Failure(
      1,
      "CleanupFailed",
      `${wrote}; deleting what it wrote failed for ${options.cleanupTimeoutSeconds} s (${cleaned.why}): the prefix ${prefix} holds part of the backup; delete it (etcdctl del --prefix ${prefix}) before restoring again`,
    );
  }
  return {
    tenant,
    prefix,
    from: { tenant: header.tenant, prefix: header.prefix, revision: header.revision, createdAt: header.createdAt },
    keys: written,
    expiredKeys: expired,
    leases: granted.size,
    bytes,
    sha256: trailer.sha256,
    revision,
  };
}

/** Deletes the prefix, retrying while core etcd fails, then revokes the leases granted (best effort: they expire anyway). */
async function deleteWritten(calls: TenantCalls, leases: bigint[], timeoutSeconds: number): Promise<{ ok: true; deleted: number } | { ok: false; why: string }> {
  const deadline = Date.now() + timeoutSeconds * 1000;
  let deleted: number;
  for (;;) {
    try {
      deleted = await calls.deletePrefix();
      break;
    } catch (error) {
      if (Date.now() >= deadline) return { ok: false, why: (error as Error).message };
      await new Promise((resolve) => setTimeout(resolve, Math.min(1_000, Math.max(0, deadline - Date.now()))));
    }
  }
  for (const id of leases) await calls.leaseRevoke(id).catch(() => {});
  return { ok: true, deleted };
}
