// Maintenance/Status, the only Maintenance method served: an API server reads the version from
// it (to decide whether watch progress requests work) and the database size (a metric). The
// answer keeps core etcd's header and version; the size is the tenant's own, and leader, raft
// figures, alarms and learner state, which describe the shared cluster, are left out.
import { frame, frameWriter } from "../wire/grpc.ts";
import type { CallContext, UnaryMethod } from "../calls/method.ts";
import { LENGTH_DELIMITED, Reader, VARINT } from "../wire/protobuf.ts";

/** The member that answered, from a ResponseHeader (member_id, field 2). */
function memberId(header: Buffer): bigint {
  const reader = new Reader(header);
  let id = 0n;
  while (reader.next()) {
    if (reader.field === 2 && reader.wireType === VARINT) id = BigInt.asUintN(64, reader.bigint());
    else reader.skip();
  }
  return id;
}

export const status: UnaryMethod<undefined> = {
  kind: "unary",
  idempotent: true,
  // StatusRequest has no fields: whatever the tenant sent, core etcd gets an empty one.
  request: () => ({ framed: frame(frameWriter(0)), state: undefined }),
  response(message, ctx: CallContext) {
    const reader = new Reader(message);
    const writer = frameWriter(message.length);
    let header: Buffer | undefined;
    while (reader.next()) {
      if (reader.field === 1 || reader.field === 2) {
        reader.expect(LENGTH_DELIMITED, "StatusResponse");
        const value = reader.bytes();
        if (reader.field === 1) header = value;
        writer.bytesField(reader.field, value);
      } else {
        reader.skip();
      }
    }
    const size = ctx.storage.usedBytes();
    if (size > 0) {
      writer.varintField(3, size); // dbSize
      writer.varintField(9, size); // dbSizeInUse
    }
    // The member that answered leads, as far as the tenant can tell: it has no cluster of its own.
    if (header) writer.bigintField(4, memberId(header));
    writer.varintField(12, ctx.storage.quotaBytes()); // dbSizeQuota
    return frame(writer);
  },
};
