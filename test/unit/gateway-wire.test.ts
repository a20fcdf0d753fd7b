// The gateway's protobuf wire codec (gateway/wire/protobuf.ts): exact bytes for known encodings, lengths
// patched whatever the size hint, and malformed input refused, never misread.
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { LENGTH_DELIMITED, MalformedMessage, Reader, VARINT, Writer } from "../../gateway/wire/protobuf.ts";

test("varints: protobuf's own examples, and int64 values through bigint (negative ones take ten bytes)", () => {
  const encode = (write: (w: Writer) => void) => {
    const w = new Writer(1);
    write(w);
    return w.bytes().toString("hex");
  };
  assert.equal(encode((w) => w.uint(150)), "9601");
  assert.equal(encode((w) => w.uint(2 ** 53 - 1)), "ffffffffffffff0f");
  assert.equal(encode((w) => w.bigint(-1n)), "ffffffffffffffffff01");
  assert.equal(encode((w) => w.bigint(0x205ebe927d239cddn)), "ddb98ee9a7d2afaf20");
  fc.assert(
    fc.property(fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }), (value) => {
      const w = new Writer(1);
      w.bigint(value);
      assert.equal(new Reader(w.bytes()).bigint(), value);
    }),
    { seed: 7, numRuns: 500 },
  );
});

test("a nested message's length is right whatever room was left for it", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 20_000 }), fc.nat(100_000), (body, hint) => {
      const w = new Writer(8);
      w.varintField(1, 7);
      const mark = w.begin(2, hint);
      w.bytesField(3, body);
      w.finish(mark);
      w.varintField(4, 9);
      const reader = new Reader(w.bytes());
      const seen: number[] = [];
      while (reader.next()) {
        seen.push(reader.field);
        if (reader.field !== 2) {
          reader.skip();
          continue;
        }
        const [start, end] = reader.span();
        const inner = new Reader(w.bytes(), start, end);
        assert.ok(inner.next());
        assert.deepEqual(new Uint8Array(inner.bytes()), body);
      }
      assert.deepEqual(seen, [1, 2, 4]);
    }),
    { seed: 11, numRuns: 300 },
  );
});

test("malformed messages are refused with MalformedMessage", () => {
  const cases: [string, string][] = [
    ["a truncated varint", "08"],
    ["a varint longer than ten bytes", "08ffffffffffffffffffff01"],
    ["a length beyond the message", "0a05abcd"],
    ["a start-group wire type", "0b"],
    ["field number 0", "0001"],
  ];
  for (const [what, hex] of cases) {
    assert.throws(() => {
      const reader = new Reader(Buffer.from(hex, "hex"));
      while (reader.next()) reader.skip();
    }, MalformedMessage, what);
  }
  const reader = new Reader(Buffer.from("0801", "hex"));
  reader.next();
  assert.throws(() => reader.expect(LENGTH_DELIMITED, "PutRequest"), /PutRequest field 1 has wire type 0, expected 2/);
  assert.doesNotThrow(() => reader.expect(VARINT, "PutRequest"));
});
