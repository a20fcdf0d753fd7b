// What a tenant holds in core etcd's memory through one gateway, bounded (gateway/tenant/limits.ts):
// - watches (gateway/api/watch.ts, maxOpenWatches): counted from each create sent to core etcd until
//   etcd cancels the watch or its stream ends, on every stream of the gateway; a create past the
//   bound is not sent, and is refused as etcd refuses one, in its turn after the creates before it;
// - leases (gateway/tenant/leases.ts, maxLeases): those granted or kept alive through the gateway within
//   their TTL; a grant past the bound is refused.
// e2e/quota.test.ts runs both against real etcd.
import assert from "node:assert/strict";
import { test } from "node:test";
import { frame, frameWriter, GrpcError, Status } from "../../gateway/wire/grpc.ts";
import { TenantKeyspace } from "../../gateway/keys.ts";
import { leaseGrant, leaseKeepAlive, leaseRevoke } from "../../gateway/api/lease.ts";
import { HeldLeases, LeaseScope } from "../../gateway/tenant/leases.ts";
import { DEFAULT_LIMITS } from "../../gateway/tenant/limits.ts";
import type { CallContext } from "../../gateway/calls/method.ts";
import { watch } from "../../gateway/api/watch.ts";
import { Reader } from "../../gateway/wire/protobuf.ts";

const PREFIX = "/etcdstorage/w/";

function context(bounds: { maxOpenWatches?: number; maxLeases?: number }, clock = { now: 0 }): CallContext {
  return {
    keyspace: new TenantKeyspace(PREFIX),
    leases: new LeaseScope(PREFIX),
    limits: { ...DEFAULT_LIMITS, ...bounds },
    openWatches: { count: 0 },
    heldLeases: new HeldLeases(() => clock.now),
    boundReached: () => {},
    storage: { usedBytes: () => 0, largestObjectBytes: () => 0, quotaBytes: () => 0 },
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
  const ctx = context({ maxOpenWatches: 2 });
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

/** A LeaseGrantResponse or LeaseKeepAliveResponse from core etcd (unframed): header, ID, TTL. */
function leaseAnswer(id: bigint, ttl: number): Buffer {
  const writer = frameWriter(32);
  const header = writer.begin(1, 4);
  writer.varintField(3, 9);
  writer.finish(header);
  writer.bigintField(2, id);
  if (ttl > 0) writer.varintField(3, ttl);
  return frame(writer).subarray(5);
}

test("leases a gateway vouches for: granted or kept alive through it within their TTL; a grant past the bound is refused", () => {
  const clock = { now: 0 };
  const grantRequest = Buffer.from([0x08, 60]); // LeaseGrantRequest{TTL: 60}
  const replica = context({ maxLeases: 2 }, clock);
  const grant = () => {
    const { state: id } = leaseGrant.request(grantRequest, replica);
    leaseGrant.response(leaseAnswer(id, 60), replica, id);
    return id;
  };
  const first = grant();
  const second = grant();
  assert.equal(replica.heldLeases.size, 2);
  assert.throws(
    () => leaseGrant.request(grantRequest, replica),
    (error: unknown) => error instanceof GrpcError && error.code === Status.RESOURCE_EXHAUSTED && /^etcdstorage gateway: too many leases: this gateway replica holds 2, its limit/.test(error.message),
  );

  // A revoke through it gives one back.
  const { state: revoked } = leaseRevoke.request(idMessage(first), replica);
  leaseRevoke.response(Buffer.alloc(0), replica, revoked);
  assert.equal(replica.heldLeases.size, 1);

  // Another replica vouches for a lease once it keeps it alive; a TTL of 0 is a lease that does not exist.
  const other = context({ maxLeases: 2 }, clock);
  const keepAlive = leaseKeepAlive.open(other, () => {});
  clock.now = 50_000;
  keepAlive.request(idMessage(second));
  keepAlive.response(leaseAnswer(second, 60));
  assert.equal(other.heldLeases.size, 1);
  keepAlive.request(idMessage(first));
  keepAlive.response(leaseAnswer(first, 0));
  assert.equal(other.heldLeases.size, 1, "the revoked lease is not held");

  // The granting replica lets go once the TTL ran out since its grant (at the next sweep, a second
  // at most); the other holds the lease for 60 s from the keepalive.
  clock.now = 60_500;
  assert.equal(replica.heldLeases.size, 0);
  assert.equal(other.heldLeases.size, 1);
  clock.now = 110_000;
  assert.equal(other.heldLeases.size, 0);
});

/** A message whose field 1 is a lease ID (LeaseRevokeRequest, LeaseKeepAliveRequest). */
function idMessage(id: bigint): Buffer {
  return Buffer.from([0x08, ...varint(id)]);
}

/** A varint's bytes (for hand-written messages). */
function varint(value: bigint): number[] {
  const bytes: number[] = [];
  let rest = BigInt.asUintN(64, value);
  while (rest >= 0x80n) {
    bytes.push(Number(rest & 0x7fn) | 0x80);
    rest >>= 7n;
  }
  bytes.push(Number(rest));
  return bytes;
}
