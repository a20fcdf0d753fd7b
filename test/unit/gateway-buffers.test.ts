// The gateway's buffer pool (gateway/wire/buffers.ts): a buffer given back is handed out again, never
// to two takers at once, and only buffers the pool made are kept.
import assert from "node:assert/strict";
import { test } from "node:test";
import { giveBack, takeBuffer } from "../../gateway/wire/buffers.ts";

const KiB = 1024;

test("a large buffer given back (through any view of it) is the next one of its size handed out", () => {
  const first = takeBuffer(100 * KiB);
  assert.equal(first.length, 128 * KiB, "sizes are rounded up to a power of two");
  giveBack(first.subarray(5, 50 * KiB));
  const again = takeBuffer(70 * KiB);
  assert.equal(again.buffer, first.buffer);
  assert.notEqual(takeBuffer(70 * KiB).buffer, first.buffer, "handed out once, not twice");
});

test("giving the same buffer back twice still hands it out once", () => {
  const buffer = takeBuffer(40 * KiB);
  giveBack(buffer);
  giveBack(buffer.subarray(1));
  const [a, b] = [takeBuffer(40 * KiB), takeBuffer(40 * KiB)];
  assert.equal(a.buffer, buffer.buffer);
  assert.notEqual(b.buffer, buffer.buffer);
});

test("buffers the pool did not make, small ones and huge ones are never kept", () => {
  const foreign = Buffer.allocUnsafeSlow(256 * KiB);
  giveBack(foreign);
  assert.notEqual(takeBuffer(256 * KiB).buffer, foreign.buffer);
  const small = takeBuffer(1000);
  assert.equal(small.length, 1000, "below the pool's sizes: an ordinary allocation");
  giveBack(small);
  const next = takeBuffer(1000);
  assert.ok(next.buffer !== small.buffer || next.byteOffset !== small.byteOffset, "small buffers share Node's slab, never the same bytes");
  const huge = takeBuffer(5 * 1024 * KiB);
  assert.equal(huge.length, 5 * 1024 * KiB);
  giveBack(huge);
  assert.notEqual(takeBuffer(5 * 1024 * KiB).buffer, huge.buffer);
});

test("at most 16 MiB wait in the pool", () => {
  const taken = Array.from({ length: 24 }, () => takeBuffer(1024 * KiB));
  for (const buffer of taken) giveBack(buffer);
  const reused = new Set(taken.map((buffer) => buffer.buffer));
  const again = Array.from({ length: 24 }, () => takeBuffer(1024 * KiB));
  assert.equal(again.filter((buffer) => reused.has(buffer.buffer)).length, 16);
});
