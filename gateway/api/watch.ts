// Watch: one core stream per tenant stream. Every request is forwarded (create with its key and
// range translated, cancel and progress as they are) and every answer comes back with its events'
// keys stripped: events, progress notifications, compaction and cancellation alike. The watches a
// gateway holds open in core etcd are bounded (limits.maxOpenWatches): a create past the bound is
// answered by the gateway, as etcd answers a create it refuses.
import { frame, frameWriter } from "../wire/grpc.ts";
import { KEYED_REQUESTS } from "../keys.ts";
import { checkKeySize } from "../tenant/limits.ts";
import { copyKnownFields, writeStrippedKeyValue, type KnownFields } from "./messages.ts";
import type { CallContext, StreamMethod, StreamTranslator } from "../calls/method.ts";
import { LENGTH_DELIMITED, Reader, VARINT, type Writer } from "../wire/protobuf.ts";

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
  const core = ctx.keyspace.readRange(tenantKey, rangeEnd, "single-key");
  writer.bytesField(1, core.key);
  if (core.rangeEnd) writer.bytesField(2, core.rangeEnd);
  for (let i = 0; i < copied.length; i += 2) writer.raw(buf, copied[i]!, copied[i + 1]!);
}

const CREATE = 1;

/** A WatchRequest: create 1, cancel 2, progress 3 (the last one present counts); none: nothing to send. */
function translateRequest(message: Buffer, ctx: CallContext): { field: number; framed: Buffer } | undefined {
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
  if (field === CREATE) {
    writeCreate(message, start, end, ctx, writer);
  } else if (field === 2) {
    const cancel = new Reader(message, start, end);
    while (cancel.next()) copyKnownFields(cancel, CANCEL_COPIED, "WatchCancelRequest", writer);
  } // field 3, WatchProgressRequest, has no fields.
  writer.finish(mark);
  return { field, framed: frame(writer) };
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

/** What a WatchResponse says became of a watch. */
function watchOutcome(message: Buffer): { id: bigint; created: boolean; canceled: boolean } {
  const reader = new Reader(message);
  const outcome = { id: 0n, created: false, canceled: false };
  while (reader.next()) {
    if (reader.field === 2 && reader.wireType === V) outcome.id = reader.bigint();
    else if (reader.field === 3 && reader.wireType === V) outcome.created = reader.uint() !== 0;
    else if (reader.field === 4 && reader.wireType === V) outcome.canceled = reader.uint() !== 0;
    else reader.skip();
  }
  return outcome;
}

/** etcd's answer to a create it refuses: created and canceled at once, watch ID -1, and why. */
function refusedCreate(limit: number): Buffer {
  const reason = Buffer.from(`etcdstorage gateway: too many open watches: this gateway replica holds ${limit}, its limit (each one takes core etcd's memory); cancel watches or end streams to open others`);
  const writer = frameWriter(reason.length + 32);
  writer.bytesField(1, Buffer.alloc(0)); // an empty header: etcd's clients read one in every answer
  writer.bigintField(2, -1n);
  writer.varintField(3, 1);
  writer.varintField(4, 1);
  writer.bytesField(6, reason);
  return frame(writer);
}

/**
 * One tenant watch stream. A watch counts against limits.maxOpenWatches from when its create is
 * sent until core etcd cancels it or the stream ends. A create past the limit is not sent; its
 * refusal is answered in its turn, after the creates before it, since etcd's clients pair create
 * answers with their creates in order.
 */
class WatchTranslator implements StreamTranslator {
  private readonly ctx: CallContext;
  private readonly reply: (framed: Buffer) => void;
  /** Watches created on this stream and not canceled, by ID. */
  private readonly open = new Set<bigint>();
  /** Creates awaiting their answer, in order: null when sent to core etcd, else the refusal to answer in its turn. */
  private readonly awaiting: (Buffer | null)[] = [];

  constructor(ctx: CallContext, reply: (framed: Buffer) => void) {
    this.ctx = ctx;
    this.reply = reply;
  }

  request(message: Buffer): Buffer | undefined {
    const translated = translateRequest(message, this.ctx);
    if (translated?.field !== CREATE) return translated?.framed;
    const { openWatches, limits } = this.ctx;
    if (openWatches.count >= limits.maxOpenWatches) {
      this.ctx.boundReached("open_watches");
      this.awaiting.push(refusedCreate(limits.maxOpenWatches));
      this.answerRefusals();
      return undefined;
    }
    openWatches.count++;
    this.awaiting.push(null);
    return translated.framed;
  }

  response(message: Buffer): void {
    const outcome = watchOutcome(message);
    if (outcome.created) {
      this.awaiting.shift(); // its create, sent to core etcd: a refusal never waits at the head
      if (outcome.canceled) this.ctx.openWatches.count--;
      else this.open.add(outcome.id);
    } else if (outcome.canceled && this.open.delete(outcome.id)) {
      this.ctx.openWatches.count--;
    }
    this.reply(translateResponse(message, this.ctx));
    this.answerRefusals();
  }

  close(): void {
    this.ctx.openWatches.count -= this.open.size + this.awaiting.filter((create) => create === null).length;
    this.open.clear();
    this.awaiting.length = 0;
  }

  /** The refusals whose turn came: every create before them was answered. */
  private answerRefusals(): void {
    while (this.awaiting.length > 0 && this.awaiting[0] !== null) this.reply(this.awaiting.shift()!);
  }
}

export const watch: StreamMethod = {
  kind: "stream",
  keyed: KEYED_REQUESTS.WatchRequest,
  open: (ctx, reply) => new WatchTranslator(ctx, reply),
};
