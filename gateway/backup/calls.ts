// The few calls backup and restore make to core etcd, over the gateway's own connection
// (core/upstream.ts: failover between endpoints, pings). Every key and range is made by the
// tenant's keyspace (keys.ts) and every keyed request passes assertConfined before it is sent:
// nothing outside the prefix is ever read, written or deleted.
import { CoreConnection } from "../core/upstream.ts";
import { assertConfined, KEYED_REQUESTS, TenantKeyspace } from "../keys.ts";
import { STATUS_NAMES, frame, frameWriter } from "../wire/grpc.ts";
import { LENGTH_DELIMITED, Reader, VARINT, type Writer } from "../wire/protobuf.ts";

const FRAME_HEADER = 5;
/** What one answer may hold: a page is bounded by the read budget, this only guards the process. */
const MAX_ANSWER_BYTES = 1024 * 1024 * 1024;
const EVERY_KEY_FROM_HERE = Buffer.from([0]);

/** A call core etcd refused or could not answer: its gRPC status and message. */
export class CoreCallError extends Error {
  readonly code: number;
  readonly coreMessage: string;
  constructor(method: string, code: number, coreMessage: string) {
    super(`core etcd ${method}: ${STATUS_NAMES[code] ?? `status ${code}`}: ${coreMessage || "(no message)"}`);
    this.code = code;
    this.coreMessage = coreMessage;
  }
}

export interface StoredKey {
  /** Without the prefix. */
  key: Buffer;
  value: Buffer;
  /** Core etcd's lease ID, 0n for none. */
  lease: bigint;
}

export interface RangePage {
  revision: number;
  kvs: StoredKey[];
  more: boolean;
}

export interface PutOp {
  key: Buffer;
  value: Buffer;
  lease: bigint;
}

export class TenantCalls {
  readonly keyspace: TenantKeyspace;
  private readonly core: CoreConnection;

  constructor(core: CoreConnection, keyspace: TenantKeyspace) {
    this.core = core;
    this.keyspace = keyspace;
  }

  /**
   * Up to `limit` keys of the prefix from `from` (a tenant key, included) to `to` (excluded;
   * undefined: to the prefix's end), at `revision` (0: the latest, whose revision the answer gives).
   */
  async rangePage(from: Buffer, to: Buffer | undefined, revision: number, limit: number): Promise<RangePage> {
    const range = this.keyspace.range(from, to ?? EVERY_KEY_FROM_HERE, "to-the-end");
    const writer = frameWriter(range.key.length + range.rangeEnd!.length + 32);
    writer.bytesField(1, range.key);
    writer.bytesField(2, range.rangeEnd!);
    writer.varintField(3, limit);
    if (revision > 0) writer.varintField(4, revision);
    const body = await this.send("/etcdserverpb.KV/Range", "RangeRequest", writer);
    const page: RangePage = { revision: answerRevision(body), kvs: [], more: false };
    const reader = new Reader(body);
    while (reader.next()) {
      if (reader.field === 2 && reader.wireType === LENGTH_DELIMITED) page.kvs.push(this.keyValue(reader.bytes()));
      else if (reader.field === 3 && reader.wireType === VARINT) page.more = reader.uint() !== 0;
      else reader.skip();
    }
    return page;
  }

  /** How many keys the prefix holds now (a count: core etcd reads no value). */
  async count(): Promise<number> {
    const range = this.keyspace.range(Buffer.alloc(0), EVERY_KEY_FROM_HERE, "to-the-end");
    const writer = frameWriter(range.key.length + range.rangeEnd!.length + 16);
    writer.bytesField(1, range.key);
    writer.bytesField(2, range.rangeEnd!);
    writer.varintField(9, 1); // count_only
    const body = await this.send("/etcdserverpb.KV/Range", "RangeRequest", writer);
    return readVarint(body, 4);
  }

  /**
   * Creates `puts` (ascending tenant keys) in one Txn, guarded: it applies only if no key exists
   * from the first to the last of them (one Compare over that range: every key in it has
   * create_revision 0, which an empty range satisfies). Resolves whether it applied, and core
   * etcd's revision after it.
   */
  async createAll(puts: readonly PutOp[]): Promise<{ applied: boolean; revision: number }> {
    const first = puts[0]!.key;
    const last = puts[puts.length - 1]!.key;
    const guard = this.keyspace.range(first, Buffer.concat([last, EVERY_KEY_FROM_HERE]), "to-the-end");
    const size = puts.reduce((sum, put) => sum + this.keyspace.prefix.length + put.key.length + put.value.length + 32, 0);
    const writer = frameWriter(size + guard.key.length + guard.rangeEnd!.length + 32);
    const compare = writer.begin(1, guard.key.length + guard.rangeEnd!.length + 16);
    writer.varintField(1, 0); // result EQUAL
    writer.varintField(2, 1); // target CREATE
    writer.bytesField(3, guard.key);
    writer.varintField(5, 0); // create_revision 0: no such key
    writer.bytesField(64, guard.rangeEnd!);
    writer.finish(compare);
    for (const put of puts) {
      const key = this.keyspace.key(put.key);
      const op = writer.begin(2, key.length + put.value.length + 24);
      const request = writer.begin(2, key.length + put.value.length + 20); // RequestOp.request_put
      writer.bytesField(1, key);
      writer.bytesField(2, put.value);
      if (put.lease !== 0n) writer.bigintField(3, put.lease);
      writer.finish(request);
      writer.finish(op);
    }
    const body = await this.send("/etcdserverpb.KV/Txn", "TxnRequest", writer);
    return { applied: readVarint(body, 2) !== 0, revision: answerRevision(body) };
  }

