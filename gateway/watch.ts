// Watch: one core stream per tenant stream. Every request is forwarded (create with its key and
// range translated, cancel and progress as they are) and every answer comes back with its events'
// keys stripped: events, progress notifications, compaction and cancellation alike.
import { frame, frameWriter } from "./grpc.ts";
import { KEYED_REQUESTS } from "./keys.ts";
import { checkKeySize } from "./limits.ts";
import { copyKnownFields, writeStrippedKeyValue, type KnownFields } from "./messages.ts";
import type { CallContext, StreamMethod } from "./proxy.ts";
import { LENGTH_DELIMITED, Reader, VARINT, type Writer } from "./wire.ts";

const V = VARINT;
const L = LENGTH_DELIMITED;
// start_revision, progress_notify, prev_kv, watch_id, fragment (filters, 5, is packed or not)
const CREATE_COPIED: KnownFields = { 3: V, 4: V, 6: V, 7: V, 8: V };
const CANCEL_COPIED: KnownFields = { 1: V }; // watch_id
// header, watch_id, created, canceled, compact_revision, cancel_reason, fragment
const RESPONSE_COPIED: KnownFields = { 1: L, 2: V, 3: V, 4: V, 5: V, 6: L, 7: V };
const EVENT_COPIED: KnownFields = { 1: V }; // type
const SMALLEST_KEY = Buffer.from([0]);

/** WatchCreateRequest: etcd reads an empty key as "\0" and a present-but-empty range_end as one key. */
function writeCreate(buf: Buffer, start: number, end: number, ctx: CallContext, writer: Writer): void {
  const reader = new Reader(buf, start, end);
  let key: Buffer | undefined;
  let rangeEnd: Buffer | undefined;
  const copied: number[] = [];
  while (reader.next()) {
    if (reader.field === 1) {
      reader.expect(L, "WatchCreateRequest");
      key = reader.bytes();
    } else if (reader.field === 2) {
      reader.expect(L, "WatchCreateRequest");
      rangeEnd = reader.bytes();
    } else if (reader.field === 5 && (reader.wireType === V || reader.wireType === L)) {
      copied.push(...reader.rawField(reader.wireType, "WatchCreateRequest"));
    } else if (CREATE_COPIED[reader.field] !== undefined) {
      copied.push(...reader.rawField(CREATE_COPIED[reader.field]!, "WatchCreateRequest"));
    } else {
      reader.skip();
    }
  }
  const tenantKey = key === undefined || key.length === 0 ? SMALLEST_KEY : key;
  checkKeySize(ctx.limits, tenantKey, "a watched key");
  if (rangeEnd !== undefined) checkKeySize(ctx.limits, rangeEnd, "a watched range end");
  const core = ctx.keyspace.range(tenantKey, rangeEnd, "single-key");
  writer.bytesField(1, core.key);
  if (core.rangeEnd) writer.bytesField(2, core.rangeEnd);
  for (let i = 0; i < copied.length; i += 2) writer.raw(buf, copied[i]!, copied[i + 1]!);
}

/** A WatchRequest: create 1, cancel 2, progress 3 (the last one present counts); none: nothing to send. */
function translateRequest(message: Buffer, ctx: CallContext): Buffer | undefined {
  const reader = new Reader(message);
  let chosen: [field: number, start: number, end: number] | undefined;
  while (reader.next()) {
    if (reader.field >= 1 && reader.field <= 3) {
      reader.expect(L, "WatchRequest");
      chosen = [reader.field, ...reader.span()];
    } else {
      reader.skip();
    }
  }
  if (!chosen) return undefined;
  const [field, start, end] = chosen;
  const writer = frameWriter(end - start + ctx.keyspace.prefix.length * 2 + 16);
  const mark = writer.begin(field, end - start + ctx.keyspace.prefix.length * 2);
  if (field === 1) {
    writeCreate(message, start, end, ctx, writer);
  } else if (field === 2) {
    const cancel = new Reader(message, start, end);
    while (cancel.next()) copyKnownFields(cancel, CANCEL_COPIED, "WatchCancelRequest", writer);
  } // field 3, WatchProgressRequest, has no fields.
  writer.finish(mark);
  return frame(writer);
}

function translateResponse(message: Buffer, ctx: CallContext): Buffer {
  const reader = new Reader(message);
  const writer = frameWriter(message.length);
  while (reader.next()) {
    if (reader.field !== 11) {
      copyKnownFields(reader, RESPONSE_COPIED, "WatchResponse", writer);
      continue;
    }
    reader.expect(L, "WatchResponse");
    const [start, end] = reader.span();
    const event = new Reader(message, start, end);
    const mark = writer.begin(11, end - start);
    while (event.next()) {
      // Event: type 1, kv 2, prev_kv 3.
      if (event.field === 2 || event.field === 3) writeStrippedKeyValue(event, event.field, ctx.keyspace, writer, "Event");
      else copyKnownFields(event, EVENT_COPIED, "Event", writer);
    }
    writer.finish(mark);
  }
  return frame(writer);
}

export const watch: StreamMethod = {
  kind: "stream",
  keyed: KEYED_REQUESTS.WatchRequest,
  open: (ctx) => ({
    request: (message) => translateRequest(message, ctx),
    response: (message) => translateResponse(message, ctx),
  }),
};
