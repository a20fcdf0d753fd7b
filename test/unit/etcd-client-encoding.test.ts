// The test client's wire encoding, read back with a protobuf wire reader written here (not with
// protobufjs, which encodes): field presence, 63-bit integers and bytes are what a test wrote.
import { test } from "node:test";
import assert from "node:assert/strict";
import { decodeResponse, encodeMessage, encodeRequest } from "../support/etcd-client.ts";

interface WireField {
  number: number;
  /** varint value, or the bytes of a length-delimited field. */
  value: bigint | Buffer;
}

function varint(bytes: Buffer, at: number): [bigint, number] {
  let value = 0n;
  for (let shift = 0n; ; shift += 7n) {
    const byte = bytes[at++];
    if (byte === undefined) throw new Error("truncated varint");
    value |= BigInt(byte & 0x7f) << shift;
    if ((byte & 0x80) === 0) return [value, at];
  }
}

function varintBytes(value: bigint): Buffer {
  const out: number[] = [];
  for (let v = value; ; v >>= 7n) {
    if (v < 0x80n) return Buffer.from([...out, Number(v)]);
    out.push(Number(v & 0x7fn) | 0x80);
  }
}

/** The top-level fields of a message; only the wire types etcd's requests use (varint, LEN). */
function wireFields(bytes: Buffer): WireField[] {
  const fields: WireField[] = [];
  for (let at = 0; at < bytes.length; ) {
    const [tag, afterTag] = varint(bytes, at);
    const [number, wireType] = [Number(tag >> 3n), Number(tag & 7n)];
    if (wireType === 0) {
      const [value, next] = varint(bytes, afterTag);
      fields.push({ number, value });
      at = next;
    } else if (wireType === 2) {
      const [length, start] = varint(bytes, afterTag);
      const end = start + Number(length);
      fields.push({ number, value: bytes.subarray(start, end) });
      at = end;
    } else {
      throw new Error(`wire type ${wireType} of field ${number} is not expected here`);
    }
  }
  return fields;
}

/** The one length-delimited field `number` of `bytes`, following a path of nested messages. */
function nested(bytes: Buffer, ...path: number[]): Buffer {
  return path.reduce((message, number) => {
    const found = wireFields(message).filter((f) => f.number === number);
    assert.equal(found.length, 1, `exactly one field ${number}`);
    return found[0]!.value as Buffer;
  }, bytes);
}

// Each case: how to encode a message whose range_end is `rangeEnd`, where in the encoding that
// message sits (nested field numbers), and range_end's field number there.
const RANGE_END_CASES = [
  { what: "RangeRequest", encode: (rangeEnd?: Buffer) => encodeRequest("/etcdserverpb.KV/Range", { key: "a", range_end: rangeEnd }), path: [], field: 2 },
  { what: "DeleteRangeRequest", encode: (rangeEnd?: Buffer) => encodeRequest("/etcdserverpb.KV/DeleteRange", { key: "a", range_end: rangeEnd }), path: [], field: 2 },
  { what: "WatchCreateRequest (in WatchRequest)", encode: (rangeEnd?: Buffer) => encodeRequest("/etcdserverpb.Watch/Watch", { create_request: { key: "a", range_end: rangeEnd } }), path: [1], field: 2 },
  { what: "Compare (in TxnRequest)", encode: (rangeEnd?: Buffer) => encodeRequest("/etcdserverpb.KV/Txn", { compare: [{ key: "a", target: "MOD", mod_revision: 0, range_end: rangeEnd }] }), path: [1], field: 64 },
  { what: "RangeRequest (in a Txn's RequestOp)", encode: (rangeEnd?: Buffer) => encodeRequest("/etcdserverpb.KV/Txn", { success: [{ request_range: { key: "a", range_end: rangeEnd } }] }), path: [2, 1], field: 2 },
];

for (const { what, encode, path, field } of RANGE_END_CASES) {
  test(`${what}: a present but empty range_end is field ${field} of length 0; an absent one is no field ${field}`, () => {
    const present = wireFields(nested(encode(Buffer.alloc(0)), ...path)).filter((f) => f.number === field);
    assert.deepEqual(present, [{ number: field, value: Buffer.alloc(0) }]);
    const absent = wireFields(nested(encode(undefined), ...path)).filter((f) => f.number === field);
    assert.deepEqual(absent, []);
  });
}

test("a present zero int64 is encoded too (Compare's target_union says which revision is compared)", () => {
  const compare = wireFields(encodeMessage("etcdserverpb.Compare", { key: "a", target: "MOD", mod_revision: 0 }));
  assert.deepEqual(compare.find((f) => f.number === 6), { number: 6, value: 0n });
});

test("63-bit lease IDs keep every bit, given as a string or a bigint, and decode as the same string", () => {
  const max = 2n ** 63n - 1n;
  for (const id of [max.toString(), max, 7587878329877390597n]) {
    const bytes = encodeRequest("/etcdserverpb.Lease/LeaseRevoke", { ID: id });
    assert.deepEqual(wireFields(bytes), [{ number: 1, value: BigInt(id) }]);
  }
  const response = Buffer.concat([Buffer.from([0x10]), varintBytes(max)]);
  assert.equal(decodeResponse<{ ID: string }>("/etcdserverpb.Lease/LeaseGrant", response).ID, max.toString());
});

test("a string for a bytes field is its UTF-8, not base64 (protobufjs alone would decode base64)", () => {
  const bytes = encodeRequest("/etcdserverpb.KV/Put", { key: "aGk=", value: "é" });
  assert.deepEqual(wireFields(bytes), [
    { number: 1, value: Buffer.from("aGk=") },
    { number: 2, value: Buffer.from([0xc3, 0xa9]) },
  ]);
});

test("a field name the message does not have is refused, not dropped", () => {
  assert.throws(() => encodeRequest("/etcdserverpb.KV/Range", { key: "a", rangeEnd: "" }), /RangeRequest has no field rangeEnd/);
  assert.throws(() => encodeRequest("/etcdserverpb.KV/Txn", { compare: [{ key: "a", modRevision: 1 }] }), /\.compare\[0\]\.modRevision: etcdserverpb\.Compare has no field modRevision/);
});

test("an unknown method path is refused by the typed codec", () => {
  assert.throws(() => encodeRequest("/etcdserverpb.KV/RangeStream", {}), /not a method of etcd's protos/);
});
