// KV: Range, Put, DeleteRange and Txn, translated field by field on the wire. Keys and range ends
// go through the tenant's keyspace (keys.ts), lease IDs through its lease scope (tenant/leases.ts); the
// other fields etcd defines are copied as they came; a field etcd does not define is dropped, as
// etcd itself ignores it. Empty keys and empty Txn operations are refused here with etcd's own
// errors: once prefixed they would no longer be empty, and etcd would accept them.
//
// A present-but-empty range_end means what it means to etcd, which depends on the path the
// request takes there (measured on 3.5.16, test/e2e/etcd-client.test.ts): served without raft (a
// Range, a read-only Txn) it reads as "every key from here on"; applied through raft (a
// DeleteRange, a Txn that writes) it reaches the store absent, "this key only", because etcd
// re-encodes the request and an empty field is not written.
import { GrpcError, Status, frame, frameWriter } from "../wire/grpc.ts";
import { KEYED_REQUESTS, type EmptyRangeEnd } from "../keys.ts";
import { checkKeySize, checkTxnDepth } from "../tenant/limits.ts";
import { copyKnownFields, writeStrippedKeyValue, type KnownFields } from "./messages.ts";
import type { CallContext, UnaryMethod } from "../calls/method.ts";
import type { Writes } from "../tenant/quota.ts";
import { answerBytes, type StoredData } from "../tenant/reads.ts";
import { LENGTH_DELIMITED, Reader, VARINT, type Writer } from "../wire/protobuf.ts";

const EMPTY_KEY = () => new GrpcError(Status.INVALID_ARGUMENT, "etcdserver: key is not provided");
const EMPTY_OPERATION = () => new GrpcError(Status.INVALID_ARGUMENT, "etcdserver: key not found");

/** A request message with a key (and maybe a range end) among fields that are copied as they are. */
interface KeyedMessage {
  name: string;
  keyField: number;
  rangeEndField?: number;
  /** A lease ID to confine (PutRequest.lease). */
  leaseField?: number;
  /** A put: its value and ignore_value fields, for the quota. */
  put?: { valueField: number; ignoreValueField: number };
  copied: KnownFields;
}

const V = VARINT;
const L = LENGTH_DELIMITED;
const RANGE = {
  name: "RangeRequest",
  keyField: 1,
  rangeEndField: 2,
  // limit, revision, sort_order, sort_target, serializable, keys_only, count_only, min/max mod and create revisions
  copied: { 3: V, 4: V, 5: V, 6: V, 7: V, 8: V, 9: V, 10: V, 11: V, 12: V, 13: V },
} as const satisfies KeyedMessage;
// value, prev_kv, ignore_lease (ignore_value, 5, is copied where it is read)
const PUT = { name: "PutRequest", keyField: 1, leaseField: 3, put: { valueField: 2, ignoreValueField: 5 }, copied: { 2: L, 4: V, 6: V } } as const satisfies KeyedMessage;
const DELETE_RANGE = { name: "DeleteRangeRequest", keyField: 1, rangeEndField: 2, copied: { 3: V } } as const satisfies KeyedMessage;
// result, target, version, create_revision, mod_revision, value, lease (a value compared, not a lease used)
const COMPARE: KeyedMessage = { name: "Compare", keyField: 3, rangeEndField: 64, copied: { 1: V, 2: V, 4: V, 5: V, 6: V, 7: L, 8: V } };

