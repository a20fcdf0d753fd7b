// The Lease API. etcd's lease IDs are global to the cluster and its own IDs are sequential, so a
// tenant could keep alive, inspect or attach keys to a host's lease by guessing its ID. The gateway
// therefore grants every lease of a tenant under an ID it chooses (tenant/leases.ts: LeaseScope).
// A lease ID without the tenant's tag is replaced, before it is sent, by the tenant's "absent"
// lease (its tag and zero random bits, never granted), so core etcd answers exactly as for a lease
// that does not exist, and the tenant learns nothing. Ownership is a property of the ID: it
// survives gateway restarts and holds across replicas without any stored state. How many leases a
// tenant holds is bounded per replica (tenant/leases.ts: HeldLeases, limits.maxLeases).
import type { StreamMethod, UnaryMethod } from "../calls/method.ts";
import { GrpcError, Status, frame, frameWriter } from "../wire/grpc.ts";
import { passThrough } from "./messages.ts";
import { LENGTH_DELIMITED, MalformedMessage, Reader, VARINT } from "../wire/protobuf.ts";

/** The TTL (field 3) of a LeaseGrantResponse or LeaseKeepAliveResponse. */
function answeredTtl(message: Buffer, name: string): number {
  const reader = new Reader(message);
  let ttl = 0;
  while (reader.next()) {
    if (reader.field === 3) {
      reader.expect(VARINT, name);
      ttl = Number(reader.bigint());
    } else reader.skip();
  }
  return ttl;
}

/** A message with one lease ID field (LeaseRevokeRequest, LeaseKeepAliveRequest, LeaseTimeToLiveRequest's first field). */
function readId(message: Buffer, name: string, extra?: (reader: Reader) => boolean): { id: bigint; rest: [number, number][] } {
  const reader = new Reader(message);
  let id = 0n;
  const rest: [number, number][] = [];
  while (reader.next()) {
    if (reader.field === 1) {
      reader.expect(VARINT, name);
      id = reader.bigint();
    } else if (extra?.(reader)) {
      rest.push([reader.fieldStart, reader.pos]);
    } else {
      reader.skip();
    }
  }
  return { id, rest };
}

function writeWithId(id: bigint, message: Buffer, rest: [number, number][]): Buffer {
  const writer = frameWriter(16 + message.length);
  if (id !== 0n) writer.bigintField(1, id);
  for (const [start, end] of rest) writer.raw(message, start, end);
  return frame(writer);
}

/** A response whose ID field (2) is set back to what the tenant asked about; other fields as they came. */
function restoreId(message: Buffer, id: bigint, name: string, keys?: (value: Buffer) => Buffer | undefined): Buffer {
  const reader = new Reader(message);
  const writer = frameWriter(message.length + 10);
  while (reader.next()) {
    if (reader.field === 2) {
      reader.expect(VARINT, name);
      reader.skip();
      continue;
    }
    if (reader.field === 5 && keys) {
      reader.expect(LENGTH_DELIMITED, name);
      const tenantKey = keys(reader.bytes());
      if (tenantKey !== undefined) writer.bytesField(5, tenantKey);
      continue;
    }
    if (reader.field === 1 || reader.field === 3 || reader.field === 4) {
      const [start, end] = reader.rawField(reader.field === 1 ? LENGTH_DELIMITED : VARINT, name);
      writer.raw(message, start, end);
      continue;
    }
    reader.skip();
  }
  if (id !== 0n) writer.bigintField(2, id);
  return frame(writer);
}

