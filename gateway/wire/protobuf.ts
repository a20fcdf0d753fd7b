// Protocol Buffers wire format, just what the gateway needs to read and rewrite etcd messages
// without decoding them into objects: a field's presence is whether it occurs in the bytes, never
// a default value (etcd reads a present-but-empty range_end differently from an absent one).
import { giveBack, takeBuffer } from "./buffers.ts";

export const VARINT = 0;
export const FIXED64 = 1;
export const LENGTH_DELIMITED = 2;
export const FIXED32 = 5;

/** A message the gateway cannot read: the caller answers INVALID_ARGUMENT (or INTERNAL for core etcd's). */
export class MalformedMessage extends Error {}

/** Walks the fields of one message in `buf[start, end)`. */
export class Reader {
  readonly buf: Buffer;
  readonly end: number;
  pos: number;
  /** Field number, wire type and where the field's tag starts, of the field `next()` found. */
  field = 0;
  wireType = 0;
  fieldStart = 0;

  constructor(buf: Buffer, start = 0, end = buf.length) {
    this.buf = buf;
    this.pos = start;
    this.end = end;
  }

  /** Moves to the next field; false at the end of the message. */
  next(): boolean {
    if (this.pos >= this.end) return false;
    this.fieldStart = this.pos;
    const tag = this.uint();
    this.field = Math.floor(tag / 8);
    this.wireType = tag % 8;
    if (this.field === 0) throw new MalformedMessage("field number 0");
    return true;
  }

  /** A varint as a number; one beyond 2^53 (only negative int64s and lease IDs) needs `bigint()`. */
  uint(): number {
    const { buf, end } = this;
    let result = 0;
    let multiplier = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= end) throw new MalformedMessage("truncated varint");
      const byte = buf[this.pos++]!;
      result += (byte & 0x7f) * multiplier;
      if (byte < 0x80) {
        if (result > Number.MAX_SAFE_INTEGER) throw new MalformedMessage("varint beyond 2^53");
        return result;
      }
      multiplier *= 128;
    }
    throw new MalformedMessage("varint longer than 10 bytes");
  }

  /** A varint as a signed 64-bit integer (int64: lease IDs, revisions). */
  bigint(): bigint {
    const { buf, end } = this;
    let result = 0n;
    let shift = 0n;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= end) throw new MalformedMessage("truncated varint");
      const byte = buf[this.pos++]!;
      result |= BigInt(byte & 0x7f) << shift;
      if (byte < 0x80) return BigInt.asIntN(64, result);
      shift += 7n;
    }
    throw new MalformedMessage("varint longer than 10 bytes");
  }

  /** A length-delimited value's bounds; the reader moves past it. */
  span(): [start: number, end: number] {
    const length = this.uint();
    const start = this.pos;
    if (length > this.end - start) throw new MalformedMessage("length beyond the message");
    this.pos = start + length;
    return [start, this.pos];
  }

  /** A length-delimited value, as a view of the buffer (not a copy). */
  bytes(): Buffer {
    const [start, end] = this.span();
    return this.buf.subarray(start, end);
  }

  /** Moves past the current field's value, whatever its wire type. */
  skip(): void {
    switch (this.wireType) {
      case VARINT:
        this.uint2();
        return;
      case FIXED64:
        this.advance(8);
        return;
      case LENGTH_DELIMITED:
        this.span();
        return;
      case FIXED32:
        this.advance(4);
        return;
      default:
        throw new MalformedMessage(`wire type ${this.wireType} (groups are not used by etcd)`);
    }
  }

  /** Checks the current field's wire type. */
  expect(wireType: number, message: string): void {
    if (this.wireType !== wireType) throw new MalformedMessage(`${message} field ${this.field} has wire type ${this.wireType}, expected ${wireType}`);
  }

  /** Skips the current field after checking its wire type; returns [fieldStart, end) for a raw copy. */
  rawField(wireType: number, message: string): [start: number, end: number] {
    this.expect(wireType, message);
    this.skip();
    return [this.fieldStart, this.pos];
  }

  // A varint of any size, only to move past it.
  private uint2(): void {
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) throw new MalformedMessage("truncated varint");
      if (this.buf[this.pos++]! < 0x80) return;
    }
    throw new MalformedMessage("varint longer than 10 bytes");
  }

  private advance(n: number): void {
    if (this.end - this.pos < n) throw new MalformedMessage("truncated fixed-size value");
    this.pos += n;
  }
}