/** Writes a keyed message's translation (its bytes `[start, end)` of `buf`) into `writer`; a put is noted in `writes`. */
function writeKeyed(spec: KeyedMessage, buf: Buffer, start: number, end: number, ctx: CallContext, writer: Writer, writes: Writes, empty: EmptyRangeEnd, topLevelRead = false): void {
  const reader = new Reader(buf, start, end);
  let key: Buffer | undefined;
  let rangeEnd: Buffer | undefined;
  let lease = 0n;
  let valueBytes = 0;
  let keepsValue = false;
  const copied: number[] = [];
  // Repeated singular fields: the last one counts, as in etcd's decoder.
  while (reader.next()) {
    if (reader.field === spec.keyField) {
      reader.expect(LENGTH_DELIMITED, spec.name);
      key = reader.bytes();
    } else if (reader.field === spec.rangeEndField) {
      reader.expect(LENGTH_DELIMITED, spec.name);
      rangeEnd = reader.bytes();
    } else if (reader.field === spec.leaseField) {
      reader.expect(VARINT, spec.name);
      lease = reader.bigint();
    } else if (reader.field === spec.put?.ignoreValueField) {
      reader.expect(VARINT, spec.name);
      const fieldStart = reader.fieldStart;
      keepsValue = reader.bigint() !== 0n;
      copied.push(fieldStart, reader.pos);
    } else if (spec.copied[reader.field] !== undefined) {
      const [fieldStart, fieldEnd] = reader.rawField(spec.copied[reader.field]!, spec.name);
      copied.push(fieldStart, fieldEnd);
      if (reader.field === spec.put?.valueField) valueBytes = fieldEnd - fieldStart;
    } else {
      reader.skip();
    }
  }
  if (key === undefined || key.length === 0) throw EMPTY_KEY();
  checkKeySize(ctx.limits, key, "a key");
  if (rangeEnd !== undefined) checkKeySize(ctx.limits, rangeEnd, "a range end");
  const core = topLevelRead ? ctx.keyspace.readRange(key, rangeEnd, empty) : ctx.keyspace.range(key, rangeEnd, empty);
  writer.bytesField(spec.keyField, core.key);
  if (core.rangeEnd) writer.bytesField(spec.rangeEndField!, core.rangeEnd);
  if (spec.leaseField !== undefined) {
    const confined = ctx.leases.confineAttached(lease);
    if (confined !== 0n) writer.bigintField(spec.leaseField, confined);
  }
  for (let i = 0; i < copied.length; i += 2) writer.raw(buf, copied[i]!, copied[i + 1]!);
  // The value field's length counts its tag and length too: a few bytes more than the value, never less.
  if (spec.put) writes.puts.push({ key: core.key, bytes: core.key.length + valueBytes, keepsValue });
}

/** A RequestOp: one of range 1, put 2, delete_range 3, txn 4 (the last one present counts). */
function writeRequestOp(buf: Buffer, start: number, end: number, ctx: CallContext, writer: Writer, depth: number, writes: Writes, empty: EmptyRangeEnd): void {
  const chosen = operationOf(buf, start, end);
  if (!chosen) throw EMPTY_OPERATION();
  const [field, opStart, opEnd] = chosen;
  const mark = writer.begin(field, opEnd - opStart + ctx.keyspace.prefix.length * 2);
  if (field === 4) writeTxn(buf, opStart, opEnd, ctx, writer, depth + 1, writes, empty);
  else writeKeyed(field === 1 ? RANGE : field === 2 ? PUT : DELETE_RANGE, buf, opStart, opEnd, ctx, writer, writes, empty);
  writer.finish(mark);
}

/** The operation a RequestOp holds: range 1, put 2, delete_range 3, txn 4 (the last one present counts). */
function operationOf(buf: Buffer, start: number, end: number): [field: number, start: number, end: number] | undefined {
  const reader = new Reader(buf, start, end);
  let chosen: [field: number, start: number, end: number] | undefined;
  while (reader.next()) {
    if (reader.field >= 1 && reader.field <= 4) {
      reader.expect(LENGTH_DELIMITED, "RequestOp");
      chosen = [reader.field, ...reader.span()];
    } else {
      reader.skip();
    }
  }
  return chosen;
}

/** etcd's isTxnReadonly: every operation of both branches is a Range (a nested Txn is not). */
function isReadOnlyTxn(buf: Buffer, start: number, end: number): boolean {
  const reader = new Reader(buf, start, end);
  while (reader.next()) {
    if (reader.field !== 2 && reader.field !== 3) {
      reader.skip();
      continue;
    }
    reader.expect(LENGTH_DELIMITED, "TxnRequest");
    if (operationOf(buf, ...reader.span())?.[0] !== 1) return false;
  }
  return true;
}

/** A TxnRequest: compare 1, success 2, failure 3, each repeated, in order. */
function writeTxn(buf: Buffer, start: number, end: number, ctx: CallContext, writer: Writer, depth: number, writes: Writes, empty: EmptyRangeEnd): void {
  checkTxnDepth(ctx.limits, depth);
  const branches = { success: noWrites(), failure: noWrites() };
  writes.txns.push(branches);
  const reader = new Reader(buf, start, end);
  while (reader.next()) {
    if (reader.field < 1 || reader.field > 3) {
      reader.skip();
      continue;
    }
    reader.expect(LENGTH_DELIMITED, "TxnRequest");
    const [partStart, partEnd] = reader.span();
    const mark = writer.begin(reader.field, partEnd - partStart + ctx.keyspace.prefix.length * 2);
    if (reader.field === 1) writeKeyed(COMPARE, buf, partStart, partEnd, ctx, writer, writes, empty);
    else writeRequestOp(buf, partStart, partEnd, ctx, writer, depth, reader.field === 2 ? branches.success : branches.failure, empty);
    writer.finish(mark);
  }
}

const noWrites = (): Writes => ({ puts: [], txns: [] });