export const leaseGrant: UnaryMethod<bigint> = {
  kind: "unary",
  idempotent: false,
  request(message, ctx) {
    const { maxLeases } = ctx.limits;
    if (ctx.heldLeases.size >= maxLeases) {
      ctx.boundReached("leases");
      throw new GrpcError(Status.RESOURCE_EXHAUSTED, `etcdstorage gateway: too many leases: this gateway replica holds ${maxLeases}, its limit (each one takes core etcd's memory); revoke leases or let them expire to grant others`);
    }
    // LeaseGrantRequest: TTL = 1, ID = 2.
    const reader = new Reader(message);
    const writer = frameWriter(32);
    let ttl = 0n;
    while (reader.next()) {
      if (reader.field === 1) {
        reader.expect(VARINT, "LeaseGrantRequest");
        ttl = reader.bigint();
      } else if (reader.field === 2) {
        reader.expect(VARINT, "LeaseGrantRequest");
        if (reader.bigint() !== 0n) throw new GrpcError(Status.INVALID_ARGUMENT, "etcdstorage gateway: a lease ID cannot be chosen by the client; send ID 0 and use the ID granted");
      } else {
        reader.skip();
      }
    }
    const longest = BigInt(ctx.limits.maxLeaseTtlSeconds);
    if (ttl !== 0n) writer.bigintField(1, ttl > longest ? longest : ttl);
    const id = ctx.leases.newId();
    writer.bigintField(2, id);
    return { framed: frame(writer), state: id };
  },
  // LeaseGrantResponse carries the ID the gateway chose, the TTL and an error string: as they came.
  response(message, ctx, id) {
    ctx.heldLeases.hold(id, answeredTtl(message, "LeaseGrantResponse"));
    return passThrough(message, { 1: LENGTH_DELIMITED, 2: VARINT, 3: VARINT, 4: LENGTH_DELIMITED }, "LeaseGrantResponse");
  },
  // Another lease already has the random ID: draw again.
  retry: (code, message) => code === Status.FAILED_PRECONDITION && message.includes("lease already exists"),
};

export const leaseRevoke: UnaryMethod<bigint> = {
  kind: "unary",
  idempotent: false,
  request(message, ctx) {
    const id = ctx.leases.confine(readId(message, "LeaseRevokeRequest").id);
    return { framed: writeWithId(id, message, []), state: id };
  },
  response(message, ctx, id) {
    ctx.heldLeases.release(id);
    return passThrough(message, { 1: LENGTH_DELIMITED }, "LeaseRevokeResponse");
  },
};

export const leaseTimeToLive: UnaryMethod<bigint> = {
  kind: "unary",
  idempotent: true,
  request(message, ctx) {
    // LeaseTimeToLiveRequest: ID = 1, keys = 2.
    const { id, rest } = readId(message, "LeaseTimeToLiveRequest", (reader) => {
      if (reader.field !== 2) return false;
      reader.expect(VARINT, "LeaseTimeToLiveRequest");
      reader.skip();
      return true;
    });
    return { framed: writeWithId(ctx.leases.confine(id), message, rest), state: id };
  },
  // LeaseTimeToLiveResponse: header 1, ID 2, TTL 3, grantedTTL 4, keys 5 (only the tenant's, stripped).
  response: (message, ctx, id) => restoreId(message, id, "LeaseTimeToLiveResponse", (key) => (ctx.keyspace.isKeyInside(key) ? ctx.keyspace.strip(key) : undefined)),
};

/** LeaseKeepAlive: a stream of IDs; etcd answers each in order, so the asked IDs queue up. */
export const leaseKeepAlive: StreamMethod = {
  kind: "stream",
  open(ctx, reply) {
    const asked: bigint[] = [];
    return {
      request(message) {
        const { id } = readId(message, "LeaseKeepAliveRequest");
        asked.push(id);
        return writeWithId(ctx.leases.confine(id), message, []);
      },
      response(message) {
        const id = asked.shift();
        if (id === undefined) throw new MalformedMessage("a keepalive answer for no request");
        // TTL 0: no such lease (a foreign ID was sent as the never-granted one).
        ctx.heldLeases.hold(ctx.leases.confine(id), answeredTtl(message, "LeaseKeepAliveResponse"));
        reply(restoreId(message, id, "LeaseKeepAliveResponse"));
      },
    };
  },
};
