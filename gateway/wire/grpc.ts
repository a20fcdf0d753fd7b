// gRPC over the gateway's HTTP/2 (h2.ts), the little of it a proxy needs: length-prefixed
// messages, statuses in trailers, and the status codes
// (https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md).
import { takeBuffer } from "./buffers.ts";
import type { H2Stream } from "./h2.ts";
import { encodeHeaders } from "./hpack.ts";
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
 * Chunks may be views of a socket's read buffer (h2.ts): each message is copied once, straight
 * into a buffer of its own (from the pool: a page of a list spans several DATA frames).
 */
export class MessageDecoder {
  private readonly maxMessageBytes: number;
  private readonly tooLarge: (length: number, max: number) => GrpcError;
  private readonly header = Buffer.alloc(FRAME_HEADER);
  private headerFill = 0;
  /** The message being received, and how much of it came. */
  private message: Buffer | undefined;
  private messageFill = 0;

  constructor(maxMessageBytes: number, tooLarge: (length: number, max: number) => GrpcError) {
    this.maxMessageBytes = maxMessageBytes;
    this.tooLarge = tooLarge;
  }

  /** The complete messages this chunk finishes, in order. Throws GrpcError. */
  push(chunk: Buffer): Buffer[] {
    const messages: Buffer[] = [];
    let at = 0;
    while (at < chunk.length) {
      if (!this.message) {
        const n = Math.min(FRAME_HEADER - this.headerFill, chunk.length - at);
        chunk.copy(this.header, this.headerFill, at, (at += n));
        this.headerFill += n;
        if (this.headerFill < FRAME_HEADER) return messages;
        this.headerFill = 0;
        if (this.header[0] !== 0) throw new GrpcError(Status.UNIMPLEMENTED, "compressed messages are not supported (grpc-accept-encoding: identity)");
        const length = this.header.readUInt32BE(1);
        if (length > this.maxMessageBytes) throw this.tooLarge(length, this.maxMessageBytes);
        this.message = takeBuffer(length).subarray(0, length);
        this.messageFill = 0;
      }
      const n = Math.min(this.message.length - this.messageFill, chunk.length - at);
      chunk.copy(this.message, this.messageFill, at, (at += n));
      this.messageFill += n;
      if (this.messageFill < this.message.length) return messages;
      messages.push(this.message);
      this.message = undefined;
    }
    return messages;
  }

  /** Whether a message was cut off by the end of the stream. */
  get hasPartialMessage(): boolean {
    return this.headerFill > 0 || this.message !== undefined;
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

const RESPONSE_FIELDS: [string, string][] = [[":status", "200"], ["content-type", "application/grpc"], ["grpc-accept-encoding", "identity"]];
/** The response headers of every call, encoded once. */
export const RESPONSE_HEADERS = encodeHeaders(RESPONSE_FIELDS);
const OK_TRAILERS = encodeHeaders([["grpc-status", "0"]]);

/**
 * Ends a call with a status: trailers-only when nothing was sent yet, trailers otherwise. Safe to
 * call on a stream that is already closed.
 */
export function endWithStatus(stream: H2Stream, code: number, message: string): void {
  if (stream.closed) return;
  const status: [string, string][] = [["grpc-status", String(code)]];
  if (message) status.push(["grpc-message", encodeGrpcMessage(message)]);
  // Trailers-only resets a tenant still sending (h2.ts). Not after trailers: Node's client
  // (grpc-js) loses trailers a reset follows at once.
  if (!stream.headersSent) return stream.respond(encodeHeaders([...RESPONSE_FIELDS, ...status]), true);
  stream.end(undefined, encodeHeaders(status));
}

/** Answers a unary call with one message and status OK. */
export function sendUnary(stream: H2Stream, framed: Buffer): void {
  if (stream.closed) return;
  stream.respond(RESPONSE_HEADERS);
  writeFrame(stream, framed);
  stream.end(undefined, OK_TRAILERS);
}

/** Writes a frame; its buffer goes back to the pool once it went out (false: it waits for a window). */
export function writeFrame(stream: H2Stream, framed: Buffer): boolean {
  return stream.write(framed, true);
}

// grpc-timeout: 1 to 8 digits and a unit (PROTOCOL-HTTP2.md). Forwarded as it came when valid.
const GRPC_TIMEOUT = /^\d{1,8}[HMSmun]$/;

export function validTimeout(value: unknown): string | undefined {
  return typeof value === "string" && GRPC_TIMEOUT.test(value) ? value : undefined;
}