function translate(message: Buffer, ctx: CallContext, write: (writer: Writer, writes: Writes) => void): { framed: Buffer; state: undefined; writes: Writes } {
  const writer = frameWriter(message.length + ctx.keyspace.prefix.length * 4 + 32);
  const writes = noWrites();
  write(writer, writes);
  return { framed: frame(writer), state: undefined, writes };
}

// Answers: header and counters as they came, every KeyValue with its key stripped.
type AnswerFields = { copied: KnownFields; keyValues: readonly number[]; nested?: Readonly<Record<number, AnswerFields>> };
const RANGE_ANSWER: AnswerFields = { copied: { 1: L, 3: V, 4: V }, keyValues: [2] }; // header, kvs, more, count
const PUT_ANSWER: AnswerFields = { copied: { 1: L }, keyValues: [2] }; // header, prev_kv
const DELETE_RANGE_ANSWER: AnswerFields = { copied: { 1: L, 2: V }, keyValues: [3] }; // header, deleted, prev_kvs
const RESPONSE_OP: AnswerFields = { copied: {}, keyValues: [], nested: { 1: RANGE_ANSWER, 2: PUT_ANSWER, 3: DELETE_RANGE_ANSWER } };
const TXN_ANSWER: AnswerFields = { copied: { 1: L, 2: V }, keyValues: [], nested: { 3: RESPONSE_OP } }; // header, succeeded, responses
(RESPONSE_OP.nested as Record<number, AnswerFields>)[4] = TXN_ANSWER;

function writeAnswer(fields: AnswerFields, name: string, buf: Buffer, start: number, end: number, ctx: CallContext, writer: Writer): void {
  const reader = new Reader(buf, start, end);
  while (reader.next()) {
    const nested = fields.nested?.[reader.field];
    if (fields.keyValues.includes(reader.field)) {
      writeStrippedKeyValue(reader, reader.field, ctx.keyspace, writer, name);
    } else if (nested) {
      reader.expect(LENGTH_DELIMITED, name);
      const field = reader.field;
      const [innerStart, innerEnd] = reader.span();
      const mark = writer.begin(field, innerEnd - innerStart);
      writeAnswer(nested, name, buf, innerStart, innerEnd, ctx, writer);
      writer.finish(mark);
    } else {
      copyKnownFields(reader, fields.copied, name, writer);
    }
  }
}

function answer(fields: AnswerFields, name: string) {
  return (message: Buffer, ctx: CallContext): Buffer => {
    const writer = frameWriter(message.length);
    writeAnswer(fields, name, message, 0, message.length, ctx, writer);
    return frame(writer);
  };
}

/**
 * Range, Put and DeleteRange: one keyed request, one answer. A read may be retried on another
 * endpoint, and reads an empty range_end as "to the end"; a write does neither (measured, keys.ts).
 */
function keyedMethod(
  request: KeyedMessage & { name: "RangeRequest" | "PutRequest" | "DeleteRangeRequest" },
  answerFields: AnswerFields,
  answerName: string,
  read: boolean,
  built?: (framed: Buffer, data: StoredData) => number,
): UnaryMethod<undefined> {
  const emptyRangeEnd: EmptyRangeEnd = read ? "to-the-end" : "single-key";
  return {
    kind: "unary",
    keyed: KEYED_REQUESTS[request.name],
    idempotent: read,
    request: (message, ctx) => translate(message, ctx, (writer, writes) => writeKeyed(request, message, 0, message.length, ctx, writer, writes, emptyRangeEnd, request === RANGE)),
    response: answer(answerFields, answerName),
    ...(built ? { answerBytes: (framed: Buffer, ctx: CallContext) => built(framed, ctx.storage) } : {}),
  };
}

export const range = keyedMethod(RANGE, RANGE_ANSWER, "RangeResponse", true, answerBytes.range);
export const put = keyedMethod(PUT, PUT_ANSWER, "PutResponse", false);
export const deleteRange = keyedMethod(DELETE_RANGE, DELETE_RANGE_ANSWER, "DeleteRangeResponse", false, answerBytes.deleteRange);

export const txn: UnaryMethod<undefined> = {
  kind: "unary",
  keyed: KEYED_REQUESTS.TxnRequest,
  idempotent: false,
  request: (message, ctx) =>
    translate(message, ctx, (writer, writes) => writeTxn(message, 0, message.length, ctx, writer, 1, writes, isReadOnlyTxn(message, 0, message.length) ? "to-the-end" : "single-key")),
  response: answer(TXN_ANSWER, "TxnResponse"),
  answerBytes: (framed, ctx) => answerBytes.txn(framed, ctx.storage),
};