  /** Deletes every key of the prefix, and nothing else; resolves with how many there were. */
  async deletePrefix(): Promise<number> {
    const range = this.keyspace.range(Buffer.alloc(0), EVERY_KEY_FROM_HERE, "to-the-end");
    const writer = frameWriter(range.key.length + range.rangeEnd!.length + 16);
    writer.bytesField(1, range.key);
    writer.bytesField(2, range.rangeEnd!);
    const body = await this.send("/etcdserverpb.KV/DeleteRange", "DeleteRangeRequest", writer);
    return readVarint(body, 2);
  }

  /** Seconds a lease has left; -1 when it no longer exists. */
  async leaseTimeToLive(id: bigint): Promise<number> {
    const writer = frameWriter(16);
    writer.bigintField(1, id);
    const body = await this.send("/etcdserverpb.Lease/LeaseTimeToLive", undefined, writer);
    const reader = new Reader(body);
    let ttl = 0n;
    while (reader.next()) {
      if (reader.field === 3 && reader.wireType === VARINT) ttl = reader.bigint();
      else reader.skip();
    }
    return Number(ttl);
  }

  /** Grants lease `id` for `ttl` seconds; resolves with the TTL granted. */
  async leaseGrant(id: bigint, ttl: number): Promise<number> {
    const writer = frameWriter(24);
    writer.varintField(1, ttl);
    writer.bigintField(2, id);
    const body = await this.send("/etcdserverpb.Lease/LeaseGrant", undefined, writer);
    return readVarint(body, 3);
  }

  async leaseRevoke(id: bigint): Promise<void> {
    const writer = frameWriter(16);
    writer.bigintField(1, id);
    await this.send("/etcdserverpb.Lease/LeaseRevoke", undefined, writer);
  }

  /** Sends one request (checked against the prefix when it carries keys); throws CoreCallError. */
  private async send(path: string, keyed: keyof typeof KEYED_REQUESTS | undefined, writer: Writer): Promise<Buffer> {
    const framed = frame(writer);
    if (keyed !== undefined) assertConfined(this.keyspace, KEYED_REQUESTS[keyed], framed, FRAME_HEADER);
    const answer = await this.core.call(path, {}, framed, MAX_ANSWER_BYTES);
    const method = path.slice(path.lastIndexOf("/") + 1);
    if (answer.code !== 0) throw new CoreCallError(method, answer.code, answer.message);
    return answer.body ?? Buffer.alloc(0);
  }

  private keyValue(message: Buffer): StoredKey {
    const reader = new Reader(message);
    const kv: StoredKey = { key: Buffer.alloc(0), value: Buffer.alloc(0), lease: 0n };
    let key: Buffer | undefined;
    while (reader.next()) {
      if (reader.field === 1 && reader.wireType === LENGTH_DELIMITED) key = reader.bytes();
      else if (reader.field === 5 && reader.wireType === LENGTH_DELIMITED) kv.value = reader.bytes();
      else if (reader.field === 6 && reader.wireType === VARINT) kv.lease = reader.bigint();
      else reader.skip();
    }
    // A key from outside the prefix throws (OutsidePrefix): it is never written to a backup.
    kv.key = this.keyspace.strip(key ?? Buffer.alloc(0));
    return kv;
  }
}

/** The revision (field 3) in an answer's ResponseHeader (field 1). */
function answerRevision(message: Buffer): number {
  const reader = new Reader(message);
  let revision = 0;
  while (reader.next()) {
    if (reader.field === 1 && reader.wireType === LENGTH_DELIMITED) revision = readVarint(reader.bytes(), 3);
    else reader.skip();
  }
  return revision;
}

/** A top-level varint field of a message (0 when absent). */
function readVarint(message: Buffer, field: number): number {
  const reader = new Reader(message);
  let value = 0;
  while (reader.next()) {
    if (reader.field === field && reader.wireType === VARINT) value = reader.uint();
    else reader.skip();
  }
  return value;
}
