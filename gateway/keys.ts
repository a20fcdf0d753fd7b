// The prefix invariant, in one place: every key and range the gateway sends to core etcd is made
// here, from the tenant's key and range, and lies inside the tenant's prefix; every key that comes
// back loses the prefix here, and a key from outside the prefix is never handed to a tenant. One
// exception, read-only and for exactly one key: the host's compaction record (HOST_COMPACTION_KEY).
//
// Semantics are those of etcd's own namespace (client/v3/namespace, prefixInterval): a key gets
// the prefix in front; a range end of "\0" ("every key from here on") becomes the end of the
// prefix; any other range end gets the prefix. Field presence matters: etcd reads a range_end that
// is present but empty as "to the end of the keyspace" in Range, DeleteRange and Compare, and as
// "one key" in a Watch; both are kept apart here.

import { LENGTH_DELIMITED, Reader } from "./wire/protobuf.ts";

/**
 * The one key outside the prefix a tenant may read, and never write: kube-apiserver records each
 * compaction it makes under the root key compact_rev_key (its value: the compacted revision), and
 * every API server's store reads and watches that key to learn how far etcd is compacted
 * (k8s.io/apiserver etcd3/compact.go, on with ListFromCacheSnapshot since 1.34); its watch cache
 * then answers "too old" as etcd would. Under the prefix the host writes nothing. So a Range or a
 * Watch of exactly this key, alone, reads the host's; a write, a Txn, or any range naming it stays
 * under the prefix. Found by Kubernetes' storage suite (test/e2e/storage-suite.test.ts).
 */
export const HOST_COMPACTION_KEY = Buffer.from("compact_rev_key", "latin1");

/** How a present-but-empty range_end reads in the request that carries it. */
export type EmptyRangeEnd = "to-the-end" | "single-key";

export interface CoreRange {
  key: Buffer;
  /** Absent: one key. Never empty, never outside the prefix. */
  rangeEnd?: Buffer;
}

/** A key from core etcd that is not the tenant's: the gateway answers INTERNAL, never the key. */
export class OutsidePrefix extends Error {}

export class TenantKeyspace {
  /** The tenant's prefix, e.g. "/etcdstorage/sample/". */
  readonly prefix: Buffer;
  /** The first key after every key that starts with the prefix. */
  readonly prefixEnd: Buffer;

  constructor(prefix: string) {
    if (!/^\/[\x21-\x7e]*\/$/.test(prefix) || prefix === "/") {
      throw new Error(`tenant prefix ${JSON.stringify(prefix)} must be printable ASCII, start and end with "/", and not be "/"`);
    }
    this.prefix = Buffer.from(prefix, "latin1");
    this.prefixEnd = Buffer.from(this.prefix);
    // The prefix ends with "/" (0x2f): adding one to its last byte never carries.
    this.prefixEnd[this.prefixEnd.length - 1]! += 1;
  }

  /** The core key of a tenant key. */
  key(tenantKey: Uint8Array): Buffer {
    const key = Buffer.concat([this.prefix, tenantKey]);
    if (!this.isKeyInside(key)) throw new Error("internal: a key outside the tenant's prefix was about to be sent");
    return key;
  }

  /** The core range of a tenant's key and range_end (undefined: the field was absent). */
  range(tenantKey: Uint8Array, tenantRangeEnd: Uint8Array | undefined, empty: EmptyRangeEnd): CoreRange {
    const key = this.key(tenantKey);
    if (tenantRangeEnd === undefined) return { key };
    if (tenantRangeEnd.length === 0) return empty === "single-key" ? { key } : { key, rangeEnd: this.prefixEnd };
    if (tenantRangeEnd.length === 1 && tenantRangeEnd[0] === 0) return { key, rangeEnd: this.prefixEnd };
    const rangeEnd = Buffer.concat([this.prefix, tenantRangeEnd]);
    if (!this.isRangeEndInside(rangeEnd)) throw new Error("internal: a range end outside the tenant's prefix was about to be sent");
    return { key, rangeEnd };
  }

  /**
   * The core range of a top-level Range or a Watch: range(), except that exactly the host's
   * compaction key, alone (no range end, or an empty one where that means one key), is the host's.
   */
  readRange(tenantKey: Uint8Array, tenantRangeEnd: Uint8Array | undefined, empty: EmptyRangeEnd): CoreRange {
    const alone = tenantRangeEnd === undefined || (tenantRangeEnd.length === 0 && empty === "single-key");
    if (alone && HOST_COMPACTION_KEY.equals(tenantKey)) return { key: Buffer.from(HOST_COMPACTION_KEY) };
    return this.range(tenantKey, tenantRangeEnd, empty);
  }

  /** Whether a core key belongs to the tenant: it starts with the prefix. */
  isKeyInside(coreKey: Uint8Array): boolean {
    return coreKey.length >= this.prefix.length && this.prefix.compare(coreKey, 0, this.prefix.length) === 0;
  }

