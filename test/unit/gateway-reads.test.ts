// Reads that make core etcd build large answers (gateway/tenant/reads.ts): what each outgoing request may
// build, estimated from the tenant's usage, and the budget that holds the bytes in flight.
// e2e/reads.test.ts measures core etcd's memory under such reads.
import assert from "node:assert/strict";
import { test } from "node:test";
import { answerBytes, ReadBudget } from "../../gateway/tenant/reads.ts";
import type { Writer } from "../../gateway/wire/protobuf.ts";
import { framedMessage as message, nested } from "../support/protobuf.ts";

const data = { usedBytes: () => 10_000_000, largestObjectBytes: () => 2_000 };

const KEY = Buffer.from("/etcdstorage/r/a");
const END = Buffer.from("/etcdstorage/r0");

test("what a read may make core etcd build: nothing for one key or a count, its limit times the largest object, at most all the tenant stores", () => {
  const range = (fields: (writer: Writer) => void) => answerBytes.range(message(fields), data);
  assert.equal(range((w) => w.bytesField(1, KEY)), 0, "one key");
  assert.equal(range((w) => (w.bytesField(1, KEY), w.bytesField(2, END), w.varintField(9, 1))), 0, "count_only");
  assert.equal(range((w) => (w.bytesField(1, KEY), w.bytesField(2, END), w.varintField(3, 500))), 500 * 2_000, "a page of 500");
  assert.equal(range((w) => (w.bytesField(1, KEY), w.bytesField(2, END), w.varintField(3, 100_000))), 10_000_000, "a page larger than all the tenant stores");
  assert.equal(range((w) => (w.bytesField(1, KEY), w.bytesField(2, END))), 10_000_000, "no limit");

  const deleteRange = (fields: (writer: Writer) => void) => answerBytes.deleteRange(message(fields), data);
  assert.equal(deleteRange((w) => (w.bytesField(1, KEY), w.bytesField(2, END))), 0, "a delete answers a count");
  assert.equal(deleteRange((w) => (w.bytesField(1, KEY), w.bytesField(2, END), w.varintField(3, 1))), 10_000_000, "with prev_kv, the objects it deleted");

  // A Txn: its reads in both branches and at any depth; puts and one-key reads build little.
  const txn = answerBytes.txn(
    message((w) => {
      nested(w, 2, (op) => nested(op, 1, (r) => (r.bytesField(1, KEY), r.bytesField(2, END), r.varintField(3, 10))));
      nested(w, 2, (op) => nested(op, 2, (p) => (p.bytesField(1, KEY), p.bytesField(2, Buffer.from("v")))));
      nested(w, 3, (op) => nested(op, 1, (r) => r.bytesField(1, KEY)));
      nested(w, 3, (op) => nested(op, 4, (inner) => nested(inner, 2, (op2) => nested(op2, 1, (r) => (r.bytesField(1, KEY), r.bytesField(2, END), r.varintField(3, 5))))));
    }),
    data,
  );
  assert.equal(txn, 10 * 2_000 + 5 * 2_000);
});

test("the read budget: reads enter in order while their bytes fit; one larger than the budget runs alone", async () => {
  const budget = new ReadBudget(100);
  const entered: string[] = [];
  const leaves = new Map<string, () => void>();
  const read = (name: string, bytes: number) =>
    void budget.enter(bytes).then((leave) => {
      entered.push(name);
      leaves.set(name, leave);
    });
  const settled = () => new Promise((resolve) => setImmediate(resolve));
  read("a", 60);
  read("b", 60);
  read("c", 10);
  await settled();
  assert.deepEqual(entered, ["a"], "b does not fit, and c waits behind it rather than pass it");
  leaves.get("a")!();
  await settled();
  assert.deepEqual(entered, ["a", "b", "c"]);
  read("huge", 500);
  await settled();
  assert.deepEqual(entered, ["a", "b", "c"], "waits for the budget to be free");
  leaves.get("b")!();
  leaves.get("c")!();
  await settled();
  assert.deepEqual(entered, ["a", "b", "c", "huge"], "then runs alone");
  read("d", 1);
  await settled();
  assert.equal(entered.length, 4);
  leaves.get("huge")!();
  await settled();
  assert.deepEqual(entered, ["a", "b", "c", "huge", "d"]);
});
