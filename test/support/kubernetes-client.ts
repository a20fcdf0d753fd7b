// The calls kube-apiserver's etcd3 store makes, shaped as etcd's client/v3/kubernetes/client.go
// builds them (Get, List, Count, OptimisticPut, OptimisticDelete), over the tests' own client.
// Fields are set as clientv3 sets them, since field presence is what a proxy can get wrong: a zero
// scalar is absent (proto3), while a Compare's mod_revision is present even when 0 (a oneof
// member), and OptimisticPut's lease is absent without one.
import type { CallOptions, EtcdClient, Int64, KeyValue, TxnResponse } from "./etcd-client.ts";

/** clientv3.GetPrefixRangeEnd: the prefix with its last byte below 0xff incremented; "\0" (every key) if none is. */
export function prefixRangeEnd(prefix: string): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i]!++;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

const present = (value: Int64 | undefined): Int64 | undefined => (value === undefined || BigInt(value) === 0n ? undefined : value);

/** Get: one key (limit 1), at `revision` when given. */
export async function get(client: EtcdClient, key: string, opts: { revision?: Int64 } = {}, call?: CallOptions): Promise<{ revision: string; kv?: KeyValue }> {
  const answer = await client.kv.range({ key, revision: present(opts.revision), limit: 1 }, call);
  return { revision: answer.header!.revision, ...(answer.kvs.length === 1 ? { kv: answer.kvs[0]! } : {}) };
}

export interface ListOptions {
  limit?: number;
  revision?: Int64;
  /** The key to start from: the last key of the previous page and "\0". */
  continue?: string;
}

/** List: the keys under `prefix` from `continue` on, up to `limit`, at `revision`. */
export async function list(client: EtcdClient, prefix: string, opts: ListOptions = {}, call?: CallOptions): Promise<{ kvs: KeyValue[]; count: number; more: boolean; revision: string }> {
  const answer = await client.kv.range({ key: opts.continue || prefix, range_end: prefixRangeEnd(prefix), limit: present(opts.limit), revision: present(opts.revision) }, call);
  return { kvs: answer.kvs, count: Number(answer.count), more: answer.more, revision: answer.header!.revision };
}

/** ListIter's next options: continue after the page's last key, revision pinned to the first page's. */
export function nextPage(opts: ListOptions, page: { kvs: KeyValue[]; revision: string }): ListOptions {
  return { ...opts, continue: `${page.kvs.at(-1)!.key.toString()}\0`, revision: present(opts.revision) ?? page.revision };
}

/** Count: the keys under `prefix` (count_only). */
export async function count(client: EtcdClient, prefix: string, call?: CallOptions): Promise<number> {
  return Number((await client.kv.range({ key: prefix, range_end: prefixRangeEnd(prefix), count_only: true }, call)).count);
}

export interface WriteResult {
  succeeded: boolean;
  /** The Txn's header revision. */
  revision: string;
  /** With getOnFailure, on failure: the object as it is now (none when it does not exist). */
  kv?: KeyValue;
  answer: TxnResponse;
}

function writeResult(answer: TxnResponse, getOnFailure: boolean): WriteResult {
  const result: WriteResult = { succeeded: answer.succeeded, revision: answer.header!.revision, answer };
  if (getOnFailure && !answer.succeeded) {
    const kvs = answer.responses[0]?.response_range?.kvs ?? [];
    if (kvs.length === 1) result.kv = kvs[0]!;
  }
  return result;
}

/** Txn: if mod_revision(key) == expectedRevision then put (with the lease) [else get]. A create expects 0. */
export async function optimisticPut(
  client: EtcdClient,
  key: string,
  value: string | Buffer,
  expectedRevision: Int64,
  opts: { leaseId?: Int64; getOnFailure?: boolean } = {},
  call?: CallOptions,
): Promise<WriteResult> {
  const answer = await client.kv.txn(
    {
      compare: [{ target: "MOD", key, mod_revision: expectedRevision }],
      success: [{ request_put: { key, value, lease: present(opts.leaseId) } }],
      ...(opts.getOnFailure ? { failure: [{ request_range: { key } }] } : {}),
    },
    call,
  );
  return writeResult(answer, opts.getOnFailure === true);
}

/** Txn: if mod_revision(key) == expectedRevision then delete [else get]. */
export async function optimisticDelete(client: EtcdClient, key: string, expectedRevision: Int64, opts: { getOnFailure?: boolean } = {}, call?: CallOptions): Promise<WriteResult> {
  const answer = await client.kv.txn(
    {
      compare: [{ target: "MOD", key, mod_revision: expectedRevision }],
      success: [{ request_delete_range: { key } }],
      ...(opts.getOnFailure ? { failure: [{ request_range: { key } }] } : {}),
    },
    call,
  );
  return writeResult(answer, opts.getOnFailure === true);
}

/** The leaseManager's TTL for objects of `ttl` seconds: a little extra so that the lease is reused for 60 s (or 5% of it). */
export function leaseManagerTtl(ttl: number): number {
  return ttl + Math.min(60, Math.floor(0.05 * ttl));
}

/**
 * k8s.io/apiserver's endpointSupportsRequestWatchProgress: the Status version parsed as
 * apimachinery's version.ParseSemantic does (three numbers, no leading zeros, an optional "v",
 * pre-release and build), supported unless below 3.4.31 or within [3.5.0, 3.5.13). Unparseable
 * means unsupported.
 */
export function supportsRequestWatchProgress(version: string): boolean {
  const match = /^\s*v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?\s*$/.exec(version);
  if (!match) return false;
  const parsed = { numbers: [Number(match[1]), Number(match[2]), Number(match[3])], preRelease: match[4] !== undefined };
  // A pre-release sorts before its release: 3.5.13-rc.0 is less than 3.5.13.
  const lessThan = (minimum: [number, number, number]) => {
    for (let i = 0; i < 3; i++) if (parsed.numbers[i] !== minimum[i]) return parsed.numbers[i]! < minimum[i];
    return parsed.preRelease;
  };
  return !(lessThan([3, 4, 31]) || (!lessThan([3, 5, 0]) && lessThan([3, 5, 13])));
}
