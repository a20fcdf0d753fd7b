// Message pieces several APIs share: copying the fields a message is known to have, and the
// KeyValue (mvccpb) whose key loses the tenant's prefix on the way back.
import { frame, frameWriter } from "../wire/grpc.ts";
import type { TenantKeyspace } from "../keys.ts";
import { LENGTH_DELIMITED, Reader, VARINT, type Writer } from "../wire/protobuf.ts";

/** Field number → wire type, of the fields of one message the gateway forwards. */
export type KnownFields = Readonly<Record<number, number>>;

/** Copies the known fields as they are (wire types checked), in order; drops any other field. */
export function copyKnownFields(reader: Reader, fields: KnownFields, name: string, writer: Writer): void {
  const wireType = fields[reader.field];
  if (wireType === undefined) {
    reader.skip();
    return;
  }
  const [start, end] = reader.rawField(wireType, name);
  writer.raw(reader.buf, start, end);
}

/** A whole message of known fields, framed. */
export function passThrough(message: Buffer, fields: KnownFields, name: string): Buffer {
  const reader = new Reader(message);
  const writer = frameWriter(message.length);
  while (reader.next()) copyKnownFields(reader, fields, name, writer);
  return frame(writer);
}

// mvccpb.KeyValue: key 1, create_revision 2, mod_revision 3, version 4, value 5, lease 6.
const KEY_VALUE_FIELDS: KnownFields = { 2: VARINT, 3: VARINT, 4: VARINT, 5: LENGTH_DELIMITED, 6: VARINT };

/**
 * Writes the KeyValue at the reader's current (length-delimited) field as field `field`, key
 * stripped. Runs of known fields are copied at once: a page of a list holds hundreds of them.
 */
export function writeStrippedKeyValue(reader: Reader, field: number, keyspace: TenantKeyspace, writer: Writer, name: string): void {
  reader.expect(LENGTH_DELIMITED, name);
  const [start, end] = reader.span();
  const buf = reader.buf;
  const kv = new Reader(buf, start, end);
  const mark = writer.begin(field, end - start);
  let runStart = start;
  let runEnd = start;
  while (kv.next()) {
    const wireType = KEY_VALUE_FIELDS[kv.field];
    if (wireType !== undefined) {
      const [fieldStart, fieldEnd] = kv.rawField(wireType, "KeyValue");
      if (fieldStart !== runEnd) {
        writer.raw(buf, runStart, runEnd);
        runStart = fieldStart;
      }
      runEnd = fieldEnd;
      continue;
    }
    // The key (rewritten) or an unknown field (dropped) ends a run of copied fields.
    writer.raw(buf, runStart, runEnd);
    if (kv.field === 1) {
      kv.expect(LENGTH_DELIMITED, "KeyValue");
      const [keyStart, keyEnd] = kv.span();
      writer.bytesFieldFrom(1, buf, keyspace.strippedStart(buf, keyStart, keyEnd), keyEnd);
    } else kv.skip();
    runStart = runEnd = kv.pos;
  }
  writer.raw(buf, runStart, runEnd);
  writer.finish(mark);
}