  /**
   * Whether a range end keeps a range inside the prefix: it starts with the prefix or is the
   * prefix's end. Every key that starts with the prefix sorts below the prefix's end, so such a
   * range never reaches another key, whatever its start. An empty range end is outside: etcd
   * reads it as "to the end of the keyspace".
   */
  isRangeEndInside(coreRangeEnd: Uint8Array): boolean {
    return this.isKeyInside(coreRangeEnd) || this.prefixEnd.equals(coreRangeEnd);
  }

  /** The tenant's view of a core key: without the prefix. A key outside it throws. */
  strip(coreKey: Buffer): Buffer {
    return coreKey.subarray(this.strippedStart(coreKey, 0, coreKey.length));
  }

  /**
   * Where the tenant's key starts in a core key held at `buf[start, end)`; a key outside the prefix
   * throws, but for the host's compaction key, which a tenant sees under its own name.
   */
  strippedStart(buf: Buffer, start: number, end: number): number {
    if (end - start === HOST_COMPACTION_KEY.length && HOST_COMPACTION_KEY.compare(buf, start, end) === 0) return start;
    const length = this.prefix.length;
    if (end - start < length || this.prefix.compare(buf, start, start + length) !== 0) throw new OutsidePrefix("core etcd returned a key outside the tenant's prefix");
    return start + length;
  }
}

// Where keys and range ends sit in the requests the gateway sends (etcd's rpc.proto): a field
// number maps to what it holds, or to the message it nests.
// "readKey": a key inside the prefix, or exactly the host's compaction key (with no range end).
type Role = "key" | "readKey" | "rangeEnd" | KeyFields;
interface KeyFields {
  readonly [field: number]: Role;
}
const RANGE_KEYS: KeyFields = { 1: "key", 2: "rangeEnd" };
const PUT_KEYS: KeyFields = { 1: "key" };
const COMPARE_KEYS: KeyFields = { 3: "key", 64: "rangeEnd" };
const REQUEST_OP_KEYS: Record<number, Role> = { 1: RANGE_KEYS, 2: PUT_KEYS, 3: RANGE_KEYS };
const TXN_KEYS: KeyFields = { 1: COMPARE_KEYS, 2: REQUEST_OP_KEYS, 3: REQUEST_OP_KEYS };
REQUEST_OP_KEYS[4] = TXN_KEYS;
const READ_KEYS: KeyFields = { 1: "readKey", 2: "rangeEnd" };
const WATCH_KEYS: KeyFields = { 1: READ_KEYS };

/** The outgoing requests that carry keys, by message. */
export const KEYED_REQUESTS = { RangeRequest: READ_KEYS, PutRequest: PUT_KEYS, DeleteRangeRequest: RANGE_KEYS, TxnRequest: TXN_KEYS, WatchRequest: WATCH_KEYS } as const;

/**
 * The last check before bytes leave for core etcd, independent of how they were built: every key
 * and range end in the encoded request, at any depth, lies inside the prefix, and every message
 * that names a key has exactly one (etcd reads a missing Watch key as "\0", the first key of the
 * whole keyspace). Throws on a violation: the request is not sent.
 */
export function assertConfined(keyspace: TenantKeyspace, fields: KeyFields, message: Buffer, start = 0, end = message.length): void {
  const reader = new Reader(message, start, end);
  let keys = 0;
  let hostKey = false;
  let rangeEnds = 0;
  while (reader.next()) {
    const role = fields[reader.field];
    if (role === undefined) {
      reader.skip();
      continue;
    }
    if (reader.wireType !== LENGTH_DELIMITED) throw new Error(`internal: field ${reader.field} of an outgoing request is not length-delimited`);
    const [valueStart, valueEnd] = reader.span();
    const value = message.subarray(valueStart, valueEnd);
    if (role === "key" || role === "readKey") {
      keys++;
      hostKey = role === "readKey" && HOST_COMPACTION_KEY.equals(value);
      if (!hostKey && !keyspace.isKeyInside(value)) throw new Error("internal: an outgoing request names a key outside the tenant's prefix");
    } else if (role === "rangeEnd") {
      rangeEnds++;
      if (!keyspace.isRangeEndInside(value)) throw new Error("internal: an outgoing request names a range end outside the tenant's prefix");
    } else {
      assertConfined(keyspace, role, message, valueStart, valueEnd);
    }
  }
  const namesKeys = Object.values(fields).some((role) => role === "key" || role === "readKey");
  if (namesKeys && keys !== 1) throw new Error(`internal: an outgoing request names ${keys} keys where etcd reads one`);
  if (hostKey && rangeEnds > 0) throw new Error("internal: an outgoing request reads a range from the host's compaction key");
}