export function varintSize(value: number): number {
  let size = 1;
  while (value >= 128) {
    value = Math.floor(value / 128);
    size++;
  }
  return size;
}

/**
 * Builds a message into one growing buffer. Nested messages are written in place and their length
 * patched afterwards (`begin`/`finish`), so a rewritten value is copied once.
 */
export class Writer {
  buf: Buffer;
  pos: number;

  constructor(sizeHint: number) {
    this.buf = takeBuffer(Math.max(64, sizeHint));
    this.pos = 0;
  }

  /** Room for `n` more bytes. */
  reserve(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const grown = takeBuffer(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(grown, 0, 0, this.pos);
    giveBack(this.buf);
    this.buf = grown;
  }

  uint(value: number): void {
    this.reserve(10);
    const buf = this.buf;
    while (value >= 128) {
      buf[this.pos++] = (value % 128) | 0x80;
      value = Math.floor(value / 128);
    }
    buf[this.pos++] = value;
  }

  /** A signed 64-bit varint (negative values take ten bytes, as protobuf's int64 does). */
  bigint(value: bigint): void {
    this.reserve(10);
    let v = BigInt.asUintN(64, value);
    while (v >= 128n) {
      this.buf[this.pos++] = Number(v & 0x7fn) | 0x80;
      v >>= 7n;
    }
    this.buf[this.pos++] = Number(v);
  }

  tag(field: number, wireType: number): void {
    this.uint(field * 8 + wireType);
  }

  varintField(field: number, value: number): void {
    this.tag(field, VARINT);
    this.uint(value);
  }

  bigintField(field: number, value: bigint): void {
    this.tag(field, VARINT);
    this.bigint(value);
  }

  /** A bytes field whose value is `head` followed by `tail` (a prefix and a key, without concatenating first). */
  bytesField(field: number, head: Uint8Array, tail?: Uint8Array): void {
    const length = head.length + (tail?.length ?? 0);
    this.tag(field, LENGTH_DELIMITED);
    this.uint(length);
    this.reserve(length);
    this.buf.set(head, this.pos);
    if (tail) this.buf.set(tail, this.pos + head.length);
    this.pos += length;
  }

  /** A bytes field whose value is `source[start, end)`. */
  bytesFieldFrom(field: number, source: Buffer, start: number, end: number): void {
    this.tag(field, LENGTH_DELIMITED);
    this.uint(end - start);
    this.raw(source, start, end);
  }

  /** Copies bytes as they are (a whole field, tag included, read with `Reader.rawField`). */
  raw(source: Buffer, start: number, end: number): void {
    if (end <= start) return;
    this.reserve(end - start);
    source.copy(this.buf, this.pos, start, end);
    this.pos += end - start;
  }

  /**
   * Starts a nested message; `expectedLength` sizes the room left for its length (the nested
   * message's length before rewriting is a good guess). Returns the mark `finish` needs.
   */
  begin(field: number, expectedLength: number): number {
    this.tag(field, LENGTH_DELIMITED);
    const room = varintSize(expectedLength);
    this.reserve(room);
    this.pos += room;
    return this.pos * 16 + room;
  }

  /** Ends a nested message: writes its length in the room `begin` left, moving the body if the room was wrong. */
  finish(mark: number): void {
    const room = mark % 16;
    const bodyStart = (mark - room) / 16;
    const length = this.pos - bodyStart;
    const needed = varintSize(length);
    if (needed !== room) {
      this.reserve(needed - room);
      this.buf.copyWithin(bodyStart + needed - room, bodyStart, this.pos);
      this.pos += needed - room;
    }
    let at = bodyStart - room;
    let value = length;
    while (value >= 128) {
      this.buf[at++] = (value % 128) | 0x80;
      value = Math.floor(value / 128);
    }
    this.buf[at] = value;
  }

  /** The bytes written so far (a view, not a copy). */
  bytes(): Buffer {
    return this.buf.subarray(0, this.pos);
  }
}
