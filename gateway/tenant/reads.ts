// Reads that make core etcd build large answers. etcd reads every key and value a Range covers
// into memory, then encodes the answer, before a byte of it is sent (bench/core-memory.ts: 32
// unpaged Ranges over a 64 MiB prefix at once took etcd 3.5.16 to 4.1 GiB). A tenant's
// request rate alone would let it keep dozens in flight, so each replica holds the bytes such reads
// may build to limits.maxReadBytesInFlight, and a read beyond it waits its turn; one larger than
// the whole budget runs alone.
//
// What a read may build is estimated from the outgoing request and the tenant's usage: nothing for
// one key or a count, else its limit times the largest object the tenant stores, and at most all
// it stores (a read at an old revision may also see history: the estimate does not count it).
import { LENGTH_DELIMITED, Reader, VARINT } from "../wire/protobuf.ts";

/** What the estimate knows of the tenant's data (usage.ts keeps it). */
export interface StoredData {
  usedBytes(): number;
  largestObjectBytes(): number;
}

interface RangeFields {
  multiKey: boolean;
  limit: number;
  countOnly: boolean;
  prevKv: boolean;
}

function readRangeFields(buf: Buffer, start: number, end: number, fields: { rangeEnd: number; limit?: number; countOnly?: number; prevKv?: number }): RangeFields {
  const reader = new Reader(buf, start, end);
  const found: RangeFields = { multiKey: false, limit: 0, countOnly: false, prevKv: false };
  while (reader.next()) {
    if (reader.field === fields.rangeEnd && reader.wireType === LENGTH_DELIMITED) found.multiKey = reader.bytes().length > 0;
    else if (reader.field === fields.limit && reader.wireType === VARINT) found.limit = Number(reader.bigint());
    else if (reader.field === fields.countOnly && reader.wireType === VARINT) found.countOnly = reader.uint() !== 0;
    else if (reader.field === fields.prevKv && reader.wireType === VARINT) found.prevKv = reader.uint() !== 0;
    else reader.skip();
  }
  return found;
}

function rangeBytes(buf: Buffer, start: number, end: number, data: StoredData): number {
  // RangeRequest: range_end 2, limit 3, count_only 9.
  const range = readRangeFields(buf, start, end, { rangeEnd: 2, limit: 3, countOnly: 9 });
  if (!range.multiKey || range.countOnly) return 0;
  const used = data.usedBytes();
  return range.limit > 0 ? Math.min(used, range.limit * data.largestObjectBytes()) : used;
}

function deleteRangeBytes(buf: Buffer, start: number, end: number, data: StoredData): number {
  // DeleteRangeRequest: range_end 2, prev_kv 3 (the deleted objects come back).
  const range = readRangeFields(buf, start, end, { rangeEnd: 2, prevKv: 3 });
  return range.multiKey && range.prevKv ? data.usedBytes() : 0;
}

/** A TxnRequest's reads, both branches counted: which one runs is known only to etcd. */
function txnBytes(buf: Buffer, start: number, end: number, data: StoredData): number {
  let bytes = 0;
  const reader = new Reader(buf, start, end);
  while (reader.next()) {
    if ((reader.field !== 2 && reader.field !== 3) || reader.wireType !== LENGTH_DELIMITED) {
      reader.skip();
      continue;
    }
    // RequestOp: range 1, put 2, delete_range 3, txn 4.
    const op = new Reader(buf, ...reader.span());
    while (op.next()) {
      if (op.wireType !== LENGTH_DELIMITED) op.skip();
      else if (op.field === 1) bytes += rangeBytes(buf, ...op.span(), data);
      else if (op.field === 3) bytes += deleteRangeBytes(buf, ...op.span(), data);
      else if (op.field === 4) bytes += txnBytes(buf, ...op.span(), data);
      else op.skip();
    }
  }
  return bytes;
}

const FRAME_HEADER = 5;

/** What core etcd may build in memory to answer an outgoing request (a gRPC frame). */
export const answerBytes = {
  range: (framed: Buffer, data: StoredData) => rangeBytes(framed, FRAME_HEADER, framed.length, data),
  deleteRange: (framed: Buffer, data: StoredData) => deleteRangeBytes(framed, FRAME_HEADER, framed.length, data),
  txn: (framed: Buffer, data: StoredData) => txnBytes(framed, FRAME_HEADER, framed.length, data),
};

/** The bytes reads may build in core etcd at once; reads beyond wait in order. */
export class ReadBudget {
  private readonly capacity: number;
  private inFlight = 0;
  private readonly waiting: { bytes: number; enter: () => void }[] = [];

  constructor(capacity: number) {
    this.capacity = capacity;
  }

  /** Resolves once the read may go, with the function to call when its answer came. */
  enter(bytes: number): Promise<() => void> {
    return new Promise((resolve) => {
      this.waiting.push({ bytes, enter: () => resolve(() => this.leave(bytes)) });
      this.admit();
    });
  }

  private leave(bytes: number): void {
    this.inFlight -= bytes;
    this.admit();
  }

  /** In order: a read that does not fit holds those behind it, so a large one is not starved. */
  private admit(): void {
    while (this.waiting.length > 0 && (this.inFlight === 0 || this.inFlight + this.waiting[0]!.bytes <= this.capacity)) {
      const next = this.waiting.shift()!;
      this.inFlight += next.bytes;
      next.enter();
    }
  }
}
