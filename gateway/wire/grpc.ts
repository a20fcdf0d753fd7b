// gRPC over node:http2, the little of it a proxy needs: length-prefixed messages, statuses in
// trailers, and the status codes (https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md).
import { constants, type ServerHttp2Stream } from "node:http2";
import { giveBack, takeBuffer } from "./buffers.ts";
import { Writer } from "./protobuf.ts";

export const Status = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  FAILED_PRECONDITION: 9,
  RESOURCE_EXHAUSTED: 8,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
} as const;

export const STATUS_NAMES: Record<number, string> = Object.fromEntries(Object.entries(Status).map(([name, code]) => [code, name]));

/** A status for the caller, with a message that must never contain a key or a value. */
export class GrpcError extends Error {
  readonly code: number;
  constructor(code: number, message: string) {
    super(message);
    this.code = code;
  }
}

const FRAME_HEADER = 5;

/** A writer whose bytes, once the message is written, are one gRPC frame (`frame(writer)`). */
export function frameWriter(sizeHint: number): Writer {
  const writer = new Writer(sizeHint + FRAME_HEADER);
  writer.pos = FRAME_HEADER;
  return writer;
}

export function frame(writer: Writer): Buffer {
  writer.buf[0] = 0;
  writer.buf.writeUInt32BE(writer.pos - FRAME_HEADER, 1);
  return writer.bytes();
}

/**
 * Splits a stream of DATA chunks into messages. A message longer than `maxMessageBytes` fails
 * before it is buffered; compressed messages are refused (the gateway advertises identity only).
 */
export class MessageDecoder {
  private readonly maxMessageBytes: number;
  private readonly tooLarge: (length: number, max: number) => GrpcError;
  private pending: Buffer[] = [];
  private pendingBytes = 0;

  constructor(maxMessageBytes: number, tooLarge: (length: number, max: number) => GrpcError) {
    this.maxMessageBytes = maxMessageBytes;
    this.tooLarge = tooLarge;
  }

  /** The complete messages this chunk finishes, in order. Throws GrpcError. */
  push(chunk: Buffer): Buffer[] {
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    const messages: Buffer[] = [];
    for (;;) {
      if (this.pendingBytes < FRAME_HEADER) return messages;
      const head = this.peek(FRAME_HEADER);
      if (head[0] !== 0) throw new GrpcError(Status.UNIMPLEMENTED, "compressed messages are not supported (grpc-accept-encoding: identity)");
      const length = head.readUInt32BE(1);
      if (length > this.maxMessageBytes) throw this.tooLarge(length, this.maxMessageBytes);
      if (this.pendingBytes < FRAME_HEADER + length) return messages;
      const whole = this.take(FRAME_HEADER + length);
      messages.push(whole.subarray(FRAME_HEADER));
    }
  }

  /** Whether a message was cut off by the end of the stream. */
  get hasPartialMessage(): boolean {
    return this.pendingBytes > 0;
  }

  private peek(n: number): Buffer {
    if (this.pending[0]!.length < n) this.join();
    return this.pending[0]!;
  }

  private take(n: number): Buffer {
    if (this.pending[0]!.length < n) this.join();
    const first = this.pending[0]!;
    this.pendingBytes -= n;
    if (first.length === n) {
      this.pending.shift();
      return first;
    }
    this.pending[0] = first.subarray(n);
    return first.subarray(0, n);
  }

  /** The pending chunks as one buffer (from the pool: a page of a list spans several DATA frames). */
  private join(): void {
    const whole = takeBuffer(this.pendingBytes);
    let at = 0;
    for (const chunk of this.pending) at += chunk.copy(whole, at);
    this.pending = [whole.subarray(0, at)];
  }
}

// grpc-message is percent-encoded UTF-8 (PROTOCOL-HTTP2.md): anything outside printable ASCII, and '%'.
export function encodeGrpcMessage(message: string): string {
  return /^[\x20-\x24\x26-\x7e]*$/.test(message) ? message : encodeURIComponent(message).replace(/%20/g, " ");
}

export function decodeGrpcMessage(value: string | undefined): string {
  if (value === undefined) return "";
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}

/**
 * The response headers of a call, with `more` after them, as a fresh raw list (Node takes it as it
 * is, and adds its date to it): an object is copied into a dictionary and checked key by key at
 * every call, about 5% of the gateway's CPU per create in a profile.
 */
export function responseHeaders(...more: string[]): string[] {
  return [":status", "200", "content-type", "application/grpc", "grpc-accept-encoding", "identity", ...more];
}

/**
 * Ends a call with a status: trailers-only when nothing was sent yet, trailers otherwise. Safe to
 * call on a stream that is already closed.
 */
export function endWithStatus(stream: ServerHttp2Stream, code: number, message: string): void {
  if (stream.closed || stream.destroyed) return;
  const status = { "grpc-status": String(code), ...(message ? { "grpc-message": encodeGrpcMessage(message) } : {}) };
  if (!stream.headersSent) {
    stream.respond(responseHeaders(...Object.entries(status).flat()), { endStream: true });
    // A tenant still sending is reset (RST_STREAM NO_ERROR, HTTP/2 §8.1, as grpc-go's servers do):
    // nothing more arrives. Not after trailers: Node's client (grpc-js) loses trailers a reset follows at once.
    if (!stream.readableEnded) stream.close(constants.NGHTTP2_NO_ERROR);
    return;
  }
  if (stream.writableEnded) return;
  stream.once("wantTrailers", () => stream.sendTrailers(status));
  stream.end();
}

/** Answers a unary call with one message and status OK. */
export function sendUnary(stream: ServerHttp2Stream, framed: Buffer): void {
  if (stream.closed || stream.destroyed) return;
  stream.respond(responseHeaders(), { waitForTrailers: true });
  stream.once("wantTrailers", () => stream.sendTrailers(OK_TRAILERS));
  writeFrame(stream, framed);
  stream.end();
}

/**
 * Writes a frame and gives its buffer back to the pool once http2 has written it. Only then:
 * until a write completes, http2 sends straight from the buffer.
 */
export function writeFrame(stream: ServerHttp2Stream, framed: Buffer): boolean {
  return stream.write(framed, (error) => {
    if (!error) giveBack(framed);
  });
}

const OK_TRAILERS = { "grpc-status": "0" } as const;

// grpc-timeout: 1 to 8 digits and a unit (PROTOCOL-HTTP2.md). Forwarded as it came when valid.
const GRPC_TIMEOUT = /^\d{1,8}[HMSmun]$/;

export function validTimeout(value: unknown): string | undefined {
  return typeof value === "string" && GRPC_TIMEOUT.test(value) ? value : undefined;
}
