// The bound on watches a gateway holds open in core etcd (gateway/watch.ts, limits.maxOpenWatches):
// counted from each create sent to core etcd until etcd cancels the watch or its stream ends, on
// every stream of the gateway; a create past the bound is not sent, and is refused as etcd refuses
// one, in its turn after the creates before it. e2e/quota.test.ts runs it against real etcd.
import assert from "node:assert/strict";
import { test } from "node:test";
import { frame, frameWriter } from "../../gateway/grpc.ts";
import { TenantKeyspace } from "../../gateway/keys.ts";
import { LeaseScope } from "../../gateway/lease.ts";
import { DEFAULT_LIMITS } from "../../gateway/limits.ts";
import type { CallContext } from "../../gateway/proxy.ts";
import { watch } from "../../gateway/watch.ts";
import { Reader } from "../../gateway/wire.ts";

const PREFIX = "/etcdstorage/w/";

function context(maxOpenWatches: number): CallContext {
  return {
    keyspace: new TenantKeyspace(PREFIX),
    leases: new LeaseScope(PREFIX),
    limits: { ...DEFAULT_LIMITS, maxOpenWatches },
    openWatches: { count: 0 },
    storage: { usedBytes: () => 0, quotaBytes: () => 0 },
  };
}

/** WatchRequest{create_request{key}}, as the gateway reads it (unframed). */
function create(key: string): Buffer {
  const writer = frameWriter(64);
  const mark = writer.begin(1, key.length + 2);
  writer.bytesField(1, Buffer.from(key));
  writer.finish(mark);
  return frame(writer).subarray(5);
}

/** A WatchResponse from core etcd (unframed). */
function answer(id: bigint, flags: { created?: boolean; canceled?: boolean }): Buffer {
  const writer = frameWriter(64);
  const header = writer.begin(1, 4);
  writer.varintField(3, 7);
  writer.finish(header);
  writer.bigintField(2, id);
  if (flags.created) writer.varintField(3, 1);
  if (flags.canceled) writer.varintField(4, 1);
  return frame(writer).subarray(5);
}

/** What the tenant was sent: each answer's watch ID, created, canceled and cancel reason. */
function read(framed: Buffer): { id: bigint; created: boolean; canceled: boolean; reason: string; header: boolean } {
  const reader = new Reader(framed.subarray(5));
  const seen = { id: 0n, created: false, canceled: false, reason: "", header: false };
  while (reader.next()) {
    if (reader.field === 1) {
      seen.header = true;
      reader.skip();
    } else if (reader.field === 2) seen.id = reader.bigint();
    else if (reader.field === 3) seen.created = reader.uint() === 1;
    else if (reader.field === 4) seen.canceled = reader.uint() === 1;
    else if (reader.field === 6) seen.reason = reader.bytes().toString();
    else reader.skip();
  }
  return seen;
}

function stream(ctx: CallContext) {
  const sent: ReturnType<typeof read>[] = [];
  const translator = watch.open(ctx, (framed) => sent.push(read(framed)));
  return { translator, sent };
}

test("past the bound a create is not sent, and its refusal follows the answers to the creates before it", () => {
  const ctx = context(2);
  const one = stream(ctx);
  assert.ok(one.translator.request(create("/a")), "the first create is sent");
  assert.ok(one.translator.request(create("/b")), "the second too");
  assert.equal(one.translator.request(create("/c")), undefined, "the third is not sent");
  assert.equal(one.sent.length, 0, "nor answered before the creates ahead of it");
  one.translator.response(answer(0n, { created: true }));
  assert.equal(one.sent.length, 1);
  one.translator.response(answer(1n, { created: true }));
  assert.deepEqual(one.sent.map((a) => [a.id, a.created, a.canceled]), [[0n, true, false], [1n, true, false], [-1n, true, true]]);
  const refusal = one.sent[2]!;
  assert.match(refusal.reason, /^etcdstorage gateway: too many open watches: this gateway replica holds 2, its limit/);
  assert.ok(refusal.header, "with a header, which etcd's clients read in every answer");
  assert.equal(ctx.openWatches.count, 2);

  // The bound is the gateway's, over all its streams: another stream is refused at once.
  const two = stream(ctx);
  assert.equal(two.translator.request(create("/d")), undefined);
  assert.deepEqual(two.sent.map((a) => [a.id, a.created, a.canceled]), [[-1n, true, true]]);

  // A watch core etcd cancels (the tenant's cancel, a compaction) makes room.
  one.translator.response(answer(0n, { canceled: true }));
  assert.equal(ctx.openWatches.count, 1);
  assert.ok(two.translator.request(create("/e")), "room again");
  assert.equal(ctx.openWatches.count, 2, "a create counts from when it is sent");
  two.translator.response(answer(5n, { created: true, canceled: true })); // etcd refused it itself
  assert.equal(ctx.openWatches.count, 1);

  // A stream that ends gives back its open watches and its unanswered creates.
  assert.ok(one.translator.request(create("/f")));
  assert.equal(ctx.openWatches.count, 2);
  one.translator.close!();
  assert.equal(ctx.openWatches.count, 0);
});
